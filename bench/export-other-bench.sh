#!/usr/bin/env bash
# Export timing for the non-AWS formats (docs/performance.md style): on a fresh SoftHSM dev
# line, issue N devices with `certfab batch`, build the signed manifest, then time
# `certfab export` (manifest verification included) per format and check each output with
# tests/py/export_check.py (with the checkers' Python, target/pyenv, made by
# hsm-fixtures/setup-host.sh). Prints one line per format: seconds and peak RSS.
#
# Usage: bench/export-other-bench.sh [N]   (default 2000; uses target/release/certfab if
#        built, else target/debug/certfab)
set -euo pipefail
n=${1:-2000}
repo=$(cd "$(dirname "$0")/.." && pwd)
certfab=$repo/target/release/certfab
[ -x "$certfab" ] || certfab=$repo/target/debug/certfab
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
CERTFAB=$certfab "$repo/hsm-fixtures/dev-line.sh" "$work" >/dev/null
cd "$work"
sed -e 's/^name: generic-iot/name: bench-other/' \
    -e 's/^cloud:$/cloud:\n  tenant: bench\n  peridio:\n    product_name: gw\n    product_prn: "prn:1:bench"/' \
    "$repo/profiles/generic-iot.yaml" > p.yaml
cf() { "$certfab" --config certfab.yaml "$@"; }
cf --json batch --profile p.yaml --count "$n" --id-template 'b-{seq:07}' --keygen host \
  --plain-keys --out out > batch.json
batch=$(python3 -c 'import json,sys; print(json.load(open("batch.json"))["batch"])')
cf manifest build --batch "$batch" --out m.jsonl --profile p.yaml >/dev/null
echo "certfab: $certfab, devices: $n"
for f in azure-dps azure-dps-group hono peridio nrfcloud microchip-jws csv; do
  /usr/bin/time -f "$f: %e s, peak RSS %M KiB" "$certfab" --config certfab.yaml export \
    --format "$f" --manifest m.jsonl --out "x-$f" >/dev/null
done
py=$repo/target/pyenv/bin/python3
[ -x "$py" ] || { echo "no $py: run hsm-fixtures/setup-host.sh" >&2; exit 2; }
check() { "$py" "$repo/tests/py/export_check.py" "$@" >/dev/null && echo "checked: $1"; }
check azure x-azure-dps
check hono x-hono
check peridio x-peridio
check nrfcloud x-nrfcloud
check csv x-csv
check microchip x-microchip-jws ca/manifest-signer.pem
