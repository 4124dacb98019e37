#!/usr/bin/env bash
# Create (or reuse) the Python venv the end-to-end tests run the Dynamiq SDK from.
#
#   scripts/e2e/setup-venv.sh            # prints the venv's python path on its last stdout line
#
# The venv lives in ${E2E_VENV_DIR:-${CARGO_TARGET_DIR:-<repo>/target}/e2e-venv}. It is reused
# as is when its stamp file holds the hash of requirements.txt + constraints.txt + the Python
# version (a rerun takes well under a second); otherwise it is rebuilt from scratch with
# `pip install -r requirements.txt` (about 2 minutes cold: ~235 packages, ~1.8 GB).
# Progress goes to stderr; stdout carries only the python path.
#
# Environment: PYTHON (default python3, >= 3.10), E2E_VENV_DIR, E2E_NO_CONSTRAINTS=1 (install
# without constraints.txt, to refresh the pins).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${E2E_VENV_DIR:-${CARGO_TARGET_DIR:-$root/target}/e2e-venv}"
python="${PYTHON:-python3}"
req="$here/requirements.txt"
constraints="$here/constraints.txt"

log() { printf '[setup-venv] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v "$python" >/dev/null 2>&1 || die "'$python' not found (set PYTHON=...)"
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || die "$("$python" --version 2>&1) is too old: dynamiq needs Python >= 3.10"

hash_inputs() {
  {
    cat "$req"
    [[ "${E2E_NO_CONSTRAINTS:-}" == 1 ]] && echo "no-constraints" || cat "$constraints"
    "$python" -c 'import sys, platform; print(sys.version, platform.machine())'
  } | sha256sum | cut -d' ' -f1
}

mkdir -p "$(dirname "$venv")"
# Concurrent callers (parallel test binaries) wait for one another instead of racing pip.
exec 9>"$venv.lock"
flock 9

want="$(hash_inputs)"
stamp="$venv/.e2e-stamp"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/python" ]]; then
  echo "$venv/bin/python"
  exit 0
fi

start=$(date +%s)
log "building $venv (requirements hash ${want:0:12}); a cold install takes ~2 minutes"
rm -rf "$venv"
"$python" -m venv "$venv"
pip_args=(install --quiet --disable-pip-version-check --no-input --retries 2 --timeout 30)
if [[ "${E2E_NO_CONSTRAINTS:-}" == 1 ]]; then
  grep -v '^-c ' "$req" > "$venv/requirements-unconstrained.txt"
  pip_args+=(-r "$venv/requirements-unconstrained.txt")
else
  pip_args+=(-r "$req")
fi
if ! PIP_NO_INPUT=1 "$venv/bin/python" -m pip "${pip_args[@]}" >&2; then
  rm -rf "$venv"
  die "pip install -r $req failed (is PyPI reachable?)"
fi
# Fail here, not in the tests, if the SDK does not import.
"$venv/bin/python" -c 'import dynamiq.callbacks, dynamiq.clients' >/dev/null 2>&1 \
  || { rm -rf "$venv"; die "the installed dynamiq does not import"; }
echo "$want" > "$stamp"
log "venv ready in $(( $(date +%s) - start ))s"
echo "$venv/bin/python"
