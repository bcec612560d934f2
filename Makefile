# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT ?= demo-out

.PHONY: demo test soak lint format bench bench-quick mutate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[demo]"
	touch $@

$(VENV)/.test-installed: pyproject.toml tests/node_client/package-lock.json | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	# LiveKit's official Node SDK, a second client the emulator is checked with (when npm exists).
	if command -v npm >/dev/null 2>&1; then npm ci --no-audit --no-fund --prefix tests/node_client; fi
	touch $@ $(VENV)/.demo-installed

$(VENV)/.mutate-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[mutate]"
	touch $@

demo: $(VENV)/.demo-installed
	$(BIN)/pipecat-warm-transfer demo --scenario success --out $(OUT)/success

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest -q -n 4

# The long reliability profile: FUZZ_RUNS randomized calls from seed FUZZ_SEED, their
# totals and each failing seed in benchmarks/results/fuzz.json, then the soak (about
# 22 min). Each call runs in real time (about 10 s) on about 1.3 CPU-seconds, so 2 cores
# keep SOAK_WORKERS=6 calls going without starving them (16 starved them: a third of the
# calls stuttered); 10,000 calls take about 5 hours. Run it in parts with FUZZ_SEED.
FUZZ_RUNS ?= 10000
FUZZ_SEED ?= 20261124
SOAK_WORKERS ?= 6
# Both parts run even when a randomized call fails; the target fails if either did.
soak: $(VENV)/.test-installed
	status=0; \
	WT_FUZZ_RUNS=$(FUZZ_RUNS) WT_FUZZ_SEED=$(FUZZ_SEED) \
		WT_FUZZ_SUMMARY=benchmarks/results/fuzz.json $(BIN)/python -m pytest -q -rf \
		-n $(SOAK_WORKERS) -p no:cacheprovider tests/test_fault_injection.py || status=$$?; \
	$(BIN)/python -m pipecat_warm_transfer.testing.drivers.soak --sequential 1000 --concurrent 100 \
		|| status=$$?; \
	exit $$status

lint: $(VENV)/.test-installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(VENV)/.test-installed
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: $(VENV)/.test-installed
	$(BIN)/python -m benchmarks.run --profile full

bench-quick: $(VENV)/.test-installed
	$(BIN)/python -m benchmarks.run --profile quick

# Mutation testing of the core (about an hour on 2 cores; see mutation/README.md): the five
# named defects, then a seeded sample of MUTANTS cosmic-ray mutants. Writes
# mutation/last-report.md; the score is a report, not a gate.
MUTANTS ?= 60
SEED ?= 1
mutate: $(VENV)/.mutate-installed
	$(BIN)/python -m mutation.named
	$(BIN)/python -m mutation.run --mutants $(MUTANTS) --seed $(SEED)

clean:
	rm -rf $(VENV) demo-out .pytest_cache
