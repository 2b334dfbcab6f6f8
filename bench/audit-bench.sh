#!/usr/bin/env bash
# certfab audit at scale (docs/audit.md "Scale"): for each size N, a fresh SoftHSM dev line
# issues N devices with host keygen (release build), then `certfab audit` runs over the ledger
# with the site's CAs and profiles, once with --json and once with --html, timed with
# /usr/bin/time (wall seconds and peak RSS). Prints one line per run.
#
# Usage: bench/audit-bench.sh [SIZES...]   (default: 10000 100000)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
certfab="$repo/target/release/certfab"
(cd "$repo" && cargo build --release --quiet)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10000 100000)
for n in "${sizes[@]}"; do
  line="$work/line-$n"
  CERTFAB="$certfab" "$repo/hsm-fixtures/dev-line.sh" "$line" > /dev/null
  "$certfab" --config "$line/certfab.yaml" --json batch --profile generic-iot --count "$n" \
    --keygen host --plain-keys --out "$line/out" > /dev/null
  rm -rf "$line/out"
  for mode in json html; do
    args=(--config "$line/certfab.yaml")
    [ "$mode" = json ] && args+=(--json)
    args+=(audit)
    [ "$mode" = html ] && args+=(--html "$line/report.html")
    # Exit 0: batch output is "signed, never installed" (low), below the default --fail-on.
    /usr/bin/time -f "%e %M" -o "$work/time" "$certfab" "${args[@]}" > /dev/null
    read -r secs kib < "$work/time"
    echo "devices=$n mode=$mode wall_s=$secs peak_rss_mib=$((kib / 1024))"
  done
done
