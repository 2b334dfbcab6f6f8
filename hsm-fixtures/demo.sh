#!/usr/bin/env bash
# The main job end to end on the embedded default: builds (or reuses) the SoftHSM dev line in
# DIR, makes a demo batch of device keys and CSRs the way devices would, has certfab issue a
# certificate for each under the shipped profiles, and checks every one with openssl verify.
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

# A station shift: 20 simulated devices on the line make their keys and CSRs, certfab has the
# HSM sign, installs certificate + chain + config, reads them back, has each device prove its
# key, locks it, and shows PASS per device. Device ids are unique per demo run, since the
# ledger (rightly) refuses a known device id that shows up with a new key.
prefix="D$(date -u +%H%M%S)-"
"$repo/station-scripts/sim-device.py" make-line "$run/sim-line" --count 20 --prefix "$prefix" >/dev/null
if cf station --profile generic-iot --operator demo \
     --adapter "exec:$repo/station-scripts/sim-device.py serve $run/sim-line" | tee "$run/station.log" | grep -E '^(PASS|FAIL|REFUSED|shift)' &&
   openssl verify -CAfile "$dir/ca/root.pem" -untrusted "$dir/ca/issuing.pem" \
     "$run"/sim-line/devices/"$prefix"*/files/cert.pem >/dev/null &&
   [ "$(ls "$run"/sim-line/devices/"$prefix"*/files/cert.pem | wc -l)" -eq 20 ]; then
  echo "PASS  station shift of 20 simulated devices, all installed, read back, proven and locked"; pass=$((pass + 1))
else
  echo "FAIL  station shift (log: $run/station.log)"; fail=$((fail + 1))
fi

echo "demo: $pass passed, $fail failed; certificates in $run/out and $run/batch"
[ "$fail" -eq 0 ]
