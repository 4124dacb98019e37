#!/usr/bin/env python3
"""A tiny OpenAI-compatible chat-completions stub on loopback (stdlib only).

Answers `POST <prefix>/chat/completions` (any prefix, e.g. `/v1/chat/completions`) with a valid
non-streaming `chat.completion` object including `usage`, and `GET <prefix>/models` with a model
list. Every request is recorded (method, path, headers, parsed JSON body) so callers can check
that the LLM traffic really went here.

Use it in-process:

    stub = OpenAIStub.start()          # binds 127.0.0.1:0
    stub.base_url                      # "http://127.0.0.1:PORT/v1"
    stub.requests                      # list of recorded requests
    stub.stop()

or as a program: `python3 openai_stub.py [--port 0]` prints the base URL on its first stdout line
and serves until killed.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_REPLY = "Paris is the capital of France."


def _count_tokens(text: str) -> int:
    # A deterministic stand-in for a tokenizer: whitespace-separated words.
    return max(1, len(text.split()))


def _prompt_text(body: dict) -> str:
    parts = []
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return "\n".join(parts)


def chat_completion(body: dict, reply: str) -> dict:
    prompt_tokens = _count_tokens(_prompt_text(body))
    completion_tokens = _count_tokens(reply)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or "gpt-4o-mini",
        "system_fingerprint": "fp_e2e_stub",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class _Handler(BaseHTTPRequestHandler):
    server_version = "openai-stub/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # keep test output clean
        pass

    def _send_json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self, body) -> None:
        stub: OpenAIStub = self.server.stub  # type: ignore[attr-defined]
        with stub.lock:
            stub.requests.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body,
                }
            )

    def do_GET(self):  # noqa: N802
        self._record(None)
        if self.path.rstrip("/").endswith("/models"):
            self._send_json(
                200,
                {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "owned_by": "e2e"}]},
            )
        else:
            self._send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._record(raw.decode("utf-8", "replace"))
            self._send_json(400, {"error": {"message": "invalid JSON", "type": "invalid_request_error"}})
            return
        self._record(body)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
            return
        if body.get("stream"):
            self._send_json(400, {"error": {"message": "streaming not supported by stub", "type": "e2e"}})
            return
        stub: OpenAIStub = self.server.stub  # type: ignore[attr-defined]
        self._send_json(200, chat_completion(body, stub.reply))


class OpenAIStub:
    """An OpenAI-compatible stub served from a background thread."""

    def __init__(self, server: ThreadingHTTPServer, reply: str):
        self.server = server
        self.reply = reply
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server.stub = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=server.serve_forever, name="openai-stub", daemon=True)

    @classmethod
    def start(cls, host: str = "127.0.0.1", port: int = 0, reply: str = DEFAULT_REPLY) -> "OpenAIStub":
        server = ThreadingHTTPServer((host, port), _Handler)
        server.daemon_threads = True
        stub = cls(server, reply)
        stub._thread.start()
        return stub

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def completions(self) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"].rstrip("/").endswith("/chat/completions")]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reply", default=DEFAULT_REPLY)
    args = parser.parse_args()
    stub = OpenAIStub.start(args.host, args.port, args.reply)
    print(stub.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
