#!/usr/bin/env python3
"""Run REAL Dynamiq SDK workflows traced with `DynamiqTracingCallbackHandler`, and record every
flush the SDK makes, byte for byte.

The handler (dynamiq 0.69: `dynamiq.callbacks.DynamiqTracingCallbackHandler`) owns a
`dynamiq.clients.DynamiqTracingClient`; on every flush (end of a workflow run, or of a
parentless flow/node) it calls `client.trace(list(handler.runs.values()))`, which serialises
`{"runs": [...]}` with orjson and sends it with
`requests.post(urljoin(base_url, "/v1/traces"), data=..., timeout=60.0)` carrying
`Authorization: Bearer <access_key>`. The SDK swallows (logs) every send error, so this script
hooks the send itself to find out what happened:

* `requests.adapters.HTTPAdapter.send` is wrapped: it sees the `PreparedRequest` the SDK built
  (the exact body bytes, headers, URL) and the response status or the exception;
* `DynamiqTracingClient.trace` is wrapped to time what the SDK's caller waits for per flush
  (serialisation + HTTP round trip): `elapsed_ms`.

Both wrappers call the originals, so the traffic really goes to `--base-url`.

Every flush becomes one JSON line in `--out`:

    {"scenario": "python", "seq": 0, "url": ".../v1/traces", "authorization": "Bearer ...",
     "body": <parsed JSON>, "body_raw": "<the exact body, UTF-8>", "status": 200,
     "response": <parsed response JSON or text>, "elapsed_ms": 3.1, "send_ms": 2.7, "error": null}

A network guard refuses (and reports) any DNS lookup or connection that is not on loopback, so
nothing leaves the machine (litellm, for one, would fetch its model price map at import time:
`LITELLM_LOCAL_MODEL_COST_MAP=True` is set before the SDK is imported).

Exit status: 0 when every flush got a 2xx and every scenario's own checks passed; 1 otherwise;
2 on bad arguments. A one-line JSON summary goes to stdout (`--bench`: the benchmark result).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import statistics
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
SCENARIOS = ("python", "failure", "llm", "reused")

# --------------------------------------------------------------------------------------------
# Environment and network guard (installed before the SDK is imported)
# --------------------------------------------------------------------------------------------

_QUIET_ENV = {
    # litellm downloads model_prices_and_context_window.json at import time unless told not to.
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOG": "ERROR",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "ANONYMIZED_TELEMETRY": "False",
    "TOKENIZERS_PARALLELISM": "false",
    # The SDK reads these when a connection has no explicit value: never a real key or endpoint.
    "OPENAI_API_KEY": "sk-e2e-dummy",
    "OPENAI_URL": "http://127.0.0.1:9/v1",
}
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def prepare_environment() -> None:
    for key, value in _QUIET_ENV.items():
        os.environ[key] = value
    # No proxy may sit between the SDK and loopback; DYNAMIQ_* env must not redirect the client.
    for key in _PROXY_VARS:
        os.environ.pop(key, None)
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,::1"
    for key in ("DYNAMIQ_ACCESS_KEY", "DYNAMIQ_SERVICE_TOKEN", "DYNAMIQ_BASE_URL"):
        os.environ.pop(key, None)


def _is_loopback_host(host: Any) -> bool:
    if host is None:
        return True  # getaddrinfo(None, port): the local host, passive
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").split("%", 1)[0]
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class NetworkGuard:
    """Refuses every DNS lookup and socket connection that is not on loopback, and records it."""

    def __init__(self) -> None:
        self.blocked: list[str] = []
        self._lock = threading.Lock()

    def _refuse(self, what: str) -> None:
        with self._lock:
            self.blocked.append(what)
        print(f"[e2e] network guard: refused {what}", file=sys.stderr)

    def install(self) -> "NetworkGuard":
        guard = self
        orig_getaddrinfo = socket.getaddrinfo
        orig_connect = socket.socket.connect
        orig_connect_ex = socket.socket.connect_ex
        orig_sendto = socket.socket.sendto

        def getaddrinfo(host, *args, **kwargs):
            if not _is_loopback_host(host):
                guard._refuse(f"DNS lookup of {host!r}")
                raise socket.gaierror(socket.EAI_NONAME, f"e2e network guard: {host!r} is not loopback")
            return orig_getaddrinfo(host, *args, **kwargs)

        def check(sock, address) -> None:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback_host(address[0]):
                guard._refuse(f"connection to {address!r}")
                raise ConnectionRefusedError(f"e2e network guard: {address!r} is not loopback")

        def connect(sock, address):
            check(sock, address)
            return orig_connect(sock, address)

        def connect_ex(sock, address):
            check(sock, address)
            return orig_connect_ex(sock, address)

        def sendto(sock, data, *args):
            address = args[-1]
            check(sock, address)
            return orig_sendto(sock, data, *args)

        socket.getaddrinfo = getaddrinfo
        socket.socket.connect = connect
        socket.socket.connect_ex = connect_ex
        socket.socket.sendto = sendto
        return self


# --------------------------------------------------------------------------------------------
# Flush recorder
# --------------------------------------------------------------------------------------------


def _parse_json(raw: bytes | str | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


class FlushRecorder:
    """Wraps the SDK's send path and records one entry per flush (see the module doc)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.flushes: list[dict] = []
        self.scenario = "-"
        self._lock = threading.Lock()
        self._local = threading.local()
        self._out = None

    def open(self, path: str | None) -> None:
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._out = open(path, "w", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        if self._out:
            self._out.close()

    def _is_trace_request(self, url: str) -> bool:
        return urlsplit(url).path.rstrip("/").endswith("/v1/traces")

    def install(self) -> "FlushRecorder":
        import requests.adapters
        from dynamiq.clients import dynamiq as dynamiq_client

        recorder = self
        orig_send = requests.adapters.HTTPAdapter.send
        orig_trace = dynamiq_client.DynamiqTracingClient.trace

        def send(adapter, request, *args, **kwargs):
            if not recorder._is_trace_request(request.url):
                return orig_send(adapter, request, *args, **kwargs)
            entry = getattr(recorder._local, "entry", None)
            standalone = entry is None
            if standalone:  # a send outside trace() (should not happen in sync code)
                entry = recorder._new_entry()
            body = request.body
            if isinstance(body, str):
                body = body.encode("utf-8")
            entry["requests"] += 1
            if entry["body_raw"] is None:
                entry["body_raw"] = body
                entry["url"] = request.url
                entry["authorization"] = request.headers.get("Authorization")
                entry["content_type"] = request.headers.get("Content-Type")
            started = time.perf_counter()
            try:
                response = orig_send(adapter, request, *args, **kwargs)
            except BaseException as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"
                raise
            finally:
                entry["send_ms"] += (time.perf_counter() - started) * 1000.0
                if standalone:
                    recorder._finish(entry, 0.0)
            entry["status"] = response.status_code
            entry["response"] = _parse_json(response.content)
            return response

        def trace(client, runs, *args, **kwargs):
            if not runs:
                return orig_trace(client, runs, *args, **kwargs)
            entry = recorder._new_entry()
            recorder._local.entry = entry
            started = time.perf_counter()
            try:
                return orig_trace(client, runs, *args, **kwargs)
            finally:
                elapsed = (time.perf_counter() - started) * 1000.0
                recorder._local.entry = None
                recorder._finish(entry, elapsed)

        requests.adapters.HTTPAdapter.send = send
        dynamiq_client.DynamiqTracingClient.trace = trace
        return self

    def _new_entry(self) -> dict:
        return {
            "scenario": self.scenario,
            "url": None,
            "authorization": None,
            "content_type": None,
            "body_raw": None,
            "status": None,
            "response": None,
            "error": None,
            "requests": 0,
            "send_ms": 0.0,
        }

    def _finish(self, entry: dict, elapsed_ms: float) -> None:
        raw: bytes | None = entry.pop("body_raw")
        if raw is None and entry["error"] is None:
            entry["error"] = "the SDK made no HTTP request for this flush (serialisation failed?)"
        record = {
            "scenario": entry["scenario"],
            "seq": None,
            "url": entry["url"],
            "authorization": entry["authorization"],
            "content_type": entry["content_type"],
            "body": _parse_json(raw),
            "body_raw": raw.decode("utf-8") if raw is not None else None,
            "body_bytes": len(raw) if raw is not None else 0,
            "status": entry["status"],
            "response": entry["response"],
            "elapsed_ms": round(elapsed_ms, 3),
            "send_ms": round(entry["send_ms"], 3),
            "requests": entry["requests"],
            "error": entry["error"],
        }
        with self._lock:
            record["seq"] = len(self.flushes)
            self.flushes.append(record)
            if self._out:
                self._out.write(json.dumps(record, separators=(",", ":")) + "\n")
                self._out.flush()

    def mark(self) -> int:
        with self._lock:
            return len(self.flushes)

    def since(self, mark: int) -> list[dict]:
        with self._lock:
            return self.flushes[mark:]


def flush_ok(flush: dict) -> bool:
    return flush["error"] is None and flush["status"] is not None and 200 <= flush["status"] < 300


# --------------------------------------------------------------------------------------------
# Workflows
# --------------------------------------------------------------------------------------------


class Checks:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def expect(self, condition: bool, message: str) -> None:
        if not condition:
            self.failures.append(message)
            print(f"[e2e] CHECK FAILED: {message}", file=sys.stderr)


class Sdk:
    """Lazy access to the SDK (imported after the guard is installed)."""

    def __init__(self) -> None:
        from dynamiq import Workflow, connections
        from dynamiq.callbacks import DynamiqTracingCallbackHandler
        from dynamiq.flows import Flow
        from dynamiq.nodes.llms import OpenAI
        from dynamiq.nodes.node import NodeDependency
        from dynamiq.nodes.tools.python import Python
        from dynamiq.prompts import Message, Prompt
        from dynamiq.runnables import RunnableConfig, RunnableStatus

        self.Workflow = Workflow
        self.connections = connections
        self.Handler = DynamiqTracingCallbackHandler
        self.Flow = Flow
        self.OpenAI = OpenAI
        self.NodeDependency = NodeDependency
        self.Python = Python
        self.Message = Message
        self.Prompt = Prompt
        self.RunnableConfig = RunnableConfig
        self.RunnableStatus = RunnableStatus


ADD_CODE = """
def run(input_data):
    return {"sum": input_data["a"] + input_data["b"], "label": input_data.get("label", "")}
"""

WORDS_CODE = """
def run(input_data):
    text = input_data.get("text", "")
    return {"words": len(text.split()), "upper": text.upper()}
"""

BOOM_CODE = """
def run(input_data):
    raise ValueError("boom in python node #" + str(input_data.get("i")))
"""


def python_workflow(sdk: Sdk):
    add = sdk.Python(name="Add", code=ADD_CODE)
    words = sdk.Python(name="Words", code=WORDS_CODE)
    combine = sdk.Python(
        name="Combine",
        code='def run(input_data):\n    return {"ok": True, "i": input_data.get("i")}\n',
        depends=[sdk.NodeDependency(add), sdk.NodeDependency(words)],
    )
    return sdk.Workflow(flow=sdk.Flow(nodes=[add, words, combine])), 5  # workflow + flow + 3 nodes


def failure_workflow(sdk: Sdk):
    add = sdk.Python(name="Add", code=ADD_CODE)
    boom = sdk.Python(name="Boom", code=BOOM_CODE, depends=[sdk.NodeDependency(add)])
    return sdk.Workflow(flow=sdk.Flow(nodes=[add, boom])), 4


def llm_workflow(sdk: Sdk, llm_base_url: str):
    connection = sdk.connections.OpenAI(api_key="sk-e2e-dummy", url=llm_base_url)
    llm = sdk.OpenAI(
        name="LLM",
        model="gpt-4o-mini",
        connection=connection,
        temperature=0.0,
        max_tokens=64,
        prompt=sdk.Prompt(
            messages=[
                sdk.Message(role="system", content="You answer in one sentence."),
                sdk.Message(role="user", content="What is the capital of {{country}}? (#{{i}})"),
            ]
        ),
    )
    post = sdk.Python(
        name="Post",
        code='def run(input_data):\n    return {"chars": len(str(input_data))}\n',
        depends=[sdk.NodeDependency(llm)],
    )
    return sdk.Workflow(flow=sdk.Flow(nodes=[llm, post])), 4


def _runs_of(flush: dict) -> list[dict]:
    body = flush.get("body")
    if isinstance(body, dict) and isinstance(body.get("runs"), list):
        return body["runs"]
    return []


def _new_handler(sdk: Sdk, args, tags: list[str]):
    return sdk.Handler(base_url=args.base_url, access_key=args.access_key, tags=tags)


def run_fresh_handlers(sdk, recorder, checks, args, scenario, build, input_for, expect_status):
    """N workflow runs, a new handler each: N flushes of one workflow's runs each."""
    workflow, runs_per_flush = build()
    mark = recorder.mark()
    results = []
    for i in range(args.runs):
        handler = _new_handler(sdk, args, ["e2e", scenario])
        result = workflow.run_sync(input_for(i), config=sdk.RunnableConfig(callbacks=[handler]))
        results.append(result)
        checks.expect(
            result.status == expect_status,
            f"{scenario} run {i}: workflow status {result.status}, expected {expect_status}",
        )
    flushes = recorder.since(mark)
    checks.expect(len(flushes) == args.runs, f"{scenario}: {len(flushes)} flushes for {args.runs} runs")
    for flush in flushes:
        n = len(_runs_of(flush))
        checks.expect(n == runs_per_flush, f"{scenario} flush {flush['seq']}: {n} runs, expected {runs_per_flush}")
    return flushes, results


def scenario_python(sdk, recorder, checks, args):
    flushes, _ = run_fresh_handlers(
        sdk,
        recorder,
        checks,
        args,
        "python",
        lambda: python_workflow(sdk),
        lambda i: {"a": i, "b": 2 * i, "i": i, "label": f"run-{i}", "text": f"alpha beta gamma {i}"},
        sdk.RunnableStatus.SUCCESS,
    )
    for flush in flushes:
        statuses = {r.get("status") for r in _runs_of(flush)}
        checks.expect(statuses == {"succeeded"}, f"python flush {flush['seq']}: run statuses {statuses}")


def scenario_failure(sdk, recorder, checks, args):
    flushes, _ = run_fresh_handlers(
        sdk,
        recorder,
        checks,
        args,
        "failure",
        lambda: failure_workflow(sdk),
        lambda i: {"a": 1, "b": 2, "i": i},
        sdk.RunnableStatus.FAILURE,
    )
    for flush in flushes:
        runs = _runs_of(flush)
        failed = [r for r in runs if r.get("status") == "failed"]
        by_type = {r.get("type") for r in failed}
        checks.expect(
            {"workflow", "flow", "node"} <= by_type, f"failure flush {flush['seq']}: failed run types {by_type}"
        )
        boom = [r for r in failed if r.get("name") == "Boom"]
        checks.expect(len(boom) == 1, f"failure flush {flush['seq']}: {len(boom)} failed Boom runs")
        for run in boom:
            error = run.get("error") or {}
            checks.expect(
                "boom in python node" in str(error.get("message")), f"Boom error message: {error.get('message')!r}"
            )
            checks.expect("Traceback" in str(error.get("traceback")), "Boom error has no traceback")


def scenario_llm(sdk, recorder, checks, args, llm_base_url, stub):
    before = len(stub.completions()) if stub else 0
    flushes, results = run_fresh_handlers(
        sdk,
        recorder,
        checks,
        args,
        "llm",
        lambda: llm_workflow(sdk, llm_base_url),
        lambda i: {"country": "France", "i": i},
        sdk.RunnableStatus.SUCCESS,
    )
    if stub:
        calls = len(stub.completions()) - before
        checks.expect(calls == args.runs, f"llm: the OpenAI stub got {calls} chat completions, expected {args.runs}")
    for flush in flushes:
        llm_runs = [r for r in _runs_of(flush) if r.get("name") == "LLM"]
        checks.expect(len(llm_runs) == 1, f"llm flush {flush['seq']}: {len(llm_runs)} LLM runs")
        for run in llm_runs:
            checks.expect(run.get("status") == "succeeded", f"LLM run status {run.get('status')}")
            checks.expect("capital" in json.dumps(run.get("output")), "LLM run output lacks the stub's reply")
            checks.expect("usage" in json.dumps(run.get("metadata")), "LLM run metadata lacks usage")


def scenario_reused(sdk, recorder, checks, args):
    """ONE handler over N workflow runs: flush k re-sends the runs of flushes 1..k-1."""
    workflow, per_run = python_workflow(sdk)
    handler = _new_handler(sdk, args, ["e2e", "reused"])
    mark = recorder.mark()
    for i in range(args.runs):
        result = workflow.run_sync(
            {"a": i, "b": 1, "i": i, "text": f"reused handler run {i}"},
            config=sdk.RunnableConfig(callbacks=[handler]),
        )
        checks.expect(result.status == sdk.RunnableStatus.SUCCESS, f"reused run {i}: status {result.status}")
    flushes = recorder.since(mark)
    checks.expect(len(flushes) == args.runs, f"reused: {len(flushes)} flushes for {args.runs} runs")
    previous: set[str] = set()
    for k, flush in enumerate(flushes, start=1):
        ids = [r.get("id") for r in _runs_of(flush)]
        checks.expect(len(ids) == k * per_run, f"reused flush {k}: {len(ids)} runs, expected {k * per_run}")
        checks.expect(previous <= set(ids), f"reused flush {k}: does not re-send the earlier runs")
        previous = set(ids)


# --------------------------------------------------------------------------------------------
# Bench
# --------------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def bench(sdk, recorder, checks, args) -> dict:
    workflow, _ = python_workflow(sdk)

    def one(i: int) -> None:
        handler = _new_handler(sdk, args, ["e2e", "bench"])
        workflow.run_sync({"a": i, "b": 1, "i": i, "text": "bench"}, config=sdk.RunnableConfig(callbacks=[handler]))

    recorder.scenario = "bench-warmup"
    for i in range(args.warmup):
        one(i)
    recorder.scenario = "bench"
    mark = recorder.mark()
    started = time.perf_counter()
    for i in range(args.runs):
        one(i)
    wall = time.perf_counter() - started
    flushes = recorder.since(mark)
    elapsed = sorted(f["elapsed_ms"] for f in flushes)
    send = [f["send_ms"] for f in flushes]
    errors = sum(1 for f in flushes if not flush_ok(f))
    checks.expect(len(flushes) == args.runs, f"bench: {len(flushes)} flushes for {args.runs} runs")
    checks.expect(errors == 0, f"bench: {errors} flushes failed")
    return {
        "base_url": args.base_url,
        "flushes": len(flushes),
        "errors": errors,
        "mean_ms": round(statistics.fmean(elapsed), 3) if elapsed else None,
        "p50_ms": round(percentile(elapsed, 50), 3) if elapsed else None,
        "p99_ms": round(percentile(elapsed, 99), 3) if elapsed else None,
        "min_ms": round(elapsed[0], 3) if elapsed else None,
        "max_ms": round(elapsed[-1], 3) if elapsed else None,
        "send_mean_ms": round(statistics.fmean(send), 3) if send else None,
        "body_bytes_mean": round(statistics.fmean(f["body_bytes"] for f in flushes), 1) if flushes else None,
        "wall_s": round(wall, 3),
    }


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", required=True, help="where the SDK sends traces (sidecar or collector)")
    parser.add_argument("--access-key", required=True, help="the key the SDK sends (Authorization: Bearer)")
    parser.add_argument("--out", help="JSON-lines file: one line per flush")
    parser.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    parser.add_argument("--runs", type=int, default=3, help="workflow runs per scenario (bench: measured flushes)")
    parser.add_argument("--llm-base-url", help="OpenAI-compatible base URL; default: an in-process stub")
    parser.add_argument("--bench", action="store_true", help="time N flushes; print mean/p50/p99 as JSON")
    parser.add_argument("--warmup", type=int, default=3, help="bench: unmeasured runs first")
    parser.add_argument("--verbose", action="store_true", help="keep the SDK's INFO logs")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    for name in ("base_url", "llm_base_url"):
        url = getattr(args, name)
        if url and not _is_loopback_host(urlsplit(url).hostname):
            parser.error(f"--{name.replace('_', '-')} must be on loopback, got {url}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    prepare_environment()
    guard = NetworkGuard().install()

    import logging

    started = time.perf_counter()
    sdk = Sdk()
    import_s = time.perf_counter() - started
    if not args.verbose:
        # dynamiq logs through "dynamiq.utils.logger" with its own level (INFO) set at import.
        for name in ("dynamiq", "dynamiq.utils.logger"):
            logging.getLogger(name).setLevel(logging.WARNING)

    recorder = FlushRecorder(args.base_url).install()
    recorder.open(args.out)
    checks = Checks()
    stub = None
    summary: dict[str, Any] = {"sdk_import_s": round(import_s, 2)}
    try:
        if args.bench:
            result = bench(sdk, recorder, checks, args)
            summary.update(result)
        else:
            scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)
            llm_base_url = args.llm_base_url
            if "llm" in scenarios and not llm_base_url:
                sys.path.insert(0, str(HERE))
                from openai_stub import OpenAIStub

                stub = OpenAIStub.start()
                llm_base_url = stub.base_url
            timings = {}
            for scenario in scenarios:
                recorder.scenario = scenario
                t0 = time.perf_counter()
                if scenario == "python":
                    scenario_python(sdk, recorder, checks, args)
                elif scenario == "failure":
                    scenario_failure(sdk, recorder, checks, args)
                elif scenario == "llm":
                    scenario_llm(sdk, recorder, checks, args, llm_base_url, stub)
                elif scenario == "reused":
                    scenario_reused(sdk, recorder, checks, args)
                timings[scenario] = round(time.perf_counter() - t0, 3)
            summary["scenario_s"] = timings
    except Exception:
        traceback.print_exc()
        checks.failures.append("exception while running the workflows")
    finally:
        if stub:
            stub.stop()
        recorder.close()

    bad = [f for f in recorder.flushes if not flush_ok(f)]
    for flush in bad:
        print(
            f"[e2e] flush {flush['seq']} ({flush['scenario']}) failed: status={flush['status']} "
            f"error={flush['error']} response={flush['response']!r}",
            file=sys.stderr,
        )
    if guard.blocked:
        checks.failures.append(f"{len(guard.blocked)} non-loopback network attempts were refused")
    summary.update(
        {
            "total_flushes": len(recorder.flushes),
            "failed_flushes": len(bad),
            "runs_sent": sum(len(_runs_of(f)) for f in recorder.flushes),
            "distinct_run_ids": len({r.get("id") for f in recorder.flushes for r in _runs_of(f)}),
            "network_refused": guard.blocked,
            "check_failures": checks.failures,
            "ok": not bad and not checks.failures,
        }
    )
    print(json.dumps(summary), flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
