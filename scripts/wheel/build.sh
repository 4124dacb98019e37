#!/usr/bin/env bash
# Builds the Python wheel (maturin, bindings = "bin") and installs it into a fresh venv, as a
# user would: `pip install <wheel>`. Prints the fresh venv's directory on its last stdout line.
#
#   scripts/wheel/build.sh           # WHEEL_PROFILE=dev by default (reuses the test build)
#   WHEEL_PROFILE=release scripts/wheel/build.sh
#
# maturin itself comes from PyPI into ${CARGO_TARGET_DIR:-target}/wheel/maturin-venv (kept and
# reused while requirements.txt is unchanged); the wheel lands in .../wheel/dist; the fresh venv
# is .../wheel/env (rebuilt every time). Progress goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
work="$target/wheel"
python="${PYTHON:-python3}"
profile="${WHEEL_PROFILE:-dev}"
log() { printf '[wheel] %s\n' "$*" >&2; }

mkdir -p "$work"
exec 9>"$work.lock"
flock 9
build_venv="$work/maturin-venv"
stamp="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [[ "$(cat "$build_venv/.stamp" 2>/dev/null)" != "$stamp" ]]; then
  log "installing maturin into $build_venv"
  rm -rf "$build_venv"
  "$python" -m venv "$build_venv"
  "$build_venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
  echo "$stamp" > "$build_venv/.stamp"
fi
rm -rf "$work/dist"
log "maturin build --profile $profile"
(cd "$root" && CARGO_TARGET_DIR="$target" "$build_venv/bin/maturin" build --quiet \
  --profile "$profile" --compatibility linux --out "$work/dist") >&2
wheel="$(ls "$work"/dist/dynamiq_sidecar-*.whl)"
log "built $(basename "$wheel")"
env_dir="$work/env"
rm -rf "$env_dir"
"$python" -m venv "$env_dir"
"$env_dir/bin/pip" install --quiet --disable-pip-version-check --no-index "$wheel" >&2
echo "$env_dir"
