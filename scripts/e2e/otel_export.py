#!/usr/bin/env python3
"""Export GenAI-shaped traces with the REAL OpenTelemetry Python SDK to an OTLP endpoint.

Run with the e2e venv's python (scripts/e2e/setup-venv.sh; opentelemetry-sdk 1.45.1 and the
OTLP exporters are pinned in constraints.txt):

    python scripts/e2e/otel_export.py --protocol http/protobuf --endpoint http://127.0.0.1:4318 \
        --iterations 3 --out /tmp/report.json

Protocols:

* ``http/protobuf``: ``opentelemetry.exporter.otlp.proto.http.trace_exporter.OTLPSpanExporter``
  posting to ``<endpoint>/v1/traces``.
* ``grpc``: ``opentelemetry.exporter.otlp.proto.grpc.trace_exporter.OTLPSpanExporter`` with
  ``insecure=True`` to ``<endpoint>`` (``http://127.0.0.1:PORT``).
* ``http/json``: the installed venv has NO real OTLP/JSON span exporter (checked: nothing under
  ``opentelemetry/exporter`` implements JSON; ``opentelemetry-exporter-otlp-common`` 0.66b1 only
  has retry/HTTP helpers and ``opentelemetry-exporter-http-transport`` 0.66b1 only transports).
  So this script takes the fallback path: ``OtlpJsonSpanExporter`` below encodes the spans with the
  SDK's own ``opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans`` (the same
  protobuf the real exporters send), converts it to OTLP/JSON as the OTLP spec says (lowerCamelCase
  field names, enums as integers, ``traceId``/``spanId``/``parentSpanId`` as lowercase hex, not
  base64; int64 as strings) and POSTs it to ``<endpoint>/v1/traces`` with
  ``Content-Type: application/json`` via urllib.

Per iteration i the script makes the span tree GenAI instrumentation makes:

    invoke_agent travel-agent      root; gen_ai.operation.name=invoke_agent, session.id=session-<i>
    |- chat gpt-4o-mini            CLIENT; model, provider, usage 11/16, input/output messages
    '- execute_tool get_weather    on iteration 0 raises ValueError("weather service down"): the
                                   SDK records an `exception` event and sets status ERROR

Every export call's ``SpanExportResult`` is recorded. The report (``--out``, JSON):

    {"protocol": ..., "endpoint": ..., "service_name": "otel-e2e", "service_instance_id": <uuid>,
     "iterations": N, "input_messages": [...], "output_messages": [...],
     "spans": [{"trace_id": hex, "span_id": hex, "parent_span_id": hex|null, "name": ...,
                "kind": <OTLP int>, "start_time_unix_nano": int, "end_time_unix_nano": int,
                "status": "UNSET"|"OK"|"ERROR", "status_description": str|null,
                "session_id": str|null, "iteration": i, "attributes": {...}, "events": [names]}],
     "export_results": ["SUCCESS", ...], "flush_ok": bool, "error": null|str}

Exit status: 0 when every export succeeded (and there was at least one); 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import threading
import traceback
import urllib.error
import urllib.request
import uuid
from typing import Any, Sequence

# Nothing in the host environment may redirect or reconfigure the export.
for _var in list(os.environ):
    if _var.upper().startswith("OTEL_") or _var.lower() in (
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "grpc_proxy",
    ):
        del os.environ[_var]
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import (  # noqa: E402
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind  # noqa: E402

PROTOCOLS = ("http/protobuf", "http/json", "grpc")

INPUT_MESSAGES = [
    {"role": "system", "parts": [{"type": "text", "content": "You are a travel agent."}]},
    {"role": "user", "parts": [{"type": "text", "content": "What is the weather in Paris?"}]},
]
OUTPUT_MESSAGES = [
    {
        "role": "assistant",
        "parts": [
            {
                "type": "tool_call",
                "id": "call_1",
                "name": "get_weather",
                "arguments": {"city": "Paris"},
            },
            {"type": "text", "content": "Let me check the weather in Paris."},
        ],
        "finish_reason": "tool_call",
    }
]


# --------------------------------------------------------------------------------------------
# OTLP/JSON exporter (fallback: no real one is installed, see the module docstring)
# --------------------------------------------------------------------------------------------

_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(node: Any) -> Any:
    """Rewrites the base64 ids `MessageToDict` produced as lowercase hex (OTLP/JSON rule)."""
    if isinstance(node, dict):
        for key, value in list(node.items()):
            if key in _ID_FIELDS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _hex_ids(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids(item)
    return node


def otlp_json_body(spans: Sequence[ReadableSpan]) -> bytes:
    from google.protobuf.json_format import MessageToDict

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    message = encode_spans(spans)
    as_dict = MessageToDict(
        message,
        preserving_proto_field_name=False,  # lowerCamelCase
        use_integers_for_enums=True,  # kind, status.code as integers
    )
    return json.dumps(_hex_ids(as_dict), separators=(",", ":")).encode("utf-8")


class OtlpJsonSpanExporter(SpanExporter):
    """POSTs OTLP/JSON `ExportTraceServiceRequest`s to `<endpoint>/v1/traces` (urllib)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self._url = url
        self._timeout = timeout
        self.last_error: str | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        body = otlp_json_body(spans)
        request = urllib.request.Request(
            self._url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=self._timeout) as response:
                answer = response.read()
                if 200 <= response.status < 300:
                    # A partial success (rejected spans) is a failure for this test.
                    parsed = json.loads(answer or b"{}")
                    partial = parsed.get("partialSuccess") or {}
                    if int(partial.get("rejectedSpans", 0) or 0) > 0:
                        self.last_error = f"partial success: {parsed}"
                        return SpanExportResult.FAILURE
                    return SpanExportResult.SUCCESS
                self.last_error = f"HTTP {response.status}: {answer[:500]!r}"
        except urllib.error.HTTPError as e:
            self.last_error = f"HTTP {e.code}: {e.read()[:500]!r}"
        except Exception as e:  # noqa: BLE001 - reported, not raised
            self.last_error = f"{type(e).__name__}: {e}"
        print(f"otel_export: OTLP/JSON export failed: {self.last_error}", file=sys.stderr)
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# --------------------------------------------------------------------------------------------
# Recording wrapper
# --------------------------------------------------------------------------------------------


