#!/usr/bin/env bash
# Measures the manifest figures in docs/manifest.md on a fresh SoftHSM dev line: a host-keygen
# batch of N devices, then `certfab manifest build` and `certfab manifest verify` on it, with
# wall time and peak RSS (GNU time) of each, and the manifest's size.
# Usage: bench/manifest-bench.sh [N] [debug|release]   (defaults 20000, debug). Writes
# bench/results/manifest-*.json.
set -euo pipefail
n=${1:-20000}
profile=${2:-debug}
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ "$profile" = release ]; then (cd "$repo" && cargo build --release --quiet); else (cd "$repo" && cargo build --quiet); fi
export CERTFAB="$repo/target/$profile/certfab"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$repo/hsm-fixtures/dev-line.sh" "$work/line" >/dev/null
cf() { "$CERTFAB" --config "$work/line/certfab.yaml" "$@"; }
cf batch --profile generic-iot --count "$n" --keygen host --plain-keys --id-template "M{seq:07}" \
  --out "$work/keys" >/dev/null
batch=$(cf --json batch status | python3 -c 'import json,sys; print(json.load(sys.stdin)["batch"]["id"])')
measure() { # name command...
  /usr/bin/time -f '%e %M' -o "$work/$1.time" "${@:2}" >/dev/null
  read -r secs kb < "$work/$1.time"
  printf '"%s_s": %s, "%s_peak_rss_mb": %s' "$1" "$secs" "$1" "$((kb / 1024))"
}
b=$(measure build "$CERTFAB" --config "$work/line/certfab.yaml" manifest build --batch "$batch" --out "$work/m.jsonl")
v=$(measure verify "$CERTFAB" manifest verify "$work/m.jsonl" --trust "$work/line/ca/root.pem")
size=$(stat -c %s "$work/m.jsonl")
mkdir -p "$repo/bench/results"
out="$repo/bench/results/manifest-$(date -u +%Y%m%dT%H%M%SZ).json"
printf '{"machine": "%s, %s cores", "build": "%s", "devices": %s, %s, %s, "bytes": %s}\n' \
  "$(uname -m)" "$(nproc)" "$profile" "$n" "$b" "$v" "$size" | python3 -m json.tool > "$out"
cat "$out"
