#!/usr/bin/env bash
# Instructions per certificate, per stage, of a release `certfab batch` of N known public keys
# or CSRs (docs/performance.md "Per-stage cost per certificate"), counted with valgrind's callgrind:
# repeatable on a loaded machine where timings are not, and available where `perf stat` has no
# hardware counters. SoftHSM runs in-process, so its signing is counted too.
# Usage: bench/callgrind-batch.sh [DEVICES] [LAYOUT] [KIND]   (defaults 2000, dirs, pubkey)
#   LAYOUT dirs|bundle; KIND pubkey (known P-256 public keys) or csr (P-256 CSRs: proof of
#   possession checked)
# CERTFAB=path uses that binary (to compare two builds); KEEP=DIR keeps the callgrind output.
# Needs valgrind (hsm-fixtures/setup-host.sh installs it).
set -euo pipefail
n=${1:-2000}
layout=${2:-dirs}
kind=${3:-pubkey}
case "$kind" in pubkey|csr) ;; *) echo "KIND must be pubkey or csr, not '$kind'" >&2; exit 2 ;; esac
command -v valgrind >/dev/null || { echo "valgrind is not installed: run hsm-fixtures/setup-host.sh" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${CERTFAB:-}" ]; then
  (cd "$repo" && cargo build --release --quiet)
  CERTFAB="$repo/target/release/certfab"
fi
export CERTFAB
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$repo/hsm-fixtures/dev-line.sh" "$work/line" >/dev/null
# Known P-256 public keys or CSRs, made by Python's cryptography (which the simulator needs
# anyway, so no second release build is needed for examples/gen-inputs.rs; same shape of input).
python3 - "$n" "$work/keys.csv" "$kind" <<'PY'
import sys
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives import hashes, serialization
kind = sys.argv[3]
with open(sys.argv[2], "w") as f:
    f.write("device_id,%s\n" % kind)
    for i in range(1, int(sys.argv[1]) + 1):
        k = ec.generate_private_key(ec.SECP256R1())
        if kind == "csr":
            pem = x509.CertificateSigningRequestBuilder().subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"DEV{i:07}")])
            ).sign(k, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
        else:
            pem = k.public_key().public_bytes(
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
out="$repo/bench/results/callgrind-$kind-$layout-$(date -u +%Y%m%dT%H%M%SZ).json"
python3 "$repo/bench/callgrind-stages.py" "$work/incl.txt" "$work/self.txt" "$n" "$CERTFAB" "$kind" "$layout" > "$out"
cat "$out"
