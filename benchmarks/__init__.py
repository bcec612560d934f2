"""Micro-benchmarks for pipecat-warm-transfer (run with `python -m benchmarks.run`)."""
