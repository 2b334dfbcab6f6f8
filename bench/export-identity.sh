#!/usr/bin/env bash
# Byte-identity of `certfab export` between two binaries (issue 14: the streamed exporters
# must write exactly what the in-memory ones wrote): every format is exported from the same
# signed manifest by BEFORE and AFTER, and the output directories are compared with diff -r
# (the summary files name the output directory, so each is compared with that path
# normalized). Exits non-zero on any difference.
#
# Usage: [MAX_ROWS=N] bench/export-identity.sh BEFORE AFTER CONFIG MANIFEST [WORKDIR]
#   BEFORE/AFTER: certfab binaries; CONFIG: the line's certfab.yaml; MANIFEST: its .jsonl
#   (signature beside it). Claims (aws-fleet-claim) are issued per run, so only the files
#   that do not carry the claim are compared for that format, and microchip-jws without its
#   (randomized ECDSA) signature values.
set -euo pipefail
before=$1 after=$2 config=$3 manifest=$4
work=${5:-$(mktemp -d)}
mkdir -p "$work"
aws=(--set aws.region=eu-central-1 --set aws.account_id=123456789012
     --set aws.role_arn=arn:aws:iam::123456789012:role/certfab-registration
     --set aws.certificate_mode=SNI_ONLY --set aws.bucket=certfab-line-1
     --set aws.key_prefix=batches/ --set aws.template_name=certfab-fleet)
sets() {
  case $1 in
    aws-*) printf '%s\n' "${aws[@]}" ;;
    hono) printf '%s\n' --set hono.tenant_id=line-1 ;;
    peridio) printf '%s\n' --set peridio.product_prn=prn:1:bench --set peridio.product_name=gw ;;
  esac
}
status=0
for f in aws-bulk aws-jitp aws-jitr aws-multi-account aws-policy aws-fleet-claim azure-dps \
         azure-dps-group hono peridio nrfcloud microchip-jws csv; do
  mapfile -t extra < <(sets "$f")
  for side in before after; do
    bin=$before; [ "$side" = after ] && bin=$after
    claim=()
    [ "$f" = aws-fleet-claim ] && claim=(--plain-keys --claim-id "claim-$side-$$")
    "$bin" --config "$config" export --format "$f" --manifest "$manifest" \
      --out "$work/$side/$f" "${extra[@]}" "${claim[@]}" ${MAX_ROWS:+--max-rows "$MAX_ROWS"} \
      > "$work/$side-$f.txt"
    [ "$f" = aws-fleet-claim ] && claim=(--plain-keys --claim-id "claim-$side-json-$$")
    "$bin" --config "$config" --json export --format "$f" --manifest "$manifest" \
      --out "$work/$side-json/$f" "${extra[@]}" "${claim[@]}" ${MAX_ROWS:+--max-rows "$MAX_ROWS"} \
      > "$work/$side-$f.json"
    sed -i "s#$work/$side/#OUT/#g" "$work/$side/$f/$f.summary.json" "$work/$side-$f.txt"
    sed -i "s#$work/$side-json/#OUT/#g" "$work/$side-$f.json"
  done
  printed=identical
  case $f in
    aws-fleet-claim|microchip-jws) # the claim (its id's length too) and the signatures differ
      for side in before after; do
        sed -i '/"sha256"\|"bytes"\|claim-/d' "$work/$side-$f.json"; sed -i '/claim-/d' "$work/$side-$f.txt"
      done ;;
  esac
  cmp -s "$work/before-$f.txt" "$work/after-$f.txt" || printed=DIFFERENT
  cmp -s "$work/before-$f.json" "$work/after-$f.json" || printed=DIFFERENT
  [ "$printed" = identical ] || { echo "DIFFERENT printed list: $f"; status=1; }
  if [ "$f" = aws-fleet-claim ]; then
    # The claim certificate and key are new each run; the rest must match.
    rm -f "$work"/{before,after}/$f/aws-fleet-claim-{cert,chain,key,register}.* \
      "$work"/{before,after}/$f/$f.summary.json
  fi
  if [ "$f" = microchip-jws ]; then
    # ECDSA signatures are randomized: compare everything but the signature values (and the
    # file hashes in the summary that cover them); tests/py/export_check.py verifies them.
    sed -i 's/"signature": "[^"]*"/"signature": "SIG"/' "$work"/{before,after}/$f/microchip-manifest-*.json
    sed -i '/"sha256"/d' "$work"/{before,after}/$f/$f.summary.json
  fi
  if diff -r "$work/before/$f" "$work/after/$f" > /dev/null; then
    echo "identical: $f ($(ls "$work/after/$f" | wc -l) files)"
  else
    echo "DIFFERENT: $f"; status=1
  fi
done
exit $status
