#!/usr/bin/env python3
"""Offline checks of the dynamiq-sidecar Helm chart (run by scripts/helm-test.sh in its venv).

Uses helm-python-sdk (the Helm v4 library, no helm binary, no cluster) to lint and render the
chart, and kubernetes-validate to check every rendered manifest against the Kubernetes schemas.

  1. lint (strict) with the default values and every ci/*.yaml, for Kubernetes 1.29 and 1.33;
  2. render every ci/*.yaml for Kubernetes 1.29 and 1.33 (sidecar files also for 1.28, the
     classic-container fallback), plus a parent chart that includes the public named templates;
  3. validate all of it with `kubernetes-validate --strict` for the version it was rendered for;
  4. assert the essentials: native sidecar shape and its fallback, probes, the key Secret mounted as
     a file, securityContext, grace period, PVC per pod in gateway mode, inbound token required in
     the daemonset/gateway modes, the rendered TOML;
  5. show that values.schema.json rejects typo'd keys and wrong types, and that the chart refuses
     to render configurations the binary would refuse to start with;
  6. with --bin (the real dynamiq-sidecar): `check-config` accepts every rendered config (and
     refuses the daemonset one without its token), and in sidecar mode the rendered exec probes
     pass against the running binary, which then exits on SIGTERM within the grace period.

Rendered manifests are kept under --out for inspection. Exit status 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import copy
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import yaml

import helm_python as helm

# Chart.render() in helm-python-sdk 0.2.2 exposes name/namespace/revision/is_install/is_upgrade
# only, but the library's helm_render options also take kube_version and api_versions (the
# `helm template --kube-version/--api-versions` flags; see the option struct in libhelm_c). They
# set .Capabilities, which the chart's native-sidecar semverCompare reads, so we pass them through
# the binding's own native call. check_capabilities() below proves they are honoured.
from helm_python import _native

RENDER_VERSIONS = ["1.29.0", "1.33.0"]
FALLBACK_VERSION = "1.28.0"
SIDECAR_NAME = "dynamiq-sidecar"
ADDR_RE = re.compile(r"^(\d+\.\d+\.\d+\.\d+):(\d+)$")


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.section = ""

    def start(self, title: str) -> None:
        self.section = title
        print(f"\n== {title}", flush=True)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"ok   {name}")
        else:
            self.failed += 1
            print(f"FAIL {name}" + (f"\n     {detail}" if detail else ""))
        return ok

    def run(self, name: str, fn: Callable[[], None]) -> None:
        """A check whose body raises AssertionError (or anything) on failure."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - every failure is reported, none aborts the run
            self.check(name, False, f"{type(e).__name__}: {e}")
        else:
            self.check(name, True)


R = Report()


# ---------------------------------------------------------------------------------------------
# Rendering

class Chart:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.chart = helm.Chart.load(str(path))

    def render(self, values: dict[str, Any], kube: str, name: str = "rel",
               namespace: str = "obs", api_versions: list[str] | None = None) -> dict[str, str]:
        opts: dict[str, Any] = {"name": name, "namespace": namespace, "is_install": True,
                                "kube_version": "v" + kube.lstrip("v")}
        if api_versions:
            opts["api_versions"] = api_versions
        out = _native.call_string("helm_render", self.chart._raw(), json.dumps(values), json.dumps(opts))
        manifests: dict[str, str] = json.loads(out)
        return manifests


