#!/usr/bin/env bash
# Peak memory against batch size (docs/performance.md "Memory against batch size"): for each
# size N, a fresh SoftHSM dev line issues N devices from known public keys with
# `--layout bundle` (release build), then `manifest build`, `manifest verify`, `export` in
# every format (13, each with the settings it needs) and `audit --json` run over that batch.
# Every command is timed with /usr/bin/time (wall seconds, peak RSS, user+sys CPU seconds);
# the load average is printed with each line because the machine may be shared. Nothing is
# timed in tests.
#
# With BEFORE=/path/to/old/certfab, `manifest verify` and each export also run with that
# binary on the same manifest (side by side, e.g. main's release build), and
# BEFORE_FORMATS="csv aws-bulk" limits which formats it exports (the old exporters hold
# every device, so they are slow and large at 100,000).
#
# FORMATS="csv …" limits the formats exported (default: all 13).
#
# RSS_WORK=DIR works in DIR and keeps it (the line, the batch's ledger, the manifest); a later
# run with the same RSS_WORK finds that size's line and manifest there and goes straight to the
# exports and audit, so a later build (or more formats) can be measured on the same
# million-device manifest without issuing it again (the batch is most of the time at 1,000,000).
# NO_AUDIT=1 skips the audit.
#
# Usage: [BEFORE=bin] [BEFORE_FORMATS="f …"] [FORMATS="f …"] [RSS_WORK=dir] bench/rss-bench.sh [SIZES...]
#        (default sizes: 10000 100000)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
certfab="$repo/target/release/certfab"
gen="$repo/target/release/examples/gen-inputs"
(cd "$repo" && cargo build --release --quiet --bin certfab --example gen-inputs)
if [ -n "${RSS_WORK:-}" ]; then
  work=$RSS_WORK
  mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10000 100000)
all_formats="aws-bulk aws-jitp aws-jitr aws-multi-account aws-policy aws-fleet-claim azure-dps
             azure-dps-group hono peridio nrfcloud microchip-jws csv"
formats=(${FORMATS:-$all_formats})
before_formats=(${BEFORE_FORMATS:-${formats[*]}})
aws=(--set aws.region=eu-central-1 --set aws.account_id=123456789012
     --set aws.role_arn=arn:aws:iam::123456789012:role/certfab-registration
     --set aws.certificate_mode=SNI_ONLY --set aws.template_name=certfab-fleet
     --set aws.bucket=certfab-line-1)
settings() { # format -> --set flags (and the claim's flags for aws-fleet-claim)
  case $1 in
    aws-fleet-claim) printf '%s\n' "${aws[@]}" --plain-keys --claim-id "claim-$2" ;;
    aws-*) printf '%s\n' "${aws[@]}" ;;
    hono) printf '%s\n' --set hono.tenant_id=line-1 ;;
    peridio) printf '%s\n' --set peridio.product_prn=prn:1:bench ;;
  esac
}
for n in "${sizes[@]}"; do
  line="$work/line-$n"
  m="$work/m-$n.jsonl"
  cf=("$certfab" --config "$line/certfab.yaml")
  kept=
  [ -n "${RSS_WORK:-}" ] && [ -s "$m" ] && [ -s "$line/certfab.yaml" ] && kept=1
  run() { # name args...
    local load secs kib cpu
    load=$(cut -d' ' -f1 /proc/loadavg)
    /usr/bin/time -f "%e %M %U %S" -o "$work/time" "${@:2}" > /dev/null || echo "FAILED: $1"
    read -r secs kib user sys < <(tail -n 1 "$work/time")
    cpu=$(python3 -c "print(round($user + $sys, 2))")
    echo "devices=$n $1 wall_s=$secs cpu_s=$cpu peak_rss_mib=$((kib / 1024)) peak_rss_kib=$kib load1=$load"
  }
  if [ -z "$kept" ]; then
    rm -rf "$line" "$m" "$work/out-$n"
    CERTFAB="$certfab" "$repo/hsm-fixtures/dev-line.sh" "$line" > /dev/null
    "$gen" pubkey "$n" "$work/in-$n.csv" > /dev/null
    # Lower-case device ids: Azure DPS registration ids (the certificate CN) allow no capitals.
    sed -i 's/^DEV\([0-9]*,\)/dev\1/' "$work/in-$n.csv"
    run batch-bundle "${cf[@]}" --json batch --profile generic-iot --input "$work/in-$n.csv" \
      --layout bundle --out "$work/out-$n" --jobs 2
    batch=$("${cf[@]}" --json batch status | python3 -c 'import json,sys; print(json.load(sys.stdin)["batch"]["id"])')
    run manifest-build "${cf[@]}" manifest build --batch "$batch" --out "$m"
  else
    echo "devices=$n reusing $line and $m"
  fi
  run manifest-verify "$certfab" manifest verify "$m" --trust "$line/ca/root.pem"
  [ -z "${BEFORE:-}" ] || run before-manifest-verify "$BEFORE" manifest verify "$m" --trust "$line/ca/root.pem"
  for f in "${formats[@]}"; do
    mapfile -t extra < <(settings "$f" "after-$n")
    run "export-$f" "${cf[@]}" export --format "$f" --manifest "$m" --out "$work/e-$n-$f" "${extra[@]}"
    rm -rf "$work/e-$n-$f"
  done
  if [ -n "${BEFORE:-}" ]; then
    for f in "${before_formats[@]}"; do
      mapfile -t extra < <(settings "$f" "before-$n")
      run "before-export-$f" "$BEFORE" --config "$line/certfab.yaml" export --format "$f" \
        --manifest "$m" --out "$work/b-$n-$f" "${extra[@]}"
      rm -rf "$work/b-$n-$f"
    done
  fi
  [ -n "${NO_AUDIT:-}" ] || run audit-json "${cf[@]}" --json audit
  [ -n "${RSS_WORK:-}" ] || rm -rf "$line" "$m" "$work/out-$n" "$work/in-$n.csv"
done
