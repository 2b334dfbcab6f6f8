#!/usr/bin/env bash
# The main job end to end on the embedded default: builds (or reuses) the SoftHSM dev line in
# DIR, makes a demo batch of device keys and CSRs the way devices would, has certfab issue a
# certificate for each under the shipped profiles, and checks every one with openssl verify;
# then a batch, a station shift, and the signed manifest of each (verified, and a tampered
# copy refused); cloud exports from a verified manifest; a revocation and its HSM-signed CRL;
# the audit log checked against its signed checkpoints and an HTML audit report.
set -euo pipefail
if [ $# -ne 1 ]; then echo "usage: $0 DIR" >&2; exit 2; fi
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
"$here/dev-line.sh" "$1"
dir=$(cd "$1" && pwd)
CERTFAB=${CERTFAB:-$repo/target/debug/certfab}
run="$dir/demo/$(date -u +%Y%m%dT%H%M%SZ)-$$"
mkdir -p "$run/devices"
cf() { "$CERTFAB" --config "$dir/certfab.yaml" "$@"; }

pass=0; fail=0
issue() { # profile device-id keyspec [extra args]
  local profile=$1 id=$2 spec=$3; shift 3
  local key="$run/devices/$id.key" csr="$run/devices/$id.csr"
  case $spec in
    ec:*) openssl genpkey -algorithm EC -pkeyopt "ec_paramgen_curve:${spec#ec:}" -out "$key" 2>/dev/null ;;
    rsa:*) openssl genpkey -algorithm RSA -pkeyopt "rsa_keygen_bits:${spec#rsa:}" -out "$key" 2>/dev/null ;;
  esac
  openssl req -new -key "$key" -subj "/CN=$id" -out "$csr"
  local ca=root.pem mid=issuing.pem
  if [ "$profile" = matter-dac ]; then ca=matter-paa.pem; mid=matter-pai.pem; fi
  if cf issue --profile "$profile" --csr "$csr" --device-id "$id" --out "$run/out/$id" "$@" >/dev/null &&
     openssl verify -CAfile "$dir/ca/$ca" -untrusted "$dir/ca/$mid" "$run/out/$id/cert.pem" >/dev/null; then
    printf 'PASS  %-22s %-20s %s\n' "$profile" "$id" "$spec"; pass=$((pass + 1))
  else
    printf 'FAIL  %-22s %-20s %s\n' "$profile" "$id" "$spec"; fail=$((fail + 1))
  fi
}

for i in $(seq 1 6); do issue generic-iot "SN-$(printf %06d "$i")" ec:prime256v1; done
issue generic-iot SN-000007 ec:secp384r1
issue generic-iot SN-000008 rsa:2048
issue aws-iot thing-000009 ec:prime256v1
issue ieee-802.1ar-idevid SN-000010 ec:prime256v1
issue matter-dac MATTER-000011 ec:prime256v1 --var pid=8000

# And one a line must refuse: a device id trying to smuggle a second DN attribute.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$run/devices/evil.key" 2>/dev/null
openssl req -new -key "$run/devices/evil.key" -subj "/CN=evil" -out "$run/devices/evil.csr"
rc=0
cf issue --profile generic-iot --csr "$run/devices/evil.csr" --device-id "SN1,O=Evil" --out "$run/out/evil" 2>/dev/null || rc=$?
if [ "$rc" -eq 3 ] && [ ! -e "$run/out/evil/cert.pem" ]; then
  echo "PASS  hostile device id 'SN1,O=Evil' refused (exit 3, no certificate)"; pass=$((pass + 1))
else
  echo "FAIL  hostile device id: exit $rc"; fail=$((fail + 1))
fi

# A batch: 200 devices that cannot make keys, keys generated here and stored encrypted.
umask 077; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$run/key-passphrase"; umask 022
if cf batch --profile generic-iot --count 200 --keygen host --id-template "BATCH-{seq:04}" \
     --key-passphrase "file:$run/key-passphrase" --out "$run/batch" &&
   openssl verify -CAfile "$dir/ca/root.pem" -untrusted "$dir/ca/issuing.pem" \
     "$run/batch/BATCH-0001/cert.pem" "$run/batch/BATCH-0200/cert.pem" >/dev/null &&
   openssl pkey -in "$run/batch/BATCH-0200/key.pem" -passin "file:$run/key-passphrase" -noout; then
  echo "PASS  batch of 200 host-keygen devices (ledger: $dir/ledger.sqlite)"; pass=$((pass + 1))
else
  echo "FAIL  batch"; fail=$((fail + 1))
fi
cf batch status
latest_batch() { cf --json batch status | python3 -c 'import json,sys; print(json.load(sys.stdin)["batch"]["id"])'; }
batch_id=$(latest_batch)

