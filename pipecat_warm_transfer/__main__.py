"""`python -m pipecat_warm_transfer`: the same as the `pipecat-warm-transfer` command."""

from pipecat_warm_transfer.cli import main

raise SystemExit(main())
