#!/usr/bin/env bash
# Measures the figures in docs/performance.md on a fresh SoftHSM dev line:
#  1. raw token signing rate (certfab hsm bench), P-256 and RSA-3072, 1 and 2 sessions;
#  2. single-certificate latency of `certfab issue`, end to end as an operator runs it
#     (process start, module load, login, CA key check, parse, policy, lint, sign, verify, write).
# Usage: bench/hsm-bench.sh [SECONDS] [ISSUES]   (defaults 5 and 50). Writes bench/results/*.json.
set -euo pipefail
secs=${1:-5}
n=${2:-50}
repo=$(cd "$(dirname "$0")/.." && pwd)
(cd "$repo" && cargo build --release --quiet)
export CERTFAB="$repo/target/release/certfab"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$repo/hsm-fixtures/dev-line.sh" "$work/line" >/dev/null
cf() { "$CERTFAB" --config "$work/line/certfab.yaml" "$@"; }
cf ca keygen --key bench-rsa3072 --algorithm rsa3072 >/dev/null
mkdir -p "$repo/bench/results"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="$repo/bench/results/hsm-$stamp.json"
{
  echo '{"machine":'"$(printf '"%s, %s cores"' "$(uname -m)" "$(nproc)")"','
  echo '"p256":'; cf --json hsm bench --key issuing-ca --sessions 1,2 --seconds "$secs"; echo ','
  echo '"rsa3072":'; cf --json hsm bench --key bench-rsa3072 --sessions 1,2 --seconds "$secs"; echo ','
} > "$out.tmp"

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$work/d.key" 2>/dev/null
openssl req -new -key "$work/d.key" -subj "/CN=bench" -out "$work/d.csr"
start=$(date +%s%N)
for i in $(seq 1 "$n"); do
  cf issue --profile generic-iot --csr "$work/d.csr" --device-id "SN-$i" --out "$work/out/$i" >/dev/null
done
end=$(date +%s%N)
ms=$(awk -v a="$start" -v b="$end" -v n="$n" 'BEGIN { printf "%.2f", (b - a) / 1e6 / n }')
echo "\"issue_cli_latency_ms\": $ms, \"issues\": $n}" >> "$out.tmp"
python3 -m json.tool "$out.tmp" > "$out" && rm "$out.tmp"
cat "$out"