# A station shift: 20 simulated devices on the line make their keys and CSRs, certfab has the
# HSM sign, installs certificate + chain + config, reads them back, has each device prove its
# key, locks it, and shows PASS per device. Device ids are unique per demo run, since the
# ledger (rightly) refuses a known device id that shows up with a new key.
prefix="D$(date -u +%H%M%S)-"
"$repo/station-scripts/sim-device.py" make-line "$run/sim-line" --count 20 --prefix "$prefix" >/dev/null
if cf station --profile generic-iot --operator demo --manifest "$run/shift.jsonl" \
     --adapter "exec:$repo/station-scripts/sim-device.py serve $run/sim-line" 2> "$run/station.stderr" |
     tee "$run/station.log" | grep -E '^(PASS|FAIL|REFUSED|shift)' &&
   openssl verify -CAfile "$dir/ca/root.pem" -untrusted "$dir/ca/issuing.pem" \
     "$run"/sim-line/devices/"$prefix"*/files/cert.pem >/dev/null &&
   [ "$(ls "$run"/sim-line/devices/"$prefix"*/files/cert.pem | wc -l)" -eq 20 ]; then
  echo "PASS  station shift of 20 simulated devices, all installed, read back, proven and locked"; pass=$((pass + 1))
else
  echo "FAIL  station shift (log: $run/station.log)"; fail=$((fail + 1))
fi

shift_id=$(latest_batch)

# Manifests of the batch and of the shift (the shift already ended in its own, --manifest; the
# build of it again is a no-op): built from the ledger, signed in the HSM by the manifest signer
# (not a CA key), verified offline trusting only the dev root; a copy with one byte changed must
# be refused (exit 3) with its line named.
manifest() { # id name
  local m="$run/$2.jsonl"
  if cf manifest build --batch "$1" --out "$m" >/dev/null &&
     "$CERTFAB" manifest verify "$m" --trust "$dir/ca/root.pem" >/dev/null; then
    local n; n=$(wc -l < "$m")
    sed '2s/"device_id":"/"device_id":"X/' "$m" > "$run/$2-tampered.jsonl"
    cp "$m.jws" "$run/$2-tampered.jsonl.jws"
    local rc=0
    "$CERTFAB" manifest verify "$run/$2-tampered.jsonl" --trust "$dir/ca/root.pem" 2> "$run/$2-tampered.txt" || rc=$?
    if [ "$rc" -eq 3 ] && grep -q "tampered.jsonl:2:" "$run/$2-tampered.txt"; then
      echo "PASS  manifest of $2 $1: $((n - 2)) devices signed and verified; a one-byte edit refused at line 2"; pass=$((pass + 1))
      return
    fi
  fi
  echo "FAIL  manifest of $2 $1"; fail=$((fail + 1))
}
manifest "$batch_id" batch
manifest "$shift_id" shift

# Cloud pre-registration from the verified batch manifest: AWS IoT bulk registration (the
# account's IAM role and S3 bucket are site facts, given here as examples) and a plain CSV.
if cf export --format aws-bulk --manifest "$run/batch.jsonl" --out "$run/export-aws" \
     --set aws.role_arn=arn:aws:iam::123456789012:role/IoTThingsRegistration \
     --set aws.bucket=example-line-bulk >/dev/null &&
   [ "$(wc -l < "$run/export-aws/aws-bulk-0001.jsonl")" -eq 200 ] &&
   cf export --format csv --manifest "$run/batch.jsonl" --out "$run/export-csv" >/dev/null; then
  echo "PASS  exports: AWS IoT bulk registration (200 things) and CSV from the verified manifest"; pass=$((pass + 1))
else
  echo "FAIL  exports"; fail=$((fail + 1))
fi

# Lifecycle: a device reported compromised is revoked, the CA key in the HSM signs a CRL, and
# openssl checks the CRL's signature and finds the serial on it.
revoked=$(cf --json revoke --device SN-000003 --reason keyCompromise | python3 -c 'import json,sys; print(json.load(sys.stdin)["cert"]["serial"])' 2>/dev/null || true)
if [ -n "$revoked" ] && cf crl --profile generic-iot --out "$run/crl.pem" >/dev/null &&
   openssl crl -in "$run/crl.pem" -CAfile "$dir/ca/issuing.pem" -noout -verify 2>/dev/null &&
   openssl crl -in "$run/crl.pem" -noout -text | tr -d ' :' | grep -qi "SerialNumber${revoked}"; then
  echo "PASS  revoked SN-000003 (serial $revoked) and published a CRL signed in the HSM (openssl crl -verify)"; pass=$((pass + 1))
else
  echo "FAIL  revoke / CRL"; fail=$((fail + 1))
fi

# The security team's view: the audit chain against its signed checkpoints, and the audit
# report over the ledger and CA certificates (HTML to attach to an assessment).
if cf log checkpoint >/dev/null && cf log verify >/dev/null &&
   cf audit --html "$run/audit.html" > "$run/audit.txt"; then
  echo "PASS  audit log verified against its signed checkpoints; audit report $run/audit.html"; pass=$((pass + 1))
else
  echo "FAIL  audit (see $run/audit.txt)"; fail=$((fail + 1))
fi

echo "demo: $pass passed, $fail failed; certificates in $run/out and $run/batch"
[ "$fail" -eq 0 ]
