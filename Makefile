# Two commands do all the set-up on a fresh machine with Python 3.11+:
#   make demo   runs the example deploy workflow on the embedded engine, with progress
#   make test   runs the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/attune-actors validate packs
	$(BIN)/attune-actors run examples.deploy -p app_name=shop -p latency=0.3 --data-dir .attune

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check attune_actors tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Benchmarks against peers (issue #8, docs/perf/peers.md): attune_actors vs Orquesta and Prefect,
# in their own venv so the peers never touch .venv. `make bench-peers QUICK=1` is the < 1 min
# smoke run. Orquesta 1.2.0 goes in with --no-deps: it pins jsonschema<3, which cannot coexist
# with ours; the `bench` extra carries its other needs (networkx 1.11, yaql, ...) and
# bench/peers/orquesta_shim.py makes it import on Python 3.11.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet -e '.[bench]'
	$(BENCH_VENV)/bin/pip install --quiet --no-deps 'orquesta==1.2.0'
	touch $(BENCH_STAMP)

.PHONY: bench-peers
bench-peers: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python -m bench.peers $(if $(QUICK),--quick) $(BENCH_PEERS_ARGS)
