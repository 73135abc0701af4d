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

# Benchmarks against peers (issue #8, docs/perf/peers.md): attune_actors vs Orquesta and Prefect.
# The peers live in their own venv, without attune_actors (Prefect 3.9 needs fastapi<0.151, we
# need >=0.165): the `peers` dependency group of pyproject.toml, then Orquesta 1.2.0 with --no-deps
# (it pins jsonschema<3; bench/peers/orquesta_shim.py makes it run on ours, on Python 3.11). The
# runner starts attune_actors' workers on .venv's python. `make bench-peers QUICK=1`: < 1 min.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade 'pip>=25.1'
	$(BENCH_VENV)/bin/pip install --quiet --group peers
	$(BENCH_VENV)/bin/pip install --quiet --no-deps 'orquesta==1.2.0'
	touch $(BENCH_STAMP)

.PHONY: bench-peers
bench-peers: $(STAMP) $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python -m bench.peers --attune-python $(BIN)/python $(if $(QUICK),--quick) $(BENCH_PEERS_ARGS)
