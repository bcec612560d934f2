#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Running a bot declared in YAML.

- `builder`: `build_bot()` builds one call's bot (`BotCall`: pipeline, worker, warm
  transfer, flow) on any transport and transfer backend; `run_call()` runs it.
- `livekit_serving`: `run_livekit()`, the `run` command, serves calls on a LiveKit
  deployment (one room, or every inbound SIP call) until SIGINT/SIGTERM.
"""
