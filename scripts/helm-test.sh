#!/usr/bin/env bash
# Offline tests of the Helm chart in helm/dynamiq-sidecar: strict lint, rendering of every mode
# with helm/dynamiq-sidecar/ci/*.yaml, kubernetes-validate --strict for Kubernetes 1.28/1.29/1.33,
# assertions on the rendered objects, schema rejections, and (with DYNAMIQ_SIDECAR_BIN or a built
# target/debug/dynamiq-sidecar) the real binary's check-config on every rendered config plus the
# rendered exec probes against a running binary. The checks are in helm/test/check_chart.py.
#
#   bash scripts/helm-test.sh
#
# No helm binary is used (none is in the package registries reachable here): helm-python-sdk
# embeds the Helm v4 library. Both Python packages come from PyPI, pinned in
# helm/test/requirements.txt, into a venv at ${HELM_VENV_DIR:-<target>/helm-venv}; the venv is
# reused while its stamp matches the requirements + Python version (a warm run takes seconds),
# otherwise rebuilt (~30 s cold). Rendered manifests are left in <target>/helm-test/.
#
# Environment: PYTHON (default python3, >= 3.11), HELM_VENV_DIR, DYNAMIQ_SIDECAR_BIN.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
venv="${HELM_VENV_DIR:-$target/helm-venv}"
python="${PYTHON:-python3}"
req="$root/helm/test/requirements.txt"

log() { printf '[helm-test] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v "$python" >/dev/null 2>&1 || die "'$python' not found (set PYTHON=...)"
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || die "$("$python" --version 2>&1) is too old: the checks need Python >= 3.11 (tomllib)"

want="$({ cat "$req"; "$python" -c 'import sys, platform; print(sys.version, platform.machine())'; } \
  | sha256sum | cut -d' ' -f1)"
mkdir -p "$(dirname "$venv")"
# Concurrent callers wait for one another instead of racing pip.
exec 9>"$venv.lock"
flock 9
if [[ ! -f "$venv/.helm-stamp" || "$(cat "$venv/.helm-stamp")" != "$want" || ! -x "$venv/bin/python" ]]; then
  start=$(date +%s)
  log "building $venv (requirements hash ${want:0:12})"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  if ! PIP_NO_INPUT=1 "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      --no-input --retries 2 --timeout 60 -r "$req" >&2; then
    rm -rf "$venv"
    die "pip install -r $req failed (is PyPI reachable?)"
  fi
  # The wheel ships libhelm_c.so three times (the .so, .so.0 and .so.0.2.2 links became copies,
  # 85 MB each); the binding loads one by absolute path. Keep one file, link the others.
  libdir="$("$venv/bin/python" -c 'import helm_python, os; print(os.path.join(os.path.dirname(helm_python.__file__), "lib"))')"
  real="$(ls "$libdir"/libhelm_c.so.*.*.* 2>/dev/null | head -n1 || true)"
  if [[ -n "$real" ]]; then
    for f in "$libdir"/libhelm_c.so "$libdir"/libhelm_c.so.0; do
      if [[ -f "$f" && ! -L "$f" ]] && cmp -s "$f" "$real"; then ln -sf "$(basename "$real")" "$f"; fi
    done
  fi
  "$venv/bin/python" -c 'import helm_python, kubernetes_validate; helm_python.helm_sdk_version()' \
    || { rm -rf "$venv"; die "the installed helm-python-sdk does not load"; }
  echo "$want" > "$venv/.helm-stamp"
  log "venv ready in $(( $(date +%s) - start ))s"
fi
flock -u 9

bin="${DYNAMIQ_SIDECAR_BIN:-}"
if [[ -z "$bin" && -x "$target/debug/dynamiq-sidecar" ]]; then
  bin="$target/debug/dynamiq-sidecar"
fi
args=(--chart "$root/helm/dynamiq-sidecar" --out "$target/helm-test")
[[ -n "$bin" ]] && args+=(--bin "$bin")
# kubernetes-validate is run from the venv's bin/.
PATH="$venv/bin:$PATH" exec "$venv/bin/python" "$root/helm/test/check_chart.py" "${args[@]}"
