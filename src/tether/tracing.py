"""OpenTelemetry traces, when the standard `OTEL_*` variables ask for them: a span per execution of
a run (thread, run, user and agent as attributes), with pydantic-ai's own spans (model requests,
tool calls) beneath it.

Off unless `OTEL_TRACES_EXPORTER` (`otlp` or `console`) or an `OTEL_EXPORTER_OTLP_*ENDPOINT` is set.
The SDK is an optional extra (`pip install 'tether[otel]'`); asked for without it, the server says
so at start instead of tracing nothing.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import trace


class TracingUnavailable(RuntimeError):
    pass


def configure_tracing() -> Any | None:
    """A TracerProvider exporting as the environment says, or None when tracing is not asked for."""
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if exporter_name == "none" or not (exporter_name or endpoint):
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError as exc:
        raise TracingUnavailable(
            "OTEL_* variables ask for traces, but opentelemetry-sdk is not installed: pip install 'tether[otel]'"
        ) from exc
    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    elif exporter_name in ("", "otlp"):
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise TracingUnavailable(
                "OTEL_* variables ask for OTLP traces, but its exporter is not installed: pip install 'tether[otel]'"
            ) from exc
        exporter = OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_* itself
    else:
        raise TracingUnavailable(f"OTEL_TRACES_EXPORTER={exporter_name!r}: Tether knows otlp, console and none")
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "tether")}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def tracer_of(provider: Any | None) -> trace.Tracer:
    """Tether's tracer: a no-op one when tracing is off, so spans cost next to nothing."""
    return provider.get_tracer("tether") if provider is not None else trace.NoOpTracer()