def docs(manifests: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object rendered (NOTES.txt left out)."""
    objs = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for d in yaml.safe_load_all(text):
            if d:
                objs.append(d)
    return objs


def manifest_text(manifests: dict[str, str]) -> str:
    parts = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        parts.append(f"# Source: {path}\n{text.strip()}\n")
    return "---\n".join(parts)


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind}{' ' + name if name else ''}, found {len(found)}"
    return found[0]


def kinds(objs: list[dict]) -> list[str]:
    return sorted(o["kind"] for o in objs)


def load_values(name: str) -> dict[str, Any]:
    with open(CHART / "ci" / name) as f:
        return yaml.safe_load(f) or {}


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def find_container(spec: dict) -> tuple[str, dict]:
    """("initContainers"|"containers", the sidecar container)."""
    where = [(k, c) for k in ("initContainers", "containers") for c in (spec.get(k) or [])
             if c["name"] == SIDECAR_NAME]
    assert len(where) == 1, f"expected the {SIDECAR_NAME} container once, found {len(where)}"
    return where[0]


def config_of(objs: list[dict]) -> tuple[str, dict]:
    cm = one(objs, "ConfigMap")
    text = cm["data"]["dynamiq-sidecar.toml"]
    return text, tomllib.loads(text)


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "msec": 0.001, "millis": 0.001, "s": 1, "sec": 1, "secs": 1, "second": 1,
             "seconds": 1, "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60, "h": 3600,
             "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600, "d": 86400, "day": 86400,
             "days": 86400}
    parts = re.findall(r"(\d+)\s*([a-z]+)", duration)
    assert parts, f"cannot read duration {duration!r}"
    return sum(int(n) * units[u] for n, u in parts)


def mount_for(container: dict, volume: str) -> dict:
    found = [m for m in container.get("volumeMounts", []) if m["name"] == volume]
    assert len(found) == 1, f"volume {volume} mounted {len(found)} times"
    return found[0]


def volume(spec: dict, name: str) -> dict:
    found = [v for v in spec.get("volumes", []) if v["name"] == name]
    assert len(found) == 1, f"volume {name} defined {len(found)} times"
    return found[0]


# ---------------------------------------------------------------------------------------------
# Assertions shared by the modes

def assert_hardened(c: dict) -> None:
    sc = c.get("securityContext") or {}
    assert sc.get("runAsNonRoot") is True, f"runAsNonRoot: {sc.get('runAsNonRoot')}"
    assert isinstance(sc.get("runAsUser"), int) and sc["runAsUser"] != 0, f"runAsUser: {sc.get('runAsUser')}"
    assert sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem"
    assert sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation"
    assert sc.get("privileged") in (None, False), "privileged"
    assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"capabilities: {sc.get('capabilities')}"
    assert not sc.get("capabilities", {}).get("add"), "capabilities added"
    assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccompProfile"
    res = c.get("resources") or {}
    assert res.get("requests") and res.get("limits", {}).get("memory"), f"resources: {res}"


def assert_probes(c: dict, exposed: bool, port: int) -> None:
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        p = c.get(probe)
        assert p, f"{probe} missing"
        if exposed:
            assert p.get("httpGet") == {"path": path, "port": port}, f"{probe}: {p}"
        else:
            # The listener is on loopback: the kubelet's httpGet would go to the pod IP.
            cmd = p.get("exec", {}).get("command", [])
            assert cmd[:2] == ["/bin/bash", "-c"], f"{probe}: {p}"
            assert f"/dev/tcp/127.0.0.1/{port}" in cmd[2] and f"GET {path} " in cmd[2], f"{probe}: {cmd}"
        assert p["timeoutSeconds"] >= 1 and p["periodSeconds"] >= 1


def assert_common(objs: list[dict], workload: dict, mode: str, values: dict) -> tuple[str, dict]:
    """Checks every mode shares; returns the sidecar's (list, container)."""
    spec = pod_spec(workload)
    where, c = find_container(spec)
    text, cfg = config_of(objs)
    port = values.get("ports", {}).get("http", 4318)
    exposed = mode != "sidecar"
    host = "0.0.0.0" if exposed else "127.0.0.1"

    assert c["args"] == ["run", "--config", "/etc/dynamiq-sidecar/dynamiq-sidecar.toml"], c["args"]
    for extra in values.get("extraVolumes", []):
        assert volume(spec, extra["name"]) == extra, "extraVolumes are added to the pod as given"
    for extra in values.get("extraVolumeMounts", []):
        assert mount_for(c, extra["name"]) == extra, "extraVolumeMounts are added to the container"
    cm_vol = volume(spec, "dynamiq-sidecar-config")
    assert cm_vol["configMap"]["name"] == one(objs, "ConfigMap")["metadata"]["name"]
    assert mount_for(c, "dynamiq-sidecar-config")["mountPath"] == "/etc/dynamiq-sidecar"

    # Listeners: loopback in sidecar mode, all interfaces otherwise.
    assert cfg["ingest"]["http_addr"] == f"{host}:{port}", cfg["ingest"]
    assert ADDR_RE.match(cfg["ingest"]["grpc_addr"]) and cfg["ingest"]["grpc_addr"].startswith(host + ":")
    assert "allow_unauthenticated" not in cfg["ingest"], "the chart never opens an unauthenticated listener"
    assert "outputs" not in cfg, "[outputs] is rejected by the binary"
    # Numbers stay numbers (YAML gives Helm float64s).
    assert isinstance(cfg["buffer"]["max_bytes"], int), cfg["buffer"]

    # The access key: a Secret volume mounted as a directory (never subPath: rotation must reach
    # the file), and upstream.access_key_file pointing at the file in it.
    if cfg["upstream"].get("auth_mode", "sidecar-key") == "sidecar-key":
        kv = volume(spec, "dynamiq-sidecar-access-key")
        assert "secret" in kv, kv
        m = mount_for(c, "dynamiq-sidecar-access-key")
        assert m.get("readOnly") is True and "subPath" not in m and "subPathExpr" not in m, m
        item = kv["secret"]["items"][0]
        assert cfg["upstream"]["access_key_file"] == f"{m['mountPath']}/{item['path']}", cfg["upstream"]
        ak = values.get("accessKey", {})
        if ak.get("existingSecret"):
            assert kv["secret"]["secretName"] == ak["existingSecret"]
            assert item["key"] == ak.get("existingSecretKey", "access-key")
        else:
            sec = one(objs, "Secret", kv["secret"]["secretName"])
            assert item["key"] in sec["data"], sec
        # The key never reaches the environment or the ConfigMap.
        assert not any(e.get("name") == "DYNAMIQ_ACCESS_KEY" for e in c.get("env", []))
        if ak.get("value"):
            assert ak["value"] not in text and ak["value"] not in json.dumps(workload)

    # The buffer.
    bm = mount_for(c, "dynamiq-sidecar-buffer")
    # buffer.path is a subdirectory of the mount: the sidecar creates it 0700 as its own (the
    # volume's root may be root-owned and 0777/2775, which the sidecar would refuse).
    assert bm["mountPath"] == "/var/lib/dynamiq-sidecar", bm
    assert cfg["buffer"]["path"] == bm["mountPath"] + "/buffer", (cfg["buffer"], bm)

    # The grace period covers in-flight requests + the drain.
    need = seconds(cfg["ingest"].get("request_timeout", "30s")) + seconds(cfg["shutdown"].get("drain_timeout", "10s"))
    grace = spec["terminationGracePeriodSeconds"]
    assert isinstance(grace, int) and grace > need, f"terminationGracePeriodSeconds {grace} <= {need}"

    assert_hardened(c)
    assert_probes(c, exposed, port)
    assert spec.get("automountServiceAccountToken") is False
    ann = workload["spec"]["template"]["metadata"].get("annotations", {})
    assert re.fullmatch(r"[0-9a-f]{64}", ann.get("checksum/config", "")), ann
    return where, c


def assert_token(objs: list[dict], spec: dict, c: dict, cfg: dict, values: dict) -> None:
    tv = volume(spec, "dynamiq-sidecar-ingest-token")
    m = mount_for(c, "dynamiq-sidecar-ingest-token")
    assert m.get("readOnly") is True and "subPath" not in m
    item = tv["secret"]["items"][0]
    assert cfg["ingest"]["auth_token_file"] == f"{m['mountPath']}/{item['path']}", cfg["ingest"]
    tok = values.get("ingestToken", {})
    if tok.get("existingSecret"):
        assert tv["secret"]["secretName"] == tok["existingSecret"]
        assert item["key"] == tok.get("existingSecretKey", "token")
    else:
        sec = one(objs, "Secret", tv["secret"]["secretName"])
        assert item["key"] in sec["data"]


# ---------------------------------------------------------------------------------------------
# Per mode

def check_sidecar(case: str, objs: list[dict], kube: str, values: dict) -> None:
    dep = one(objs, "Deployment")
    spec = pod_spec(dep)
    native_wanted = values.get("sidecar", {}).get("nativeSidecar", "auto")
    native = native_wanted == "always" or (native_wanted == "auto" and tuple(map(int, kube.split("."))) >= (1, 29))
    where, c = assert_common(objs, dep, "sidecar", values)
    _, cfg = config_of(objs)
    if native:
        assert where == "initContainers", f"{case}: expected a native sidecar, found it in {where}"
        assert c.get("restartPolicy") == "Always", "native sidecar needs restartPolicy: Always"
        assert spec["containers"][0]["name"] == "app"
    else:
        assert where == "containers", f"{case}: expected the classic fallback, found it in {where}"
        assert "restartPolicy" not in c
        assert not spec.get("initContainers"), spec.get("initContainers")
    assert "ports" not in c, "loopback-only: no ports declared"
    assert "auth_token_file" not in cfg["ingest"], "no inbound token on loopback"
    assert "dynamiq-sidecar-ingest-token" not in [v["name"] for v in spec["volumes"]]
    assert "emptyDir" in volume(spec, "dynamiq-sidecar-buffer")
    app = [x for x in spec["containers"] if x["name"] == "app"][0]
    base_url = [e["value"] for e in app["env"] if e["name"] == "TRACING_BASE_URL"][0]
    assert base_url == f"http://127.0.0.1:{values.get('ports', {}).get('http', 4318)}"
    assert_hardened(app)
    assert kinds(objs) == sorted(["ConfigMap", "Deployment"] + (["Secret"] if values.get("accessKey", {}).get("value") else []))


def assert_grpc_exposed(c: dict, values: dict, host_port: bool) -> None:
    """OTLP/gRPC (4317) is declared on the container (and the node) unless ports.exposeGrpc is off."""
    grpc = [p for p in c["ports"] if p["name"] == "grpc"]
    if not values.get("ports", {}).get("exposeGrpc", True):
        assert not grpc
        return
    assert grpc and grpc[0]["containerPort"] == values.get("ports", {}).get("grpc", 4317)
    if host_port:
        assert grpc[0].get("hostPort") == grpc[0]["containerPort"], "apps reach gRPC at status.hostIP"


def assert_allowed_hosts(cfg: dict, workload: dict, values: dict, gateway: bool) -> None:
    """Clients reach an exposed sidecar by its Service's names: the Host check must take them."""
    given = values.get("config", {}).get("ingest", {}).get("allowed_hosts")
    hosts = cfg["ingest"]["allowed_hosts"]
    if given is not None:
        assert hosts == given, hosts
        return
    name, ns = workload["metadata"]["name"], workload["metadata"].get("namespace", "obs")
    want = [name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"]
    if gateway:
        want += [f"*.{name}-headless.{ns}.svc", f"*.{name}-headless.{ns}.svc.cluster.local"]
    assert hosts == want, hosts


def check_daemonset(case: str, objs: list[dict], kube: str, values: dict) -> None:
    ds = one(objs, "DaemonSet")
    spec = pod_spec(ds)
    where, c = assert_common(objs, ds, "daemonset", values)
    _, cfg = config_of(objs)
    assert where == "containers"
    assert_token(objs, spec, c, cfg, values)
    http = [p for p in c["ports"] if p["name"] == "http"][0]
    assert http["containerPort"] == 4318
    if values.get("daemonset", {}).get("hostPort", True):
        assert http.get("hostPort") == 4318, "apps reach it at status.hostIP:4318"
    assert_grpc_exposed(c, values, host_port=values.get("daemonset", {}).get("hostPort", True))
    assert_allowed_hosts(cfg, ds, values, gateway=False)
    buf = volume(spec, "dynamiq-sidecar-buffer")
    btype = values.get("daemonset", {}).get("buffer", {}).get("type", "hostPath")
    if btype == "hostPath":
        assert buf["hostPath"]["type"] == "DirectoryOrCreate" and buf["hostPath"]["path"].startswith("/var/lib/dynamiq-sidecar/")
        init = spec["initContainers"]
        assert [i["name"] for i in init] == ["buffer-owner"]
        isc = init[0]["securityContext"]
        # The one root process: chown only, nothing else.
        assert isc["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]} and isc["allowPrivilegeEscalation"] is False
        assert init[0]["command"][0] == "chown"
        assert init[0]["command"][-1] == mount_for(c, "dynamiq-sidecar-buffer")["mountPath"], "the mount point is chowned"
    elif btype == "pvc":
        assert buf["persistentVolumeClaim"]["claimName"] == values["daemonset"]["buffer"]["pvc"]["existingClaim"]
        assert mount_for(c, "dynamiq-sidecar-buffer").get("subPathExpr") == "$(NODE_NAME)"
        assert any(e["name"] == "NODE_NAME" and e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName" for e in c["env"])
        assert not spec.get("initContainers")
    svc_on = values.get("daemonset", {}).get("service", {}).get("enabled", True)
    if svc_on:
        svc = one(objs, "Service")
        assert svc["spec"]["internalTrafficPolicy"] == "Local"
        assert svc["spec"]["selector"] == ds["spec"]["selector"]["matchLabels"]
    else:
        assert "Service" not in kinds(objs)
    sa = one(objs, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False and spec["serviceAccountName"] == sa["metadata"]["name"]


def check_gateway(case: str, objs: list[dict], kube: str, values: dict) -> None:
    sts = one(objs, "StatefulSet")
    spec = pod_spec(sts)
    where, c = assert_common(objs, sts, "gateway", values)
    _, cfg = config_of(objs)
    assert where == "containers"
    assert_token(objs, spec, c, cfg, values)
    # A PVC per pod for the buffer, mounted where buffer.path points.
    vct = sts["spec"]["volumeClaimTemplates"]
    assert [v["metadata"]["name"] for v in vct] == ["dynamiq-sidecar-buffer"]
    assert "dynamiq-sidecar-buffer" not in [v["name"] for v in spec["volumes"]], "the buffer must come from the claim"
    size = values.get("gateway", {}).get("persistence", {}).get("size", "2Gi")
    assert vct[0]["spec"]["resources"]["requests"]["storage"] == size
    assert vct[0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    labels = sts["spec"]["selector"]["matchLabels"]
    assert all(sts["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in labels.items())
    services = [o for o in objs if o["kind"] == "Service"]
    assert len(services) == 2
    headless = [s for s in services if s["spec"].get("clusterIP") == "None"][0]
    main = [s for s in services if s is not headless][0]
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"]
    assert main["spec"]["selector"] == labels and main["spec"]["ports"][0]["targetPort"] == "http"
    assert_grpc_exposed(c, values, host_port=False)
    assert_allowed_hosts(cfg, sts, values, gateway=True)
    if values.get("ports", {}).get("exposeGrpc", True):
        assert "grpc" in [p["name"] for p in main["spec"]["ports"]], "OTLP/gRPC through the Service"
    auto = values.get("gateway", {}).get("autoscaling", {}).get("enabled", False)
    if auto:
        hpa = one(objs, "HorizontalPodAutoscaler")
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": sts["metadata"]["name"]}
        assert "replicas" not in sts["spec"], "the HPA owns replicas"
    else:
        assert "HorizontalPodAutoscaler" not in kinds(objs)
        assert sts["spec"]["replicas"] == values.get("gateway", {}).get("replicas", 2)
    if values.get("gateway", {}).get("pdb", {}).get("enabled", True):
        pdb = one(objs, "PodDisruptionBudget")
        assert pdb["spec"]["selector"]["matchLabels"] == labels
    else:
        assert "PodDisruptionBudget" not in kinds(objs)


def check_service_monitor(objs: list[dict], values: dict) -> None:
    """ServiceMonitor is a CRD kubernetes-validate has no schema for: its shape is checked here."""
    if not values.get("serviceMonitor", {}).get("enabled"):
        assert "ServiceMonitor" not in kinds(objs)
        return
    sm = one(objs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm["spec"]) == {"namespaceSelector", "selector", "endpoints"}, sm["spec"]
    ep = sm["spec"]["endpoints"]
    assert ep == [{"port": "http", "path": "/metrics", "interval": values["serviceMonitor"].get("interval", "30s"),
                   "scrapeTimeout": values["serviceMonitor"].get("scrapeTimeout", "10s")}], ep
    sel = sm["spec"]["selector"]["matchLabels"]
    targets = [s for s in objs if s["kind"] == "Service"
               and all(s["metadata"]["labels"].get(k) == v for k, v in sel.items())
               and "dynamiq-sidecar/headless" not in s["metadata"]["labels"]]
    assert len(targets) == 1, f"the ServiceMonitor selects {len(targets)} Services"
    assert any(p["name"] == "http" for p in targets[0]["spec"]["ports"])
    for k, v in values["serviceMonitor"].get("labels", {}).items():
        assert sm["metadata"]["labels"][k] == v


CHECKS = {"sidecar": check_sidecar, "daemonset": check_daemonset, "gateway": check_gateway}


# ---------------------------------------------------------------------------------------------
# Sections

class GoStderr:
    """Captures what the Go library writes to fd 2 (Helm logs there with slog, not through the
    binding's log callback): lint reports a `required`/`fail` only as such a log line."""

    def __enter__(self) -> "GoStderr":
        sys.stderr.flush()
        self.file = tempfile.TemporaryFile(mode="w+b")
        self.saved = os.dup(2)
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.seek(0)
        self.text = self.file.read().decode(errors="replace")
        self.file.close()


def lint_all(ci_files: list[str]) -> None:
    R.start("helm lint --strict (default values and every ci/*.yaml; Kubernetes 1.29 and 1.33)")
    for name in [None] + ci_files:
        values = load_values(name) if name else None
        for kube in RENDER_VERSIONS:
            with GoStderr() as err:
                report = helm.lint(str(CHART), values, strict=True, kube_version="v" + kube)
            bad = [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]
            # Lint renders leniently: a `required`/`fail` is only logged. With the ci values
            # nothing may be logged; with the defaults, exactly the required image and key are.
            logged = [line for line in err.text.splitlines() if line.strip()]
            label = f"lint {name or '(default values)'} k8s {kube}"
            if name:
                R.check(label, not bad and not logged, json.dumps(bad + logged))
            else:
                R.check(label + ": no findings; logs that image.repository and the key are required",
                        not bad and len(logged) == 2 and "image.repository is required" in logged[0]
                        and "access key is required" in logged[1], json.dumps(bad + logged))


def check_capabilities() -> None:
    R.start("Capabilities: the render options set the Kubernetes version")
    vals = merge(load_values("sidecar-values.yaml"), {})
    for kube in ["1.28.0", "1.29.0", "1.33.0"]:
        notes = CH.render(vals, kube)[f"{CHART.name}/templates/NOTES.txt"]
        R.check(f"render for {kube} sees Kubernetes v{kube}", f"Kubernetes v{kube}:" in notes, notes[:300])


def render_matrix(ci_files: list[str], out: Path) -> list[tuple[str, str]]:
    """Renders and checks every ci file; returns (file, kube version) of the written manifests."""
    R.start("render every mode and assert the essentials")
    written = []
    for name in ci_files:
        values = load_values(name)
        mode = values.get("mode", "sidecar")
        versions = RENDER_VERSIONS + ([FALLBACK_VERSION] if mode == "sidecar" else [])
        for kube in versions:
            label = f"{name} k8s {kube} ({mode})"
            try:
                manifests = CH.render(values, kube)
            except helm.HelmError as e:
                R.check(f"render {label}", False, str(e))
                continue
            objs = docs(manifests)
            path = out / f"{Path(name).stem}-k8s-{kube}.yaml"
            path.write_text(manifest_text(manifests))
            written.append((str(path), kube))
            R.run(f"render {label}: {', '.join(kinds(objs))}", lambda: CHECKS[mode](name, objs, kube, values))
            sm = "ServiceMonitor shape" if values.get("serviceMonitor", {}).get("enabled") else "no ServiceMonitor"
            R.run(f"render {label}: {sm}", lambda: check_service_monitor(objs, values))
    return written


def parent_chart(out: Path, tmp: Path) -> list[tuple[str, str]]:
    """A chart of the user's that depends on this one and includes the named templates."""
    R.start("sidecar mode from another chart (include of the named templates)")
    parent = tmp / "my-workflows"
    (parent / "templates").mkdir(parents=True)
    shutil.copytree(CHART, parent / "charts" / CHART.name, ignore=shutil.ignore_patterns("ci"))
    chart_meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    (parent / "Chart.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v2", "name": "my-workflows", "version": "1.0.0",
        "dependencies": [{"name": CHART.name, "version": chart_meta["version"]}],
    }))
    (parent / "values.yaml").write_text(yaml.safe_dump({
        CHART.name: {"image": {"repository": "registry.example.com/dynamiq/dynamiq-sidecar"},
                     "accessKey": {"existingSecret": "dynamiq-access-key"}},
    }))
    # The pod spec exactly as the chart README tells users to write it.
    (parent / "templates" / "deployment.yaml").write_text("""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-workflows
spec:
  selector:
    matchLabels: {app: workflows}
  template:
    metadata:
      labels: {app: workflows}
      annotations:
        {{- include "dynamiq-sidecar.podAnnotations" . | nindent 8 }}
    spec:
      terminationGracePeriodSeconds: {{ add 30 (include "dynamiq-sidecar.terminationGracePeriodSeconds" .) }}
      {{- with include "dynamiq-sidecar.initContainers" . }}
      initContainers:
        {{- . | nindent 8 }}
      {{- end }}
      containers:
        - name: app
          image: registry.example.com/my-workflows:1.0
          env:
            - name: TRACING_BASE_URL
              value: http://127.0.0.1:4318
        {{- include "dynamiq-sidecar.containers" . | nindent 8 }}
      volumes:
        {{- include "dynamiq-sidecar.volumes" . | nindent 8 }}
""")
    written = []
    pc = Chart(parent)
    for kube, native in (("1.33.0", True), (FALLBACK_VERSION, False)):
        try:
            manifests = pc.render({}, kube, name="wf")
        except helm.HelmError as e:
            R.check(f"parent chart renders for k8s {kube}", False, str(e))
            continue
        objs = docs(manifests)
        path = out / f"parent-chart-k8s-{kube}.yaml"
        path.write_text(manifest_text(manifests))
        written.append((str(path), kube))

        def check() -> None:
            dep = one(objs, "Deployment", "wf-workflows")
            spec = pod_spec(dep)
            where, c = find_container(spec)
            assert where == ("initContainers" if native else "containers"), where
            assert (c.get("restartPolicy") == "Always") == native
            # The names the includes compute match the objects the subchart rendered.
            cm = one(objs, "ConfigMap")
            assert volume(spec, "dynamiq-sidecar-config")["configMap"]["name"] == cm["metadata"]["name"] == "wf-dynamiq-sidecar"
            assert volume(spec, "dynamiq-sidecar-access-key")["secret"]["secretName"] == "dynamiq-access-key"
            assert spec["terminationGracePeriodSeconds"] == 30 + 50
            assert "checksum/config" in dep["spec"]["template"]["metadata"]["annotations"]
            assert_hardened(c)
            assert_probes(c, False, 4318)
            assert kinds(objs) == ["ConfigMap", "Deployment"]
        R.run(f"parent chart k8s {kube}: {'native sidecar' if native else 'classic fallback'}, names match the subchart's", check)
    return written


def validate(written: list[tuple[str, str]]) -> None:
    R.start("kubernetes-validate --strict (each manifest against the version it was rendered for)")
    by_version: dict[str, list[str]] = {}
    for path, kube in written:
        by_version.setdefault(kube, []).append(path)
    exe = shutil.which("kubernetes-validate") or str(Path(sys.executable).parent / "kubernetes-validate")
    for kube, files in sorted(by_version.items()):
        proc = subprocess.run([exe, "--strict", "--quiet", "-k", kube, *files],
                              capture_output=True, text=True)
        lines = (proc.stdout + proc.stderr).splitlines()
        errors = [line for line in lines if not line.startswith("WARN")] if proc.returncode else \
                 [line for line in lines if line.startswith(("ERROR", "FATAL"))]
        # Only the ServiceMonitor (a CRD) has no schema there; its shape is asserted above.
        unknown = [line for line in lines if line.startswith("WARN") and "kind ServiceMonitor " not in line]
        n_objs = sum(len([d for d in yaml.safe_load_all(open(f)) if d]) for f in files)
        R.check(f"k8s {kube}: {n_objs} objects in {len(files)} files valid (strict)",
                proc.returncode == 0 and not errors and not unknown, "\n     ".join(errors + unknown))


def schema_rejects() -> None:
    R.start("values.schema.json rejects unknown keys and bad values")
    base = load_values("gateway-values.yaml")
    for name in sorted(glob.glob(str(CHART / "ci" / "*.yaml"))):
        try:
            CH.chart.validate_schema(load_values(Path(name).name))
            R.check(f"accepts ci/{Path(name).name}", True)
        except helm.HelmValuesError as e:
            R.check(f"accepts ci/{Path(name).name}", False, str(e))
    bad = [
        ("typo'd top-level key replicaCount", {"replicaCount": 3}, "replicaCount"),
        ("typo'd nested key gateway.replicass", {"gateway": {"replicass": 3}}, "replicass"),
        ("typo'd config key config.buffer.max_byte", {"config": {"buffer": {"max_byte": 10}}}, "max_byte"),
        ("chart-owned config key config.ingest.http_addr", {"config": {"ingest": {"http_addr": "0.0.0.0:1"}}}, "http_addr"),
        ("config.ingest.allow_unauthenticated", {"config": {"ingest": {"allow_unauthenticated": True}}}, "allow_unauthenticated"),
        ("config.outputs (rejected by the binary)", {"config": {"outputs": {}}}, "outputs"),
        ("wrong type gateway.replicas: \"two\"", {"gateway": {"replicas": "two"}}, "/gateway/replicas"),
        ("wrong type config.buffer.max_bytes: \"1GB\"", {"config": {"buffer": {"max_bytes": "1GB"}}}, "/config/buffer/max_bytes"),
        ("wrong type accessKey: a string", {"accessKey": "sk-abc"}, "/accessKey"),
        ("bad enum mode: deployment", {"mode": "deployment"}, "/mode"),
        ("bad enum config.buffer.when_full: explode", {"config": {"buffer": {"when_full": "explode"}}}, "/config/buffer/when_full"),
        ("bad duration config.shutdown.drain_timeout: ten seconds", {"config": {"shutdown": {"drain_timeout": "ten seconds"}}}, "/config/shutdown/drain_timeout"),
        ("port out of range ports.http: 70000", {"ports": {"http": 70000}}, "/ports/http"),
        ("bad quantity gateway.persistence.size: 5 gigs", {"gateway": {"persistence": {"size": "5 gigs"}}}, "/gateway/persistence/size"),
    ]
    for label, over, needle in bad:
        vals = merge(base, over)
        try:
            CH.chart.validate_schema(vals)
            R.check(f"rejects {label}", False, "validate_schema accepted it")
            continue
        except helm.HelmValuesError as e:
            msg = str(e)
        # Rendering (what install/template do) refuses it too.
        try:
            CH.render(vals, "1.33.0")
            rendered = "rendered anyway"
        except helm.HelmValuesError:
            rendered = ""
        R.check(f"rejects {label}", needle in msg and not rendered, f"{msg} {rendered}")


def render_refusals() -> None:
    R.start("the chart refuses configurations the binary would refuse (fail/required)")
    side = load_values("sidecar-values.yaml")
    ds = load_values("daemonset-values.yaml")
    gw = load_values("gateway-minimal-values.yaml")
    cases = [
        ("daemonset without an inbound token", merge(ds, {"ingestToken": {"value": ""}}), "clients must authenticate"),
        ("gateway without an inbound token", merge(gw, {"ingestToken": {"value": ""}}), "clients must authenticate"),
        ("gateway with auth_mode passthrough", merge(gw, {"config": {"upstream": {"auth_mode": "passthrough"}}}), "only works in sidecar mode"),
        ("no access key", merge(side, {"accessKey": {"value": ""}}), "access key is required"),
        ("no image.repository", merge(side, {"image": {"repository": ""}}), "image.repository is required"),
        ("grace period not above request_timeout + drain_timeout", merge(gw, {"terminationGracePeriodSeconds": 40}), "must be longer than"),
        ("grace period vs a long drain", merge(gw, {"terminationGracePeriodSeconds": 60, "config": {"shutdown": {"drain_timeout": "1m"}}}), "must be longer than"),
        ("daemonset pvc without a claim", merge(ds, {"daemonset": {"buffer": {"type": "pvc"}}}), "existingClaim"),
        ("ServiceMonitor in sidecar mode", merge(side, {"serviceMonitor": {"enabled": True}}), "serviceMonitor is for"),
        ("sidecarExample outside sidecar mode", merge(ds, {"sidecarExample": {"enabled": True}}), "sidecarExample.enabled needs"),
    ]
    for label, vals, needle in cases:
        try:
            CH.render(vals, "1.33.0")
            R.check(f"refuses {label}", False, "rendered")
        except helm.HelmError as e:
            R.check(f"refuses {label}", needle in str(e), str(e))

    def passthrough() -> None:
        vals = merge(side, {"accessKey": {"value": ""}, "config": {"upstream": {"auth_mode": "passthrough"}}})
        objs = docs(CH.render(vals, "1.33.0"))
        spec = pod_spec(one(objs, "Deployment"))
        _, cfg = config_of(objs)
        assert "access_key_file" not in cfg["upstream"] and cfg["upstream"]["auth_mode"] == "passthrough"
        assert "dynamiq-sidecar-access-key" not in [v["name"] for v in spec["volumes"]]
        assert "Secret" not in kinds(objs)
    R.run("sidecar mode with auth_mode passthrough needs no key (and mounts none)", passthrough)

    def api_token() -> None:
        objs = docs(CH.render(side, "1.33.0"))
        spec = pod_spec(one(objs, "Deployment"))
        _, cfg = config_of(objs)
        assert "api_token_file" not in cfg.get("query", {}), "no API token unless asked for"
        assert "dynamiq-sidecar-api-token" not in [v["name"] for v in spec["volumes"]]
        for over, secret, key in (
            ({"apiToken": {"value": "dq-api"}}, None, "api-token"),
            ({"apiToken": {"existingSecret": "dq-api", "existingSecretKey": "t"}}, "dq-api", "t"),
        ):
            objs = docs(CH.render(merge(side, over), "1.33.0"))
            spec = pod_spec(one(objs, "Deployment"))
            _, c = find_container(spec)
            _, cfg = config_of(objs)
            v = volume(spec, "dynamiq-sidecar-api-token")
            m = mount_for(c, "dynamiq-sidecar-api-token")
            item = v["secret"]["items"][0]
            assert m.get("readOnly") is True and "subPath" not in m, m
            assert cfg["query"]["api_token_file"] == f"{m['mountPath']}/{item['path']}", cfg["query"]
            assert item["key"] == key, item
            if secret:
                assert v["secret"]["secretName"] == secret
            else:
                sec = one(objs, "Secret", v["secret"]["secretName"])
                assert key in sec["data"], sec
    R.run("apiToken mounts a Secret file and sets query.api_token_file", api_token)

    def forced() -> None:
        for kube, mode, where in (("1.28.0", "always", "initContainers"), ("1.33.0", "never", "containers")):
            objs = docs(CH.render(merge(side, {"sidecar": {"nativeSidecar": mode}}), kube))
            got, _ = find_container(pod_spec(one(objs, "Deployment")))
            assert got == where, (kube, mode, got)
    R.run("sidecar.nativeSidecar always/never override the version check", forced)

    def token_rollout() -> None:
        a = one(docs(CH.render(ds, "1.33.0")), "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
        b = one(docs(CH.render(merge(ds, {"ingestToken": {"value": "other"}}), "1.33.0")), "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
        c = one(docs(CH.render(merge(ds, {"accessKey": {"value": "rotated"}}), "1.33.0")), "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
        assert a["checksum/ingest-token"] != b["checksum/ingest-token"], "a new token (read at start) rolls the pods"
        assert a == c, "a rotated access key must not roll the pods (the file is re-read)"
    R.run("a changed token rolls the pods, a rotated access key does not", token_rollout)


def readme_table() -> None:
    R.start("README values table covers values.yaml")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    section = readme.split("| key | default | description |", 1)[1].split("\n\n", 1)[0]
    table = {m.group(1) for m in re.finditer(r"^\| `([^`]+)` \|", section, re.M)}

    def leaves(d: dict, prefix: str = "") -> list[str]:
        out = []
        for k, v in d.items():
            p = f"{prefix}{k}"
            if isinstance(v, dict) and v and p not in {"resources", "podSecurityContext", "securityContext", "daemonset.updateStrategy"}:
                out += leaves(v, p + ".")
            else:
                out.append(p)
        return out
    missing = [p for p in leaves(values) if p not in table and not p.startswith("config.")]
    R.check(f"every values.yaml key ({len(leaves(values))}) is in the README table", not missing, f"missing: {missing}")
    stale = [p for p in table if not p.startswith("config.") and p not in leaves(values)]
    R.check("the README table names no key values.yaml lacks", not stale, f"stale: {stale}")


def dockerfile() -> None:
    """The image is not built here (no container engine): check it agrees with the chart."""
    R.start("Dockerfile agrees with the chart (static: the image cannot be built here)")
    root = CHART.parent.parent
    text = (root / "Dockerfile").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    objs = docs(CH.render(load_values("gateway-values.yaml"), "1.33.0"))
    _, c = find_container(pod_spec(one(objs, "StatefulSet")))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    R.check("CMD runs the config path the chart mounts", cmd == c["args"], f"{cmd} vs {c['args']}")
    R.check('ENTRYPOINT ["dynamiq-sidecar"] (the chart only sets args)',
            re.search(r'^ENTRYPOINT \["dynamiq-sidecar"\]$', text, re.M) is not None and "command" not in c)
    uid = values["securityContext"]["runAsUser"]
    R.check(f"USER {uid}:{uid} is the chart's runAsUser/runAsGroup",
            re.search(rf"^USER {uid}:{values['securityContext']['runAsGroup']}$", text, re.M) is not None)
    R.check("VOLUME is the image's buffer path and the chart's buffer mount", re.search(r"^VOLUME /var/lib/dynamiq-sidecar$", text, re.M) is not None)
    R.check("EXPOSE 4317 4318", re.search(r"^EXPOSE 4317 4318$", text, re.M) is not None)
    # The build stage rewrites buffer.path with sed: its pattern must still match the shipped file.
    sed = re.search(r"sed -e 's\|\^(.*?)\$\|(.*?)\|'", text)
    shipped = (root / "config" / "dynamiq-sidecar.toml").read_text().splitlines()
    R.check("the build stage's buffer.path rewrite matches config/dynamiq-sidecar.toml",
            sed is not None and sed.group(1) in shipped and sed.group(2) == 'path = "/var/lib/dynamiq-sidecar"',
            sed.groups() if sed else "no sed line")
    R.check("multi-stage: a rust build stage and a slim runtime",
            re.search(r"^FROM rust:\S+ AS build$", text, re.M) is not None
            and re.search(r"^FROM debian:\S+-slim$", text, re.M) is not None
            and "cargo build --release --locked" in text)


# ---------------------------------------------------------------------------------------------
# With the real binary

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("DYNAMIQ_", "RUST_LOG"))}


def with_binary(binary: str, written: list[tuple[str, str]], tmp: Path) -> None:
    R.start(f"the real binary ({binary})")
    # 1. check-config accepts every config the chart rendered.
    seen: set[str] = set()
    for path, _ in written:
        for d in yaml.safe_load_all(open(path)):
            if not d or d["kind"] != "ConfigMap":
                continue
            text = d["data"]["dynamiq-sidecar.toml"]
            if text in seen:
                continue
            seen.add(text)
            f = tmp / f"cfg-{len(seen)}.toml"
            f.write_text(text)
            p = subprocess.run([binary, "check-config", "--config", str(f)], capture_output=True, text=True, env=clean_env(), timeout=60)
            R.check(f"check-config accepts the config of {Path(path).name}", p.returncode == 0, p.stderr.strip())
            cfg = tomllib.loads(text)
            if cfg["ingest"]["http_addr"].startswith("0.0.0.0"):
                # Without the chart's token the binary refuses to listen beyond loopback.
                g = tmp / f"cfg-{len(seen)}-no-token.toml"
                g.write_text(re.sub(r"(?m)^auth_token_file = .*\n", "", text))
                q = subprocess.run([binary, "check-config", "--config", str(g)], capture_output=True, text=True, env=clean_env(), timeout=60)
                R.check(f"  ...and refuses it without ingest.auth_token_file (exit {q.returncode})",
                        q.returncode == 2 and "ingest.auth_token_file" in q.stderr, q.stderr.strip())

    # 2. The sidecar-mode exec probes against the running binary.
    port = free_port()
    vals = merge(load_values("sidecar-values.yaml"), {"ports": {"http": port, "grpc": free_port()},
                                                     "config": {"shutdown": {"drain_timeout": "2s"},
                                                                "upstream": {"url": f"http://127.0.0.1:{free_port()}"}}})
    objs = docs(CH.render(vals, "1.33.0"))
    spec = pod_spec(one(objs, "Deployment"))
    _, c = find_container(spec)
    text, _ = config_of(objs)
    run = tmp / "run"
    # A loose mount point, as a kubelet-made emptyDir is: the sidecar makes its buffer/ 0700.
    (run / "volume").mkdir(parents=True, mode=0o777)
    os.chmod(run / "volume", 0o777)
    (run / "access-key").write_text("sk-helm-test-not-a-real-key\n")
    text = text.replace("/run/secrets/dynamiq-sidecar/access-key/access-key", str(run / "access-key"))
    text = text.replace('"/var/lib/dynamiq-sidecar/buffer"', json.dumps(str(run / "volume" / "buffer")))
    (run / "sidecar.toml").write_text(text)
    log = open(run / "sidecar.log", "w")
    proc = subprocess.Popen([binary, "run", "--config", str(run / "sidecar.toml")], stdout=log, stderr=subprocess.STDOUT, env=clean_env())
    try:
        def probe(name: str) -> int:
            return subprocess.run(c[name]["exec"]["command"], capture_output=True, timeout=10).returncode

        deadline = time.monotonic() + 30
        while probe("startupProbe") != 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        R.check("the rendered startupProbe (exec) passes once the binary listens", probe("startupProbe") == 0,
                (run / "sidecar.log").read_text()[-2000:])
        R.check("the rendered livenessProbe (exec, /healthz) passes", probe("livenessProbe") == 0)
        try:
            status = urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status
        except urllib.error.HTTPError as e:
            status = e.code
        rc = probe("readinessProbe")
        R.check(f"the rendered readinessProbe (exec, /readyz) agrees with GET /readyz ({status} -> exit {rc})", (rc == 0) == (status == 200))
        wrong = subprocess.run(["/bin/bash", "-c", c["livenessProbe"]["exec"]["command"][2].replace(f"/{port} ", f"/{free_port()} ")], capture_output=True, timeout=10)
        R.check("the probe fails when nothing listens", wrong.returncode != 0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=spec["terminationGracePeriodSeconds"])
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - t0
        R.check(f"SIGTERM: exits {code} after {took:.1f}s, within terminationGracePeriodSeconds ({spec['terminationGracePeriodSeconds']})",
                code == 0, (run / "sidecar.log").read_text()[-2000:])
        bmode = (run / "volume" / "buffer").stat().st_mode & 0o7777
        R.check(f"buffer.path inside a 0777 volume is created 0700 (got {bmode:04o})", bmode == 0o700)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


# ---------------------------------------------------------------------------------------------

def main() -> int:
    global CHART, CH
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chart", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path, help="directory for the rendered manifests")
    ap.add_argument("--bin", help="the dynamiq-sidecar binary (enables the checks against it)")
    args = ap.parse_args()
    CHART = args.chart.resolve()
    CH = Chart(CHART)
    start = time.monotonic()
    print(f"helm-python-sdk {helm.__version__} (Helm {helm.helm_sdk_version()}), chart {CHART.name} {CH.chart.version}")
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    ci_files = sorted(Path(p).name for p in glob.glob(str(CHART / "ci" / "*.yaml")))
    with tempfile.TemporaryDirectory(prefix="helm-test-") as t:
        tmp = Path(t)
        lint_all(ci_files)
        check_capabilities()
        written = render_matrix(ci_files, args.out)
        written += parent_chart(args.out, tmp)
        validate(written)
        schema_rejects()
        render_refusals()
        readme_table()
        dockerfile()
        if args.bin:
            with_binary(args.bin, written, tmp)
        else:
            print("\n(no --bin: the checks against the real binary were not run)")
    print(f"\nrendered manifests: {args.out} ({time.monotonic() - start:.1f}s)")
    print(f"helm-chart: {R.passed} passed, {R.failed} failed")
    return 0 if R.failed == 0 and R.passed > 0 else 1


CHART: Path
CH: Chart

if __name__ == "__main__":
    sys.exit(main())
