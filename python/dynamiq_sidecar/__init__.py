"""Find the ``dynamiq-sidecar`` binary this package installed, and start a sidecar for a
notebook or a test.

``find_sidecar_bin()`` returns the binary's path (the environment's scripts directory first, then
the user scheme's, then ``PATH``). ``local_sidecar()`` runs one on free loopback ports with a
temporary disk buffer and yields the ``base_url`` to give ``DynamiqTracingCallbackHandler``;
leaving the ``with`` block stops it with SIGTERM, which drains what it holds to the collector
(up to ``shutdown.drain_timeout``) before it exits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from typing import Iterator, Mapping, Optional

__all__ = ["SidecarError", "find_sidecar_bin", "local_sidecar"]

_EXE = "dynamiq-sidecar" + (".exe" if sys.platform == "win32" else "")


class SidecarError(RuntimeError):
    """The binary is missing, or the sidecar did not become healthy."""


def find_sidecar_bin() -> str:
    """The path of the installed ``dynamiq-sidecar`` binary."""
    candidates = [sysconfig.get_path("scripts")]
    user_scheme = "nt_user" if os.name == "nt" else "posix_user"
    with contextlib.suppress(KeyError):
        candidates.append(sysconfig.get_path("scripts", scheme=user_scheme))
    for directory in candidates:
        path = os.path.join(directory, _EXE)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    found = shutil.which(_EXE)
    if found:
        return found
    raise SidecarError(
        f"{_EXE} was not found in {candidates} nor on PATH; reinstall the dynamiq-sidecar package"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_sidecar(
    access_key: Optional[str] = None,
    upstream_url: Optional[str] = None,
    buffer_dir: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    timeout: float = 15.0,
) -> Iterator[str]:
    """Runs a sidecar on free loopback ports and yields its ``base_url``.

    ``access_key`` defaults to ``DYNAMIQ_ACCESS_KEY`` from the environment; ``upstream_url`` to
    the binary's default collector; ``buffer_dir`` to a temporary directory removed afterwards.
    ``env`` adds variables (e.g. ``DYNAMIQ_SIDECAR_FORWARD_MAX_DELAY``). The sidecar's own log goes
    to the parent's stderr.
    """
    binary = find_sidecar_bin()
    http_port, grpc_port = _free_port(), _free_port()
    while grpc_port == http_port:
        grpc_port = _free_port()
    owned_dir = None
    if buffer_dir is None:
        owned_dir = tempfile.mkdtemp(prefix="dynamiq-sidecar-")
        buffer_dir = os.path.join(owned_dir, "buffer")
    child_env = dict(os.environ)
    child_env.update(
        {
            "DYNAMIQ_SIDECAR_INGEST_HTTP_ADDR": f"127.0.0.1:{http_port}",
            "DYNAMIQ_SIDECAR_INGEST_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
            "DYNAMIQ_SIDECAR_BUFFER_PATH": buffer_dir,
        }
    )
    if access_key is not None:
        child_env["DYNAMIQ_ACCESS_KEY"] = access_key
    if upstream_url is not None:
        child_env["DYNAMIQ_SIDECAR_UPSTREAM_URL"] = upstream_url
    if env:
        child_env.update(env)
    base_url = f"http://127.0.0.1:{http_port}"
    process = subprocess.Popen([binary], env=child_env, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise SidecarError(f"{binary} exited with status {process.returncode} at start")
            try:
                with urllib.request.urlopen(base_url + "/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise SidecarError(f"{binary} did not answer {base_url}/healthz within {timeout}s")
            time.sleep(0.05)
        yield base_url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM if os.name != "nt" else signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if owned_dir is not None:
            shutil.rmtree(owned_dir, ignore_errors=True)
