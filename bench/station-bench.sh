#!/usr/bin/env bash
# Per-device overhead of certfab in station mode (docs/performance.md "Station"): runs a shift
# over N simulated devices (no faults) and reports, per device, the time certfab spends itself
# (total minus time waiting for the adapter/device), next to the raw HSM signing rate measured
# in the same run; then the same shift again over TCP, with the simulator outside certfab's
# process tree, for certfab's CPU time per device (getrusage: user + system, the in-process
# SoftHSM included) and, under `strace -f -c`, its fsync/fdatasync calls per device.
# Usage: bench/station-bench.sh [DEVICES] [DEVICE_DELAY_MS]   (defaults 300 and 0)
# CERTFAB=path/to/certfab uses that binary instead of building the release one (to compare
# two builds on the same machine minutes apart); NO_STRACE=1 skips the strace run.
set -euo pipefail
n=${1:-300}
delay=${2:-0}
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${CERTFAB:-}" ]; then
  (cd "$repo" && cargo build --release --quiet)
  export CERTFAB="$repo/target/release/certfab"
fi
work=$(mktemp -d)
sim_pid=
cleanup() {
  if [ -n "$sim_pid" ]; then kill "$sim_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
if [ -n "${KEEP:-}" ]; then trap 'if [ -n "$sim_pid" ]; then kill "$sim_pid" 2>/dev/null || true; fi' EXIT; echo "work: $work" >&2; fi
"$repo/hsm-fixtures/dev-line.sh" "$work/line" >/dev/null
cf() { "$CERTFAB" --config "$work/line/certfab.yaml" "$@"; }
sim="$repo/station-scripts/sim-device.py"
mkdir -p "$repo/bench/results"
out="$repo/bench/results/station-$(date -u +%Y%m%dT%H%M%SZ).json"
cf --json hsm bench --key issuing-ca --sessions 1 --seconds 3 > "$work/raw.json"

# 1. Wall time per device as certfab reports it (exec adapter, the simulator is its child).
"$sim" make-line "$work/sim1" --count "$n" >/dev/null
cf --json station --profile generic-iot --operator bench \
   --adapter "exec:$sim serve $work/sim1 --delay-ms $delay" \
   > "$work/events.jsonl" 2> "$work/station.stderr" || echo "station (exec) exited $?" >&2

# 2. CPU per device: the simulator serves TCP from outside certfab's process tree, so the
# rusage of certfab (and its waited-for children) holds certfab and SoftHSM only.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
run_tcp() { # LINE_DIR DEVICE_PREFIX COMMAND_PREFIX...
  local line=$1 prefix=$2; shift 2
  # Devices are keyed by id across shifts: each run gets devices of its own.
  "$sim" make-line "$line" --count "$n" --prefix "$prefix" >/dev/null
  "$sim" serve "$line" --tcp "127.0.0.1:$port" --delay-ms "$delay" 2>/dev/null &
  sim_pid=$!
  for _ in $(seq 100); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port)).close()" 2>/dev/null && break
    sleep 0.1
  done
  "$@" "$CERTFAB" --config "$work/line/certfab.yaml" --json station --profile generic-iot \
     --operator bench --adapter "tcp:127.0.0.1:$port" > "$line.events" 2> "$line.stderr" \
     || { echo "station (tcp) exited $?:" >&2; tail -5 "$line.stderr" >&2; }
  kill "$sim_pid" 2>/dev/null || true
  wait "$sim_pid" 2>/dev/null || true
  sim_pid=
}
run_tcp "$work/sim2" TCP- /usr/bin/time -f '%U %S %e' -o "$work/cpu.txt"
if [ -z "${NO_STRACE:-}" ] && command -v strace >/dev/null; then
  run_tcp "$work/sim3" STR- strace -f -c -e trace=fsync,fdatasync,sync_file_range -o "$work/strace.txt"
else
  : > "$work/strace.txt"
fi

python3 - "$work/raw.json" "$work/events.jsonl" "$n" "$delay" "$work/cpu.txt" \
    "$work/sim2.events" "$work/strace.txt" "$CERTFAB" > "$out" <<'PY'
import json, statistics, sys, platform, os, re
raw = json.load(open(sys.argv[1]))
def outcomes(path):
    events = [json.loads(l) for l in open(path)]
    dev = [e["outcome"] for e in events if e["event"] == "device"]
    summary = next(e["summary"] for e in events if e["event"] == "summary")
    return [d for d in dev if d["verdict"] == "pass"], summary
ok, summary = outcomes(sys.argv[2])
n = int(sys.argv[3])
cf = sorted(d["certfab_us"] / 1000.0 for d in ok)
dv = sorted(d["device_us"] / 1000.0 for d in ok)
def pct(xs, p): return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else None
r = raw["results"][0] if isinstance(raw, dict) and "results" in raw else raw
rate = r.get("per_second") if isinstance(r, dict) else None
mean = statistics.mean(cf) if cf else None
user, system, wall = (float(x) for x in open(sys.argv[5]).read().split()[-3:])
tcp_ok, _ = outcomes(sys.argv[6])
tcp_cf = sorted(d["certfab_us"] / 1000.0 for d in tcp_ok)
syncs, sync_s = {}, {}
for line in open(sys.argv[7]):
    m = re.match(r"\s*[\d.]+\s+([\d.]+)\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
    if m and m.group(3) != "total":
        syncs[m.group(3)] = int(m.group(2))
        sync_s[m.group(3)] = float(m.group(1))
print(json.dumps({
  "machine": f"{platform.machine()}, {os.cpu_count()} cores",
  "certfab": sys.argv[8],
  "load_average_1m": os.getloadavg()[0],
  "devices": n, "passed": len(ok), "device_delay_ms": int(sys.argv[4]),
  "certfab_ms": {"mean": mean, "p50": pct(cf, .5), "p95": pct(cf, .95), "max": cf[-1] if cf else None},
  "device_ms": {"mean": statistics.mean(dv) if dv else None, "p50": pct(dv, .5), "p95": pct(dv, .95)},
  "shift_rate_per_hour": summary["rate_per_hour"],
  "tcp_run": {
    "passed": len(tcp_ok),
    "certfab_ms": {"mean": statistics.mean(tcp_cf) if tcp_cf else None, "p50": pct(tcp_cf, .5)},
    "cpu_ms_per_device": (user + system) * 1000.0 / n,
    "user_s": user, "system_s": system, "wall_s": wall,
  },
  "syncs_per_device": {k: v / n for k, v in syncs.items()},
  "sync_ms_per_device_under_strace": {k: v * 1000.0 / n for k, v in sync_s.items()},
  "raw_hsm": raw,
  "raw_sign_ms": (1000.0 / rate) if rate else None,
  "certfab_overhead_in_raw_signatures": (mean * rate / 1000.0) if (rate and mean) else None,
}, indent=2))
PY
cat "$out"
