"""A real OTLP/HTTP receiver for the end-to-end tests: decodes every POST /v1/traces body with
the OpenTelemetry Python proto package (opentelemetry-proto, in the e2e venv) and appends one JSON
line per span to --out: ids as hex, kind, status, attributes as plain values, event names.

    python otlp_sink.py --port 4318 --out spans.jsonl

Answers 200 with an empty ExportTraceServiceResponse, or 400 when the body does not decode.
"""

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

LOCK = threading.Lock()


def plain(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [plain(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: plain(kv.value) for kv in any_value.kvlist_value.values}
    if kind == "bytes_value":
        return any_value.bytes_value.hex()
    return getattr(any_value, kind) if kind else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            request = ExportTraceServiceRequest()
            try:
                request.ParseFromString(body)
            except Exception as e:  # noqa: BLE001 - any decode failure is a 400
                self.send_response(400)
                self.end_headers()
                self.wfile.write(str(e).encode())
                return
            lines = []
            for rs in request.resource_spans:
                resource = {kv.key: plain(kv.value) for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        lines.append(
                            {
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_span_id": span.parent_span_id.hex() or None,
                                "name": span.name,
                                "kind": span.kind,
                                "start": span.start_time_unix_nano,
                                "end": span.end_time_unix_nano,
                                "status": MessageToDict(span.status),
                                "attributes": {kv.key: plain(kv.value) for kv in span.attributes},
                                "events": [e.name for e in span.events],
                                "resource": resource,
                                "scope": ss.scope.name,
                            }
                        )
            with LOCK, open(args.out, "a", encoding="utf-8") as f:
                for line in lines:
                    f.write(json.dumps(line) + "\n")
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"otlp sink on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
