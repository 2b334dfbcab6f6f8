#!/usr/bin/env bash
# Per-device overhead of certfab in station mode (docs/performance.md "Station"): runs a shift
# over N simulated devices (no faults) through the exec adapter and reports, per device, the
# time certfab spends itself (total minus time waiting for the adapter/device), next to the raw
# HSM signing rate measured in the same run.
# Usage: bench/station-bench.sh [DEVICES] [DEVICE_DELAY_MS]   (defaults 300 and 0)
set -euo pipefail
n=${1:-300}
delay=${2:-0}
repo=$(cd "$(dirname "$0")/.." && pwd)
(cd "$repo" && cargo build --release --quiet)
export CERTFAB="$repo/target/release/certfab"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$repo/hsm-fixtures/dev-line.sh" "$work/line" >/dev/null
cf() { "$CERTFAB" --config "$work/line/certfab.yaml" "$@"; }
"$repo/station-scripts/sim-device.py" make-line "$work/sim" --count "$n" >/dev/null
mkdir -p "$repo/bench/results"
out="$repo/bench/results/station-$(date -u +%Y%m%dT%H%M%SZ).json"
cf --json hsm bench --key issuing-ca --sessions 1 --seconds 3 > "$work/raw.json"
cf --json station --profile generic-iot --operator bench \
   --adapter "exec:$repo/station-scripts/sim-device.py serve $work/sim --delay-ms $delay" \
   > "$work/events.jsonl" 2> "$work/station.stderr"
python3 - "$work/raw.json" "$work/events.jsonl" "$n" "$delay" > "$out" <<'PY'
import json, statistics, sys, platform, os
raw = json.load(open(sys.argv[1]))
events = [json.loads(l) for l in open(sys.argv[2])]
dev = [e["outcome"] for e in events if e["event"] == "device"]
summary = next(e["summary"] for e in events if e["event"] == "summary")
ok = [d for d in dev if d["verdict"] == "pass"]
cf = sorted(d["certfab_us"] / 1000.0 for d in ok)
dv = sorted(d["device_us"] / 1000.0 for d in ok)
def pct(xs, p): return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else None
r = raw["results"][0] if isinstance(raw, dict) and "results" in raw else raw
rate = r.get("per_second") if isinstance(r, dict) else None
mean = statistics.mean(cf) if cf else None
print(json.dumps({
  "machine": f"{platform.machine()}, {os.cpu_count()} cores",
  "load_average_1m": os.getloadavg()[0],
  "devices": int(sys.argv[3]), "passed": len(ok), "device_delay_ms": int(sys.argv[4]),
  "certfab_ms": {"mean": mean, "p50": pct(cf, .5), "p95": pct(cf, .95), "max": cf[-1] if cf else None},
  "device_ms": {"mean": statistics.mean(dv) if dv else None, "p50": pct(dv, .5), "p95": pct(dv, .95)},
  "shift_rate_per_hour": summary["rate_per_hour"],
  "raw_hsm": raw,
  "raw_sign_ms": (1000.0 / rate) if rate else None,
  "certfab_overhead_in_raw_signatures": (mean * rate / 1000.0) if (rate and mean) else None,
}, indent=2))
PY
cat "$out"
