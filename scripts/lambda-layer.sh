#!/usr/bin/env bash
# Builds the AWS Lambda layer zip of the sidecar as an external extension:
#   extensions/dynamiq-sidecar               the binary (Lambda starts every file in /opt/extensions)
#   dynamiq-sidecar/dynamiq-sidecar.toml     its configuration (read from /opt/dynamiq-sidecar/)
# for x86_64 Linux (this machine's target). Prints the zip's path on its last stdout line.
#
#   scripts/lambda-layer.sh                   # release build (fat LTO: several minutes)
#   LAYER_PROFILE=reliability scripts/lambda-layer.sh
#   LAYER_CONFIG=my.toml scripts/lambda-layer.sh
#
# Then: aws lambda publish-layer-version --layer-name dynamiq-sidecar \
#         --zip-file fileb://<zip> --compatible-architectures x86_64
# and add the layer to the function with DYNAMIQ_ACCESS_KEY (or upstream.access_key_file) set;
# README.md, "AWS Lambda", has SAM and Terraform snippets. The binary links against this
# machine's glibc: build the layer on the Lambda runtime's distribution (Amazon Linux 2023 for
# provided.al2023 and the current Python runtimes) or a system with an older glibc.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
profile="${LAYER_PROFILE:-release}"
config="${LAYER_CONFIG:-$root/config/lambda.toml}"
log() { printf '[lambda-layer] %s\n' "$*" >&2; }

log "cargo build --profile $profile"
(cd "$root" && cargo build --quiet --profile "$profile" --bin dynamiq-sidecar) >&2
dir="$profile"; [ "$profile" = dev ] && dir=debug
bin="$target/$dir/dynamiq-sidecar"
"$bin" check-config --config "$config" >/dev/null 2>&1 || {
  log "$config is not a valid configuration:"; "$bin" check-config --config "$config" >&2; exit 2; }
out="$target/lambda/dynamiq-sidecar-layer-x86_64.zip"
mkdir -p "$(dirname "$out")"
python3 - "$bin" "$config" "$out" <<'PY'
import sys, zipfile
binary, config, out = sys.argv[1:]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for name, path, mode in (("extensions/dynamiq-sidecar", binary, 0o755),
                             ("dynamiq-sidecar/dynamiq-sidecar.toml", config, 0o644)):
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = (0o100000 | mode) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(path, "rb") as f:
            z.writestr(info, f.read())
PY
log "built $out ($(du -h "$out" | cut -f1))"
echo "$out"
