#!/usr/bin/env bash
# Peak memory against batch size (docs/performance.md "Memory"): for each size N, a fresh
# SoftHSM dev line issues N devices from known public keys with `--layout bundle` (release
# build), then `manifest build`, `manifest verify`, `export --format csv` and `audit --json` run
# over that batch. Every command is timed with /usr/bin/time (wall seconds, peak RSS); the load
# average is printed with each line because the machine may be shared. Nothing is timed in
# tests.
#
# Usage: bench/rss-bench.sh [SIZES...]   (default: 10000 100000)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
certfab="$repo/target/release/certfab"
gen="$repo/target/release/examples/gen-inputs"
(cd "$repo" && cargo build --release --quiet --bin certfab --example gen-inputs)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10000 100000)
for n in "${sizes[@]}"; do
  line="$work/line-$n"
  CERTFAB="$certfab" "$repo/hsm-fixtures/dev-line.sh" "$line" > /dev/null
  "$gen" pubkey "$n" "$work/in-$n.csv" > /dev/null
  cf=("$certfab" --config "$line/certfab.yaml")
  run() { # name args...
    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    /usr/bin/time -f "%e %M" -o "$work/time" "${@:2}" > /dev/null || true
    read -r secs kib < "$work/time"
    echo "devices=$n $1 wall_s=$secs peak_rss_mib=$((kib / 1024)) load1=$load"
  }
  run batch-bundle "${cf[@]}" --json batch --profile generic-iot --input "$work/in-$n.csv" \
    --layout bundle --out "$work/out-$n" --jobs 2
  batch=$("${cf[@]}" --json batch status | python3 -c 'import json,sys; print(json.load(sys.stdin)["batch"]["id"])')
  run manifest-build "${cf[@]}" manifest build --batch "$batch" --out "$work/m-$n.jsonl"
  run manifest-verify "$certfab" manifest verify "$work/m-$n.jsonl" --trust "$line/ca/root.pem"
  run export-csv "${cf[@]}" export --format csv --manifest "$work/m-$n.jsonl" --out "$work/e-$n.csv" \
    --trust "$line/ca/root.pem"
  run audit-json "${cf[@]}" --json audit
  rm -rf "$work/out-$n" "$work/in-$n.csv"
done
