#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The drivers of this project's own test campaigns, apart from the offline world.

- `call_harness`: `CallHarness`, one whole offline call with a fixed bot pipeline and
  leak accounting (tests, the demo and the benchmarks drive transfers through it).
- `fault_injection`: the randomized fault suite (`tests/test_fault_injection.py`).
- `group_checks`: a ring-group call's own invariants (no phone left ringing, one human
  with the caller, the others stopped within 1 s; `tests/test_ring_group_faults.py`).
- `refer_checks`: which calls connect by SIP REFER, and the REFER's invariants
  (`tests/test_refer_faults.py`).
- `soak`: many transfers in one process, memory and fds checked (`make soak`).
- `listening`, `speech_finder`, `music_finder`: what the fault suite and the tests hear in
  a recording (dead air, the scripted voice's sentences, the hold music's loop).

To test your own bot, use the world in `pipecat_warm_transfer.testing` and its pytest
fixtures (`pipecat_warm_transfer.testing.pytest_plugin`).
"""
