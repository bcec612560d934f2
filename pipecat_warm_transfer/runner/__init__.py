#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Running a bot declared in YAML.

- `builder`: `build_bot()` builds one call's bot (`BotCall`: pipeline, worker, warm
  transfer, flow) on any transport and transfer backend; `run_call()` runs it.
- `livekit_serving`: `run_livekit()`, the `run` command: serves the calls LiveKit's agent
  dispatch sends this process (or one room); `livekit_room_call()` builds a call that
  joins with a token minted elsewhere.
- `agent_worker`: `AgentWorker`, the process's registration with LiveKit's agent dispatch
  (load reports, declines when full, drain, reconnect).
- `dispatch_serving`: `serve_dispatch()`, the worker with health endpoints (`health`) and
  the SIGTERM drain; `dispatch_rule`: the SIP dispatch rule that names the agent.
- `pipecat_runner`: `bot(runner_args)`, the entry for Pipecat's runner and Pipecat
  Cloud-style hosts.
"""
