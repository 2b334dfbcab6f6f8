#!/usr/bin/env bash
# Peak memory of the commands that read several manifests (docs/performance.md "Memory
# against batch size", issue 14): a fresh SoftHSM dev line issues two batches of N devices
# each from known public keys (`--layout bundle`), builds one manifest of each (the second
# chains to the first), then runs `manifest verify M1 M2` (each verified, then the chain and
# replay checks across them) and `manifest merge M1 M2`, each under /usr/bin/time (wall
# seconds, peak RSS, user+sys CPU seconds, with the load average: the machine may be shared).
# Nothing is timed in tests.
#
# PROFILE=debug|release picks the build (default release; a debug build's dependencies are
# optimized, its own code is not, so its times are slower and its RSS close to release's).
# CERTFAB=/path/to/certfab measures that binary instead (nothing is built; gen-inputs must
# be built already). With BEFORE=/path/to/old/certfab, both commands also run with that binary on the same
# manifests (side by side). RSS_WORK=DIR works in DIR and keeps it, so a later build can be
# measured on the same manifests without issuing them again (an existing DIR/line-N is reused).
#
# Usage: [PROFILE=debug] [CERTFAB=bin] [BEFORE=bin] [RSS_WORK=dir] bench/merge-rss-bench.sh [SIZES...]
#        (default size: 20000 devices per manifest)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
profile=${PROFILE:-release}
target=${CARGO_TARGET_DIR:-$repo/target}
certfab=${CERTFAB:-$target/$profile/certfab}
gen="$target/$profile/examples/gen-inputs"
if [ -z "${CERTFAB:-}" ]; then
  if [ "$profile" = release ]; then
    (cd "$repo" && cargo build --release --quiet --bin certfab --example gen-inputs)
  else
    (cd "$repo" && cargo build --quiet --bin certfab --example gen-inputs)
  fi
fi
if [ -n "${RSS_WORK:-}" ]; then
  work=$RSS_WORK
  mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(20000)
for n in "${sizes[@]}"; do
  line="$work/line-$n"
  cf=("$certfab" --config "$line/certfab.yaml")
  m1="$work/m1-$n.jsonl"
  m2="$work/m2-$n.jsonl"
  run() { # name args...
    local load secs kib cpu
    load=$(cut -d' ' -f1 /proc/loadavg)
    /usr/bin/time -f "%e %M %U %S" -o "$work/time" "${@:2}" > /dev/null || echo "FAILED: $1"
    read -r secs kib user sys < <(tail -n 1 "$work/time")
    cpu=$(python3 -c "print(round($user + $sys, 2))")
    echo "devices=2x$n $1 wall_s=$secs cpu_s=$cpu peak_rss_mib=$((kib / 1024)) peak_rss_kib=$kib load1=$load build=$profile"
  }
  if [ ! -f "$m2" ]; then
    CERTFAB="$certfab" "$repo/hsm-fixtures/dev-line.sh" "$line" > /dev/null
    for part in 1 2; do
      "$gen" pubkey "$n" "$work/in-$n-$part.csv" > /dev/null
      # Distinct device ids per batch (one certificate per device id and profile).
      sed -i "s/^DEV\([0-9]*,\)/dev$part-\1/" "$work/in-$n-$part.csv"
      "${cf[@]}" --json batch --profile generic-iot --input "$work/in-$n-$part.csv" \
        --layout bundle --out "$work/out-$n-$part" --jobs 2 > "$work/batch-$part.json"
      batch=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["batch"])' "$work/batch-$part.json")
      m="$work/m$part-$n.jsonl"
      "${cf[@]}" manifest build --batch "$batch" --out "$m" > /dev/null
      rm -rf "$work/out-$n-$part" "$work/in-$n-$part.csv"
    done
  fi
  trust=(--trust "$line/ca/root.pem")
  run manifest-verify-two "$certfab" manifest verify "$m1" "$m2" "${trust[@]}"
  rm -f "$work/merged-$n.jsonl" "$work/merged-$n.jsonl.jws"
  run manifest-merge-two "${cf[@]}" manifest merge "$m1" "$m2" --out "$work/merged-$n.jsonl"
  if [ -n "${BEFORE:-}" ]; then
    run before-manifest-verify-two "$BEFORE" manifest verify "$m1" "$m2" "${trust[@]}"
    mv "$work/merged-$n.jsonl" "$work/merged-after-$n.jsonl"
    mv "$work/merged-$n.jsonl.jws" "$work/merged-after-$n.jsonl.jws"
    run before-manifest-merge-two "$BEFORE" --config "$line/certfab.yaml" manifest merge "$m1" "$m2" \
      --out "$work/merged-$n.jsonl"
    # The merged files differ only in "created" if the clock moved; compare the device lines.
    if cmp -s <(tail -n +2 "$work/merged-$n.jsonl") <(tail -n +2 "$work/merged-after-$n.jsonl"); then
      echo "devices=2x$n merged device lines and trailer: identical before and after"
    else
      echo "devices=2x$n merged device lines and trailer: DIFFER before and after"
    fi
    rm -f "$work/merged-after-$n.jsonl" "$work/merged-after-$n.jsonl.jws"
  fi
  rm -f "$work/merged-$n.jsonl" "$work/merged-$n.jsonl.jws"
  [ -n "${RSS_WORK:-}" ] || rm -rf "$line" "$m1" "$m2" "$m1.jws" "$m2.jws"
done
