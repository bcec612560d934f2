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

# The long reliability profile: 10,000 randomized calls (about 95 min on 2 cores; their
# totals in benchmarks/results/fuzz.json), then the soak (about 22 min).
FUZZ_RUNS ?= 10000
soak: $(VENV)/.test-installed
	WT_FUZZ_RUNS=$(FUZZ_RUNS) WT_FUZZ_SUMMARY=benchmarks/results/fuzz.json \
		$(BIN)/python -m pytest -q -rf -n 16 -p no:cacheprovider tests/test_fault_injection.py
	$(BIN)/python -m pipecat_warm_transfer.testing.soak --sequential 1000 --concurrent 100

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
