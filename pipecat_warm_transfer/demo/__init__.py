#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The offline demo: a whole warm transfer with real (synthetic) voices, no network.

- `espeak_tts`: `EspeakTTSService`, an offline Pipecat TTS on eSpeak NG (from the
  `espeakng-loader` wheel), and `synthesize()` for pre-rendering scripted lines.
- `timeline`: `draw_timeline()`, a PNG of what the caller and the human heard, with the
  hold music, the transfer states and the timeline events.

Needs the `demo` extra: `pip install 'pipecat-warm-transfer[demo]'`.
"""
