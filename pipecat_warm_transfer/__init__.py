#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Warm transfer from a Pipecat voice bot to a human over LiveKit SIP."""

from pipecat_warm_transfer.audio import HoldMusicError, HoldMusicMixer

__version__ = "0.1.0"

__all__ = ["HoldMusicError", "HoldMusicMixer", "__version__"]
