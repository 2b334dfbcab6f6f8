#!/usr/bin/env bash
# Kill-and-resume soak test of `certfab batch` on a fresh SoftHSM dev line (a longer version of
# tests/it/batch_faults.rs sigkill_and_resume, for people):
#   1. builds the release binary and a dev line in a temp dir (hsm-fixtures/dev-line.sh);
#   2. starts `certfab batch --count N --keygen host --plain-keys` ROUNDS times and SIGKILLs it
#      after a random delay, checking after every kill that no certificate file exists without
#      a signed ledger row;
#   3. runs the batch to completion and checks what an auditor would: every device signed once,
#      every other serial burned, no serial twice, files = ledger, keys match certificates,
#      audit hash chain intact, OpenSSL verifies a sample of chains.
# Usage: bench/kill-resume.sh [N] [ROUNDS]      (defaults 20000 and 50)
# Env:   SEED=n            replay a run's kill delays (printed at the start)
#        KILL_MIN_MS=30 KILL_MAX_MS=1000   kill delay window (after the spawn on odd rounds,
#                          after the run's first new signatures on even rounds)
#        KEEP=1            keep the temp dir (its path is printed)
# Exits non-zero if any check fails.
set -euo pipefail
n=${1:-20000}
rounds=${2:-50}
min_ms=${KILL_MIN_MS:-30}
max_ms=${KILL_MAX_MS:-1000}
seed=${SEED:-$(( $(date +%s%N) % 32768 ))}
RANDOM=$seed
repo=$(cd "$(dirname "$0")/.." && pwd)
(cd "$repo" && cargo build --release --quiet)
export CERTFAB="$repo/target/release/certfab"
work=$(mktemp -d)
if [ "${KEEP:-}" = 1 ]; then
  echo "keeping $work"
else
  trap 'rm -rf "$work"' EXIT
fi
line="$work/line"
out="$work/out"
"$repo/hsm-fixtures/dev-line.sh" "$line" >/dev/null
cf() { "$CERTFAB" --config "$line/certfab.yaml" "$@"; }
# Devices per ledger transaction: at most this many intents may be pending after a kill.
GROUP=$(sed -n 's/^pub const GROUP: usize = \([0-9]*\);/\1/p' "$repo/src/batch/mod.rs")
export GROUP=${GROUP:-512}
echo "kill-resume: $n devices, $rounds kills ${min_ms}..${max_ms} ms in, seed $seed (replay: SEED=$seed $0 $n $rounds)"

cat > "$work/check.py" <<'PY'
"""Ledger and output invariants. check.py partial|final LINE_DIR OUT N"""
import base64, hashlib, json, os, random, sqlite3, subprocess, sys

mode, line, out, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
db = sqlite3.connect(f"file:{line}/ledger.sqlite?mode=ro", uri=True)
failures = []

def check(ok, what):
    print(f"  {'PASS' if ok else 'FAIL'}  {what}")
    if not ok:
        failures.append(what)

def pem_certs(data):
    certs, cur = [], None
    for l in data.splitlines():
        if l == b"-----BEGIN CERTIFICATE-----":
            cur = []
        elif l == b"-----END CERTIFICATE-----" and cur is not None:
            try:
                certs.append(base64.b64decode(b"".join(cur), validate=True))
            except Exception:
                break
            cur = None
        elif cur is not None:
            cur.append(l)
    return certs

rows = db.execute("SELECT serial, device_id, state, der, cert_sha256 FROM certificates").fetchall()
states = {}
for r in rows:
    states[r[2]] = states.get(r[2], 0) + 1
signed = {r[4]: (r[1], r[0]) for r in rows if r[2] == "signed"}

# Crash invariant (holds at every moment): every file under OUT/<id>/ holding a certificate
# holds one the ledger has as signed for that device.
orphans, certs_on_disk, stray = [], 0, []
if os.path.isdir(out):
    for dev in os.listdir(out):
        d = os.path.join(out, dev)
        for f in os.listdir(d):
            p = os.path.join(d, f)
            if f == "cert.pem":
                certs_on_disk += 1
            elif f not in ("chain.pem", "device.json", "key.pem"):
                stray.append(p)
            data = open(p, "rb").read()
            if b"-----BEGIN CERTIFICATE-----" not in data:
                continue
            c = pem_certs(data)
            if not c:
                continue  # a temp file cut short
            hit = signed.get(hashlib.sha256(c[0]).hexdigest())
            if hit is None or hit[0] != dev:
                orphans.append(p)
