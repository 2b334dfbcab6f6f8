#!/usr/bin/env bash
# Instructions per station device, per stage, of a release `certfab --json station` shift
# (docs/performance.md "CPU per station device"), counted with valgrind's callgrind: repeatable
# on a loaded machine where timings are not (the fsyncs and the simulator cost wall time, not
# certfab's instructions). Two shifts run, of N and of 2N simulated devices (sim-device.py,
# exec adapter, the SoftHSM dev line), each on a fresh dev line; the per-device figures are
# (cost(2N) - cost(N)) / N, so the start-up (site, token login, CA checks, hello) cancels.
# SoftHSM runs in-process, so its signing is counted too (and reported apart); the simulator
# is a child process that callgrind does not follow.
# Usage: bench/callgrind-station.sh [N]   (default 200: shifts of 200 and 400 devices)
# CERTFAB=path uses that binary (to compare two builds); KEEP=DIR keeps the callgrind output.
# Needs valgrind (hsm-fixtures/setup-host.sh installs it).
set -euo pipefail
n=${1:-200}
command -v valgrind >/dev/null || { echo "valgrind is not installed: run hsm-fixtures/setup-host.sh" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${CERTFAB:-}" ]; then
  (cd "$repo" && cargo build --release --quiet)
  CERTFAB="$repo/target/release/certfab"
fi
export CERTFAB
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sim="$repo/station-scripts/sim-device.py"
shift_of() { # DEVICES: a fresh line and a shift under callgrind; leaves $work/DEVICES.{cg,tree}
  local count=$1 dir="$work/$1"
  "$repo/hsm-fixtures/dev-line.sh" "$dir/line" >/dev/null
  "$sim" make-line "$dir/sim" --count "$count" >/dev/null
  valgrind --tool=callgrind --callgrind-out-file="$dir.cg" --separate-threads=no \
    "$CERTFAB" --config "$dir/line/certfab.yaml" --json station --profile generic-iot \
    --operator bench --adapter "exec:$sim serve $dir/sim --delay-ms 0" \
    > "$dir.events" 2> "$dir.valgrind" || { tail -20 "$dir.valgrind"; exit 1; }
  local passed
  passed=$(grep -c '"verdict":"pass"' "$dir.events" || true)
  if [ "$passed" != "$count" ]; then
    echo "shift of $count devices: $passed passed; see $dir.events" >&2
    tail -5 "$dir.valgrind" >&2
    exit 1
  fi
  callgrind_annotate --inclusive=yes --tree=calling --threshold=100 "$dir.cg" > "$dir.tree"
  callgrind_annotate --inclusive=no --threshold=100 "$dir.cg" > "$dir.self"
}
shift_of "$n"
shift_of "$((2 * n))"
if [ -n "${KEEP:-}" ]; then
  mkdir -p "$KEEP" && cp "$work"/*.cg "$work"/*.tree "$work"/*.self "$KEEP"/
fi
mkdir -p "$repo/bench/results"
out="$repo/bench/results/callgrind-station-$(date -u +%Y%m%dT%H%M%SZ).json"
python3 "$repo/bench/callgrind-station.py" "$n" "$CERTFAB" \
  "$work/$n.tree" "$work/$n.self" "$work/$((2 * n)).tree" "$work/$((2 * n)).self" > "$out"
cat "$out"
