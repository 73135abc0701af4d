"""What an operator sees of engines and workers besides the event stream (docs/observability.md).

- `metrics`: Prometheus series, one registry per engine or worker, counted cheaply on the hot path
  and turned into metric families at scrape time; `serve_metrics` serves one over HTTP.
- `tracing`: OpenTelemetry spans (execution, task run, attempt) when the `otel` extra is installed
  and configured; nothing at all otherwise.
- `jsonlog`: the `logging.format: json` formatter.

The engine's hooks live in `engine/observer.py`; this package knows nothing of the engine.
"""
