#!/usr/bin/env python3
"""A stand-in Dynamiq collector on loopback (stdlib only).

`POST /v1/traces` with a JSON body `{"runs": [...]}` is answered, after `--delay-ms`, with
`200 {"message":"ok","accepted":N}` (N = number of runs). A body that is not such JSON gets 400,
a missing `Authorization: Bearer ...` gets 401 (unless `--no-auth`). `GET /healthz` answers 200.

With `--record FILE` every request is appended to FILE as a JSON line
`{"t": <unix time>, "path", "authorization", "content_encoding", "body_raw", "status"}`.

The first line on stdout is the base URL (`http://127.0.0.1:PORT`); then it serves until
SIGTERM/SIGINT (or `--max-seconds`), and prints a one-line JSON summary on exit.

Used as: the collector behind the sidecar, and the collector the SDK talks to directly, in
`bench_flush.sh`; also as a stand-in for the sidecar when validating `sdk_workflows.py`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Collector(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, addr, delay_s: float, require_auth: bool, record_path: str | None):
        super().__init__(addr, Handler)
        self.delay_s = delay_s
        self.require_auth = require_auth
        self.lock = threading.Lock()
        self.requests = 0
        self.runs = 0
        self.record = open(record_path, "a", encoding="utf-8") if record_path else None  # noqa: SIM115


class Handler(BaseHTTPRequestHandler):
    server_version = "e2e-collector/1"
    protocol_version = "HTTP/1.1"
    server: Collector

    def log_message(self, fmt, *args):
        pass

    def _answer(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        if self.path == "/healthz":
            self._answer(200, {"status": "ok"})
        else:
            self._answer(404, {"message": "not found"})

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.split("?", 1)[0] != "/v1/traces":
            self._answer(404, {"message": "not found"})
            return
        status, payload, runs = 200, None, 0
        auth = self.headers.get("Authorization")
        body = raw
        try:
            if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
                body = gzip.decompress(raw)
            parsed = json.loads(body)
            if not isinstance(parsed, dict) or not isinstance(parsed.get("runs"), list):
                raise ValueError("no runs array")
            runs = len(parsed["runs"])
        except (ValueError, OSError) as exc:
            status, payload = 400, {"message": f"invalid body: {exc}"}
        if status == 200 and self.server.require_auth and not (auth or "").startswith("Bearer "):
            status, payload = 401, {"message": "missing bearer token"}
        if status == 200:
            if self.server.delay_s > 0:
                time.sleep(self.server.delay_s)
            payload = {"message": "ok", "accepted": runs}
        with self.server.lock:
            self.server.requests += 1
            if status == 200:
                self.server.runs += runs
            if self.server.record:
                line = {
                    "t": time.time(),
                    "path": self.path,
                    "authorization": auth,
                    "content_encoding": self.headers.get("Content-Encoding"),
                    "body_raw": body.decode("utf-8", "replace"),
                    "status": status,
                }
                self.server.record.write(json.dumps(line) + "\n")
                self.server.record.flush()
        self._answer(status, payload)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=80.0, help="answer POST /v1/traces after this long")
    parser.add_argument("--no-auth", action="store_true", help="accept requests without Authorization")
    parser.add_argument("--record", help="append every request to this JSON-lines file")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="stop by itself after this long")
    args = parser.parse_args()

    server = Collector((args.host, args.port), args.delay_ms / 1000.0, not args.no_auth, args.record)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    print(f"http://{host}:{port}", flush=True)
    stop.wait(args.max_seconds)
    server.shutdown()
    server.server_close()
    if server.record:
        server.record.close()
    print(json.dumps({"requests": server.requests, "runs": server.runs}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