check(not orphans, f"no certificate on disk without a signed ledger row ({certs_on_disk} cert.pem, ledger {states}) {orphans[:3]}")
group = int(os.environ.get("GROUP", "512"))
check(states.get("intent", 0) <= group, f"at most one group ({group}) of intents pending")

if mode == "final":
    ids = {f"SN{i:06d}" for i in range(1, n + 1)}
    devs = dict((r[0], (r[1], r[2])) for r in db.execute("SELECT device_id, state, serial FROM devices"))
    check(set(devs) == ids, f"one device row per id SN000001..SN{n:06d} ({len(devs)} rows)")
    check(all(s == "signed" for s, _ in devs.values()), "every device signed")
    check(states.get("signed", 0) == n, f"exactly {n} signed certificates")
    check(states.get("intent", 0) == 0, "no intent left")
    check(set(states) <= {"signed", "burned"}, f"every other serial burned: {states}")
    serials = [r[0] for r in rows]
    check(len(serials) == len(set(serials)), "no serial twice (burned included)")
    check(all(hashlib.sha256(r[3]).hexdigest() == r[4] for r in rows if r[2] == "signed"), "cert_sha256 = SHA-256(der)")
    check(all(r[3] is None for r in rows if r[2] == "burned"), "no burned serial has a certificate")
    per_dev = {}
    for r in rows:
        if r[2] == "signed":
            per_dev.setdefault(r[1], []).append(r)
    check(all(len(v) == 1 for v in per_dev.values()) and set(per_dev) == ids, "one signed certificate per device")
    check(all(per_dev[d][0][0] == devs[d][1] for d in ids if d in per_dev and d in devs), "device's current serial is its signed certificate")

    # Files = ledger.
    bad = []
    for d in sorted(ids):
        r = per_dev.get(d, [None])[0]
        try:
            cert = pem_certs(open(f"{out}/{d}/cert.pem", "rb").read())
            chain = pem_certs(open(f"{out}/{d}/chain.pem", "rb").read())
            ok = (r is not None and len(cert) == 1 and hashlib.sha256(cert[0]).hexdigest() == r[4]
                  and chain and chain[0] == cert[0] and os.path.exists(f"{out}/{d}/key.pem"))
        except OSError:
            ok = False
        if not ok:
            bad.append(d)
    check(not bad, f"every device has cert.pem (= ledger certificate), chain.pem and key.pem {bad[:3]}")
    print(f"  INFO  {len(stray)} stray files (temp files of killed runs) {stray[:3]}")

    # Audit trail.
    prev, ok, events = "0" * 64, True, 0
    reserved, issued, burn_events = set(), {}, 0
    for seq, at, station, kind, batch, dev, detail, prev_hash, h in db.execute(
            "SELECT seq, at, station, kind, batch_id, device_id, detail, prev_hash, hash FROM audit ORDER BY seq"):
        material = f"{prev}\n{seq}\n{at}\n{station}\n{kind}\n{batch or ''}\n{dev or ''}\n{detail}"
        if prev_hash != prev or hashlib.sha256(material.encode()).hexdigest() != h:
            ok = False
            print(f"    audit chain breaks at event {seq}")
            break
        prev, events = h, events + 1
        det = json.loads(detail)
        if kind == "serial_reserved":
            reserved.add(det["serial"])
        elif kind == "issued":
            issued[det["serial"]] = (dev, det["cert_sha256"])
        elif kind == "serials_burned":
            burn_events += det["count"]
        elif kind == "sign_failed":
            burn_events += 1
    check(ok, f"audit hash chain verifies ({events} events)")
    check(reserved == set(serials), "every serial has one serial_reserved event")
    check(issued == {r[0]: (r[1], r[4]) for r in rows if r[2] == "signed"}, "every signed certificate has one issued event")
    check(burn_events == states.get("burned", 0), f"every burned serial is accounted for ({burn_events})")

    # OpenSSL: chains and key pairs for a sample.
    sample = random.sample(sorted(ids), min(50, n))
    v_bad, k_bad = [], []
    for i in range(0, len(sample), 10):
        files = [f"{out}/{d}/cert.pem" for d in sample[i:i + 10]]
        p = subprocess.run(["openssl", "verify", "-CAfile", f"{line}/ca/root.pem", "-untrusted",
                            f"{line}/ca/issuing.pem", *files], capture_output=True, text=True)
        if p.returncode != 0 or p.stdout.count(": OK") != len(files):
            v_bad.append(p.stdout + p.stderr)
    for d in sample:
        a = subprocess.run(["openssl", "x509", "-noout", "-pubkey", "-in", f"{out}/{d}/cert.pem"], capture_output=True).stdout
        b = subprocess.run(["openssl", "pkey", "-pubout", "-in", f"{out}/{d}/key.pem"], capture_output=True).stdout
        if not a or a != b:
            k_bad.append(d)
    check(not v_bad, f"openssl verify: {len(sample)} sampled chains {v_bad[:1]}")
    check(not k_bad, f"key.pem matches cert.pem for {len(sample)} sampled devices {k_bad[:3]}")

