"""Benchmarks against peers, side by side (issue #8): attune_actors, Orquesta and Prefect.

    make bench-peers                                   # full run (~10 min), plots in docs/perf/img
    make bench-peers QUICK=1                           # smoke run (< 1 min)
    .venv-bench/bin/python -m bench.peers --help       # everything else

`run.py` is the runner, `worker.py` runs one system in its own process, `sys_*.py` adapt each
system to the shapes in `shapes.py`, `orquesta_shim.py` lets Orquesta 1.2.0 run on Python 3.11,
`plots.py` draws the PNGs. docs/perf/peers.md has the method and the figures.
"""