class RecordingExporter(SpanExporter):
    """Delegates to the real exporter and records the result of every export call."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.results: list[str] = []
        self.exported_spans = 0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            result = SpanExportResult.FAILURE
        with self._lock:
            self.results.append(result.name)
            self.exported_spans += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def make_exporter(protocol: str, endpoint: str) -> SpanExporter:
    endpoint = endpoint.rstrip("/")
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=10)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=10)
    if protocol == "http/json":
        return OtlpJsonSpanExporter(f"{endpoint}/v1/traces")
    raise ValueError(f"unknown protocol {protocol!r}")


# --------------------------------------------------------------------------------------------
# The traces
# --------------------------------------------------------------------------------------------


def run_iteration(tracer: trace.Tracer, i: int) -> int:
    """Makes iteration i's trace; returns its trace id."""
    with tracer.start_as_current_span(
        "invoke_agent travel-agent",
        kind=SpanKind.INTERNAL,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "travel-agent",
            "session.id": f"session-{i}",
        },
    ) as root:
        with tracer.start_as_current_span(
            "chat gpt-4o-mini",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.provider.name": "openai",
                "gen_ai.usage.input_tokens": 11,
                "gen_ai.usage.output_tokens": 16,
                "gen_ai.input.messages": json.dumps(INPUT_MESSAGES),
                "gen_ai.output.messages": json.dumps(OUTPUT_MESSAGES),
            },
        ):
            pass
        try:
            with tracer.start_as_current_span(
                "execute_tool get_weather",
                kind=SpanKind.INTERNAL,
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "get_weather",
                },
            ):
                if i == 0:
                    # start_as_current_span records the exception (event `exception` with
                    # exception.type/.message/.stacktrace) and sets status ERROR.
                    raise ValueError("weather service down")
        except ValueError:
            pass  # the agent handles the tool failure; the root span stays UNSET
    return root.get_span_context().trace_id


def span_report(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    parent = span.parent
    attrs = dict(span.attributes or {})
    session = attrs.get("session.id")
    return {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": format(parent.span_id, "016x") if parent is not None else None,
        "name": span.name,
        "kind": span.kind.value + 1,  # OTLP numbering (SDK INTERNAL=0 is OTLP 1)
        "start_time_unix_nano": span.start_time,
        "end_time_unix_nano": span.end_time,
        "status": span.status.status_code.name,
        "status_description": span.status.description,
        "session_id": session,
        "attributes": {k: (list(v) if isinstance(v, tuple) else v) for k, v in attrs.items()},
        "events": [e.name for e in span.events],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", required=True, choices=PROTOCOLS)
    parser.add_argument("--endpoint", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--out", required=True, help="JSON report file")
    parser.add_argument("--processor", choices=("batch", "simple"), default="batch")
    args = parser.parse_args()

    instance_id = str(uuid.uuid4())
    resource = Resource.create({"service.name": "otel-e2e", "service.instance.id": instance_id})
    provider = TracerProvider(resource=resource)
    recording = RecordingExporter(make_exporter(args.protocol, args.endpoint))
    if args.processor == "batch":
        provider.add_span_processor(BatchSpanProcessor(recording, schedule_delay_millis=200))
    else:
        provider.add_span_processor(SimpleSpanProcessor(recording))
    finished = InMemorySpanExporter()  # every span that ended, whatever the export did
    provider.add_span_processor(SimpleSpanProcessor(finished))
    tracer = provider.get_tracer("dynamiq-sidecar-e2e", "1.0.0")

    error: str | None = None
    flush_ok = False
    iteration_of_trace: dict[int, int] = {}
    try:
        for i in range(args.iterations):
            iteration_of_trace[run_iteration(tracer, i)] = i
        flush_ok = provider.force_flush(30_000)
    except Exception as e:  # noqa: BLE001
        error = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    finally:
        provider.shutdown()

    spans = []
    for span in finished.get_finished_spans():
        entry = span_report(span)
        entry["iteration"] = iteration_of_trace.get(span.get_span_context().trace_id)
        spans.append(entry)

    results = list(recording.results)
    ok = (
        error is None
        and flush_ok
        and bool(results)
        and all(r == "SUCCESS" for r in results)
        and recording.exported_spans == len(spans)
    )
    if not ok and error is None:
        error = (
            f"export failed: flush_ok={flush_ok}, results={results}, "
            f"exported {recording.exported_spans} of {len(spans)} spans"
        )
        last = getattr(recording.inner, "last_error", None)
        if last:
            error += f", last error: {last}"
    report = {
        "protocol": args.protocol,
        "endpoint": args.endpoint,
        "service_name": "otel-e2e",
        "service_instance_id": instance_id,
        "iterations": args.iterations,
        "input_messages": INPUT_MESSAGES,
        "output_messages": OUTPUT_MESSAGES,
        "spans": spans,
        "export_results": results,
        "flush_ok": flush_ok,
        "error": error,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(
        json.dumps(
            {
                "protocol": args.protocol,
                "spans": len(spans),
                "export_results": results,
                "ok": ok,
                "error": error,
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
