#!/usr/bin/env bash
# Prepare what the viewer's browser test needs: Debian's headless Chromium and playwright-core.
#
#   scripts/browser/setup.sh     # prints the node_modules dir on its last stdout line
#
# - chromium + chromium-driver via apt-get (only when /usr/bin/chromium is missing; needs root).
# - playwright-core (pinned) into ${BROWSER_NODE_DIR:-${CARGO_TARGET_DIR:-<repo>/target}/browser-node},
#   with `npm install --no-save`; reused when the stamp matches the pin (a rerun takes < 1 s).
# Progress goes to stderr; stdout carries only the node_modules path.
set -euo pipefail

PLAYWRIGHT_CORE_VERSION=1.65.1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dir="${BROWSER_NODE_DIR:-${CARGO_TARGET_DIR:-$root/target}/browser-node}"

log() { printf '[browser-setup] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

mkdir -p "$dir"
# Concurrent callers wait for one another instead of racing apt/npm.
exec 9>"$dir.lock"
flock 9

if [[ ! -x /usr/bin/chromium ]]; then
  command -v apt-get >/dev/null 2>&1 || die "/usr/bin/chromium is missing and apt-get is not available"
  [[ "$(id -u)" == 0 ]] || die "/usr/bin/chromium is missing; installing it needs root (apt-get install chromium chromium-driver)"
  log "installing chromium chromium-driver (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2 \
    || die "apt-get install chromium chromium-driver failed"
fi
[[ -x /usr/bin/chromium ]] || die "/usr/bin/chromium still missing after install"

command -v node >/dev/null 2>&1 || die "node not found (the browser test runs scripts/browser/viewer_check.mjs with node)"
command -v npm >/dev/null 2>&1 || die "npm not found"

stamp="$dir/.stamp"
want="playwright-core@$PLAYWRIGHT_CORE_VERSION"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" || ! -d "$dir/node_modules/playwright-core" ]]; then
  log "installing $want into $dir"
  rm -rf "$dir/node_modules" "$stamp"
  [[ -f "$dir/package.json" ]] || printf '{"private":true}\n' >"$dir/package.json"
  (cd "$dir" && npm install --no-save --no-audit --no-fund --loglevel=error "$want" >&2) \
    || die "npm install $want failed"
  echo "$want" >"$stamp"
fi
echo "$dir/node_modules"