sys.exit(1 if failures else 0)
PY

# Signed certificates in the ledger (0 before it exists).
signed_count() {
  python3 - "$line/ledger.sqlite" <<'PY'
import sqlite3, sys
try:
    db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
    print(db.execute("SELECT COUNT(*) FROM certificates WHERE state = 'signed'").fetchone()[0])
except Exception:
    print(0)
PY
}

fail=0
start=$(date +%s)
for r in $(seq 1 "$rounds"); do
  delay=$(( min_ms + (RANDOM * 32768 + RANDOM) % (max_ms - min_ms + 1) ))
  before=$(signed_count)
  # The binary itself in the background (not through cf: SIGKILL would hit a subshell).
  "$CERTFAB" --config "$line/certfab.yaml" batch --profile generic-iot --count "$n" --keygen host \
    --plain-keys --out "$out" >/dev/null 2>"$work/stderr" &
  pid=$!
  # Odd rounds count the delay from the spawn (kills land in start-up, re-delivery of finished
  # devices, the first reservation); even rounds from this run's first recorded signatures
  # (kills land in delivery and in the next group's reservation, key writes and signing).
  from="spawn"
  if [ $(( r % 2 )) = 0 ]; then
    from="new signatures"
    waited=0
    while [ "$(signed_count)" -le "$before" ] && kill -0 "$pid" 2>/dev/null && [ $waited -lt 1200 ]; do
      sleep 0.05
      waited=$(( waited + 1 ))
    done
  fi
  sleep "$(awk -v ms="$delay" 'BEGIN { printf "%.3f", ms / 1000 }')"
  kill -KILL "$pid" 2>/dev/null || true
  rc=0
  wait "$pid" 2>/dev/null || rc=$?
  case $rc in
    137) what="killed" ;;
    0) what="had finished" ;;
    *) echo "round $r: certfab exited $rc before the kill:"; cat "$work/stderr"; exit 1 ;;
  esac
  echo "round $r/$rounds: ${what} ${delay} ms after ${from}"
  if [ -f "$line/ledger.sqlite" ]; then
    python3 "$work/check.py" partial "$line" "$out" "$n" || fail=1
  fi
  if [ $rc = 0 ]; then
    echo "the batch finished after $r kills; for more kills raise N or lower KILL_MAX_MS"
    break
  fi
done

echo "final run:"
if ! cf batch --profile generic-iot --count "$n" --keygen host --plain-keys --out "$out"; then
  echo "FAIL: the final run did not complete"
  exit 1
fi
cf --json batch status > "$work/status.json"
python3 - "$work/status.json" "$n" <<'PY' || fail=1
import json, sys
st = json.load(open(sys.argv[1]))
ok = st["batch"]["finished_at"] is not None and st["counts"].get("signed") == int(sys.argv[2])
print(f"  {'PASS' if ok else 'FAIL'}  batch status: finished, counts {st['counts']}")
sys.exit(0 if ok else 1)
PY
python3 "$work/check.py" final "$line" "$out" "$n" || fail=1
echo "kill-resume: $n devices, $rounds kills, seed $seed, $(( $(date +%s) - start )) s: $([ $fail = 0 ] && echo 'all checks passed' || echo 'CHECKS FAILED')"
exit $fail
