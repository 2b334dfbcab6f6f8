#!/usr/bin/env bash
# Instructions per certificate, per stage, of a release `certfab batch` of N known public keys
# (docs/performance.md "Per-stage cost per certificate"), counted with valgrind's callgrind:
# repeatable on a loaded machine where timings are not, and available where `perf stat` has no
# hardware counters. SoftHSM runs in-process, so its signing is counted too.
# Usage: bench/callgrind-batch.sh [DEVICES] [LAYOUT]     (defaults 2000 and dirs)
# CERTFAB=path uses that binary (to compare two builds); KEEP=DIR keeps the callgrind output.
set -euo pipefail
n=${1:-2000}
layout=${2:-dirs}
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${CERTFAB:-}" ]; then
  (cd "$repo" && cargo build --release --quiet)
  CERTFAB="$repo/target/release/certfab"
fi
export CERTFAB
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$repo/hsm-fixtures/dev-line.sh" "$work/line" >/dev/null
# Known P-256 public keys, as examples/gen-inputs.rs writes them (Python's cryptography, which
# the simulator needs anyway, so no second release build is needed for the example).
python3 - "$n" "$work/keys.csv" <<'PY'
import sys
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives import serialization
with open(sys.argv[2], "w") as f:
    f.write("device_id,pubkey\n")
    for i in range(1, int(sys.argv[1]) + 1):
        pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        f.write(f'DEV{i:07},"{pem.strip()}"\n')
PY
# One worker: the stages of one certificate are then one thread's calls (a second worker
# changes the wall time, not the instructions per certificate).
valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" --separate-threads=no \
  "$CERTFAB" --config "$work/line/certfab.yaml" --json batch --profile generic-iot \
  --input "$work/keys.csv" --out "$work/out" --jobs 1 --layout "$layout" \
  > "$work/batch.json" 2> "$work/valgrind.txt" || { tail -20 "$work/valgrind.txt"; exit 1; }
callgrind_annotate --inclusive=yes --threshold=100 "$work/cg.out" > "$work/incl.txt"
callgrind_annotate --inclusive=no --threshold=100 "$work/cg.out" > "$work/self.txt"
if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$work"/cg.out "$work"/incl.txt "$work"/self.txt "$KEEP"/; fi
mkdir -p "$repo/bench/results"
out="$repo/bench/results/callgrind-$(date -u +%Y%m%dT%H%M%SZ).json"
python3 "$repo/bench/callgrind-stages.py" "$work/incl.txt" "$work/self.txt" "$n" "$CERTFAB" > "$out"
cat "$out"
