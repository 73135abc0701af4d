"""OpenTelemetry spans for executions, task runs and attempts, when the `otel` extra is installed.

`Tracing` wraps one tracer: spans are started and ended explicitly (an execution's span lives for
many actor messages, so no context manager fits), and a span's W3C trace context travels as a
`Carrier` (`traceparent`/`tracestate`), in `ActionRun.trace` in-process and in the headers of the
NATS dispatch message, so a worker's attempt span is a child of the engine's task span.

Off costs nothing: `from_environment()` is decided once per process and returns None unless
OpenTelemetry is importable and the standard variables ask for traces (`OTEL_TRACES_EXPORTER`
other than `none`, or an `OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT`; `OTEL_SDK_DISABLED=true` wins).
Then the engine and workers hold `None` and every hook is one `is None` test. An application
that set its own SDK tracer provider globally, or passes one to `Engine(tracer_provider=...)`,
gets its spans there.

Exporters are the SDK's entry points (`opentelemetry_traces_exporter`): `console` prints each span
as JSON on stdout, as the SDK's `ConsoleSpanExporter` does; `otlp` needs
`opentelemetry-exporter-otlp`. Service name and resource come from `OTEL_SERVICE_NAME` and
`OTEL_RESOURCE_ATTRIBUTES`, sampling from `OTEL_TRACES_SAMPLER`, batching from `OTEL_BSP_*`.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span, TracerProvider

log = logging.getLogger("attune_actors.tracing")

Carrier = dict[str, str]
TRACE_HEADERS = ("traceparent", "tracestate")
FAILED_STATUSES = frozenset({"failed", "timeout", "abandoned"})

_lock = threading.Lock()
_decided = False
_from_env: Tracing | None = None


class Tracing:
    """Starts and ends attune's spans on one tracer provider."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self._tracer = provider.get_tracer("attune_actors")
        self._propagator = TraceContextTextMapPropagator()

    def start(
        self,
        name: str,
        parent: Span | Carrier | None,
        attributes: dict[str, Any],
        start_time: float | None = None,
    ) -> Span:
        """A span started now (or at `start_time`, epoch seconds), child of `parent`."""
        from opentelemetry import trace

        if parent is None:
            context = None
        elif isinstance(parent, dict):
            context = self._propagator.extract(parent)
        else:
            context = trace.set_span_in_context(parent)
        return self._tracer.start_span(
            name,
            context=context,
            attributes={k: v for k, v in attributes.items() if v is not None},
            start_time=None if start_time is None else int(start_time * 1e9),
        )

    def end(self, span: Span, status: str | None, end_time: float | None = None, **attributes: Any) -> None:
        """End `span` with attune status `status` (failed, timeout, abandoned: an error)."""
        from opentelemetry.trace import Status, StatusCode

        if status is not None:
            span.set_attribute("attune.status", status)
            if status in FAILED_STATUSES:
                span.set_status(Status(StatusCode.ERROR, status))
            elif status == "succeeded":
                span.set_status(Status(StatusCode.OK))
        for key, value in attributes.items():
            if value is not None:
                span.set_attribute(key, value)
        span.end(None if end_time is None else int(end_time * 1e9))

    def carrier(self, span: Span) -> Carrier:
        """The W3C trace context of `span`, as headers."""
        from opentelemetry import trace

        carrier: Carrier = {}
        self._propagator.inject(carrier, context=trace.set_span_in_context(span))
        return carrier

    def flush(self) -> None:
        flush = getattr(self.provider, "force_flush", None)
        if flush is not None:
            flush()


def carrier_from_headers(headers: dict[str, str] | None) -> Carrier | None:
    """The trace context a NATS message carries, if any."""
    if not headers or "traceparent" not in headers:
        return None
    return {k: headers[k] for k in TRACE_HEADERS if k in headers}


def resolve(provider: TracerProvider | None = None) -> Tracing | None:
    """Tracing on `provider`, else on the process's configuration (`from_environment`), else on a
    global SDK provider an application installed; None when none of them is there."""
    if provider is not None:
        return Tracing(provider)
    tracing = from_environment()
    if tracing is not None:
        return tracing
    return _global()


def from_environment() -> Tracing | None:
    """Tracing as the OTEL_* variables configure it; decided once per process."""
    global _decided, _from_env
    if _decided:
        return _from_env
    with _lock:
        if not _decided:
            _from_env = _configure(os.environ)
            _decided = True
    return _from_env


def _wanted(environ: os._Environ[str] | dict[str, str]) -> list[str]:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names and (environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                      or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        names = ["otlp"]
    return [] if names == ["none"] else [n for n in names if n != "none"]


def _configure(environ: os._Environ[str] | dict[str, str]) -> Tracing | None:
    names = _wanted(environ)
    if not names:
        return None
    try:
        from importlib.metadata import entry_points

        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_TRACES_EXPORTER is set but OpenTelemetry is not installed "
                    "(pip install 'attune-actors[otel]'): no traces")
        return None
    resource = Resource.create({} if environ.get("OTEL_SERVICE_NAME") else {"service.name": "attune-actors"})
    provider = SdkProvider(resource=resource)
    found = {ep.name: ep for ep in entry_points(group="opentelemetry_traces_exporter")}
    for name in names:
        ep = found.get(name)
        if ep is None:
            log.warning("OTEL_TRACES_EXPORTER names %r, which is not installed (have: %s)",
                        name, ", ".join(sorted(found)) or "none")
            continue
        provider.add_span_processor(BatchSpanProcessor(ep.load()()))
    # The actions' own instrumentation (httpx, ...) joins the same traces.
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    return Tracing(provider)  # the SDK flushes it at exit


def _global() -> Tracing | None:
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return Tracing(provider)


def reset_for_tests() -> None:
    """Forget the decision `from_environment` took (tests that change OTEL_* variables)."""
    global _decided, _from_env
    with _lock:
        _decided, _from_env = False, None


__all__ = ["TRACE_HEADERS", "Carrier", "Tracing", "carrier_from_headers", "from_environment", "resolve"]
