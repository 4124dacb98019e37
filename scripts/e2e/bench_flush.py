#!/usr/bin/env python3
"""SDK-visible flush time: Dynamiq SDK straight to a slow collector vs. through the sidecar.

    scripts/e2e/bench_flush.sh target/release/dynamiq-sidecar [--runs 200] [--delay-ms 80]

(the .sh wrapper builds the venv and runs this file). In one run:

1. starts `slow_collector.py` on loopback, answering `POST /v1/traces` after `--delay-ms`
   (like a collector across a network);
2. (a) direct: `sdk_workflows.py --bench` with the SDK's `base_url` = the collector;
3. starts the sidecar (`<binary> run --config <generated>`, `DYNAMIQ_ACCESS_KEY` set, upstream =
   the same collector, buffer in a temp dir, all other keys at their defaults);
4. (b) via sidecar: the same benchmark with `base_url` = the sidecar;
5. waits (bounded) until the collector has received, under the sidecar's key, every run the SDK
   sent to the sidecar; then stops everything it started.

Each benchmark times `DynamiqTracingClient.trace()` per flush: what the application thread
waits for at the end of every workflow run. Prints one JSON object on stdout: both results,
the mean/p50/p99 ratios (via sidecar / direct) and the delivery check; a short table on stderr.
Exit status 0 when both phases had no failed flush and every run was delivered.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIDECAR_KEY = "sk-bench-sidecar-key"
CLIENT_KEY = "bench-client-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http_ok(url: str, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310 (loopback only)
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def stop(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_bench(python: str, base_url: str, args, out: Path) -> dict:
    cmd = [
        python,
        "-W",
        "ignore",
        str(HERE / "sdk_workflows.py"),
        "--bench",
        "--base-url",
        base_url,
        "--access-key",
        CLIENT_KEY,
        "--runs",
        str(args.runs),
        "--warmup",
        str(args.warmup),
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        result = {"ok": False, "error": "no JSON result", "stdout": proc.stdout[-2000:]}
    if proc.returncode != 0:
        result["ok"] = False
        result["stderr_tail"] = proc.stderr[-3000:]
    return result


def delivered_runs(record: Path, authorization: str) -> int:
    total = 0
    if not record.exists():
        return 0
    for line in record.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("authorization") == authorization and entry.get("status") == 200:
            try:
                total += len(json.loads(entry["body_raw"])["runs"])
            except (ValueError, KeyError, TypeError):
                pass
    return total


def runs_sent(flushes_file: Path) -> int:
    total = 0
    for line in flushes_file.read_text(encoding="utf-8").splitlines():
        body = json.loads(line).get("body") or {}
        total += len(body.get("runs") or [])
    return total


def ratio(b: dict, a: dict, key: str):
    try:
        return round(b[key] / a[key], 3)
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sidecar", help="path to the dynamiq-sidecar binary")
    parser.add_argument("--python", default=sys.executable, help="the e2e venv's python (has dynamiq)")
    parser.add_argument("--runs", type=int, default=200, help="measured flushes per phase")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured flushes first, per phase")
    parser.add_argument("--delay-ms", type=float, default=80.0, help="collector stub's answer delay")
    parser.add_argument("--timeout", type=float, default=900.0, help="per phase, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, flush records)")
    parser.add_argument("--fsync", default="always", choices=["always", "interval", "never"], help="the sidecar's buffer.fsync")
    args = parser.parse_args()

    sidecar_bin = shutil.which(args.sidecar) or args.sidecar
    if not (os.path.isfile(sidecar_bin) and os.access(sidecar_bin, os.X_OK)):
        print(f"bench_flush: {args.sidecar} is not an executable", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="bench-flush-"))
    record = tmp / "collector-requests.jsonl"
    collector = sidecar = None
    report: dict = {"runs": args.runs, "warmup": args.warmup, "collector_delay_ms": args.delay_ms}
    ok = False
    try:
        collector = subprocess.Popen(
            [sys.executable, str(HERE / "slow_collector.py"), "--delay-ms", str(args.delay_ms), "--record", str(record)],
            stdout=subprocess.PIPE,
            stderr=open(tmp / "collector.stderr", "w"),  # noqa: SIM115
            text=True,
        )
        collector_url = collector.stdout.readline().strip()
        if not collector_url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"collector stub did not start: {collector_url!r}")

        print(f"[bench] (a) SDK -> collector stub ({args.delay_ms:.0f} ms) ...", file=sys.stderr)
        direct = run_bench(args.python, collector_url, args, tmp / "flushes-direct.jsonl")
        report["direct"] = direct

        http_port, grpc_port = free_port(), free_port()
        config = tmp / "config.toml"
        config.write_text(
            "\n".join(
                [
                    "[ingest]",
                    f'http_addr = "127.0.0.1:{http_port}"',
                    f'grpc_addr = "127.0.0.1:{grpc_port}"',
                    "[upstream]",
                    f'url = "{collector_url}"',
                    "[query]",
                    f'upstream_url = "{collector_url}"',
                    "[buffer]",
                    f"path = {json.dumps(str(tmp / 'data'))}",
                    f'fsync = "{args.fsync}"',
                    "",
                ]
            ),
            encoding="utf-8",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("DYNAMIQ_SIDECAR_") and k != "RUST_LOG"}
        env["DYNAMIQ_ACCESS_KEY"] = SIDECAR_KEY
        sidecar = subprocess.Popen(
            [sidecar_bin, "run", "--config", str(config)],
            stdout=open(tmp / "sidecar.stdout", "w"),  # noqa: SIM115
            stderr=open(tmp / "sidecar.stderr", "w"),  # noqa: SIM115
            env=env,
            cwd=tmp,
        )
        sidecar_url = f"http://127.0.0.1:{http_port}"
        if not wait_http_ok(f"{sidecar_url}/healthz", 10.0, sidecar):
            raise RuntimeError(
                f"sidecar not healthy within 10 s (exit {sidecar.poll()}):\n"
                + (tmp / "sidecar.stderr").read_text(errors="replace")[-3000:]
            )

        print("[bench] (b) SDK -> sidecar -> collector stub ...", file=sys.stderr)
        via = run_bench(args.python, sidecar_url, args, tmp / "flushes-sidecar.jsonl")
        report["via_sidecar"] = via

        sent = runs_sent(tmp / "flushes-sidecar.jsonl") if (tmp / "flushes-sidecar.jsonl").exists() else 0
        deadline = time.monotonic() + 60.0
        delivered = delivered_runs(record, f"Bearer {SIDECAR_KEY}")
        while delivered < sent and time.monotonic() < deadline:
            time.sleep(0.2)
            delivered = delivered_runs(record, f"Bearer {SIDECAR_KEY}")
        report["delivery"] = {"runs_sent_to_sidecar": sent, "runs_delivered_by_sidecar": delivered}
        report["ratio"] = {k: ratio(via, direct, k) for k in ("mean_ms", "p50_ms", "p99_ms")}
        ok = bool(direct.get("ok")) and bool(via.get("ok")) and delivered >= sent > 0
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        report["error"] = str(exc)
    finally:
        stop(sidecar)
        stop(collector)
        if args.keep or not ok:
            report["dir"] = str(tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    report["ok"] = ok
    print(json.dumps(report, indent=2))
    d, v = report.get("direct") or {}, report.get("via_sidecar") or {}
    if d and v:
        print(
            f"[bench] SDK-visible flush time, ms   mean     p50     p99\n"
            f"[bench]   direct to collector   {d.get('mean_ms')!s:>7} {d.get('p50_ms')!s:>7} {d.get('p99_ms')!s:>7}\n"
            f"[bench]   via sidecar           {v.get('mean_ms')!s:>7} {v.get('p50_ms')!s:>7} {v.get('p99_ms')!s:>7}\n"
            f"[bench]   ratio (via / direct)  {report.get('ratio', {}).get('mean_ms')!s:>7} "
            f"{report.get('ratio', {}).get('p50_ms')!s:>7} {report.get('ratio', {}).get('p99_ms')!s:>7}",
            file=sys.stderr,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
