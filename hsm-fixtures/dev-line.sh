#!/usr/bin/env bash
# Builds a self-contained development line under DIR (safe to re-run):
#   DIR/softhsm2.conf      SoftHSM2 config whose token store is DIR/tokens (never the system one)
#   DIR/pin, DIR/so-pin    user and security-officer PINs, mode 0600, random per line
#   DIR/ca/root.pem        dev root CA        (P-384 key generated inside the token)
#   DIR/ca/issuing.pem     dev issuing CA     (P-256 key generated inside the token)
#   DIR/ca/issuing-2.pem   second issuing CA  (P-256, 5 years; the next CA in rollover tests)
#   DIR/ca/matter-paa.pem, DIR/ca/matter-pai.pem   test Matter PAA and PAI (VID FFF1)
#   DIR/ca/manifest-signer.pem  end-entity certificate (under the dev root) of the P-256 key
#                          `manifest-signer` that signs manifests and audit checkpoints
#   DIR/certfab.yaml       site config pointing at all of it
# A line made before the manifest signer existed is upgraded in place (key, certificate and
# the signer: section are added; its CAs and ledger are kept).
# PINs are passed to certfab as file: sources, never on a command line.
# Set CERTFAB=/path/to/certfab to use a given binary; otherwise it is built with cargo.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
mkdir -p "$1"
dir=$(cd "$1" && pwd)

if [ -z "${CERTFAB:-}" ]; then
  (cd "$repo" && cargo build --quiet)
  CERTFAB="$repo/target/debug/certfab"
fi

module=""
for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
         /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so /usr/local/lib/softhsm/libsofthsm2.so; do
  if [ -f "$m" ]; then module=$m; break; fi
done
if [ -z "$module" ]; then
  echo "dev-line: SoftHSM2 is not installed (apt-get install -y softhsm2)" >&2
  exit 2
fi

cf() { "$CERTFAB" --config "$dir/certfab.yaml" "$@"; }
export SOFTHSM2_CONF="$dir/softhsm2.conf"

# The manifest/audit signer: a key of its own (never a device CA key) with an end-entity
# certificate from the dev root (CA:FALSE, keyUsage digitalSignature only).
make_signer() {
  rm -f "$dir/ca/manifest-signer.csr" "$dir/ca/manifest-signer.pem.tmp"
  if ! cf ca csr --key manifest-signer --subject "CN=certfab Dev Manifest Signer,O=certfab development" \
      --out "$dir/ca/manifest-signer.csr" >/dev/null 2>&1; then
    cf ca keygen --key manifest-signer --algorithm p256
    cf ca csr --key manifest-signer --subject "CN=certfab Dev Manifest Signer,O=certfab development" \
      --out "$dir/ca/manifest-signer.csr"
  fi
  cf ca sign --issuer-key root --csr "$dir/ca/manifest-signer.csr" --end-entity --validity 30y \
    --out "$dir/ca/manifest-signer.pem.tmp"
  cf ca import --key manifest-signer --cert "$dir/ca/manifest-signer.pem.tmp"
  if ! grep -q '^signer:' "$dir/certfab.yaml"; then
    cat >> "$dir/certfab.yaml" <<YAML
signer:
  key: "pkcs11:object=manifest-signer;type=private"
  cert: ca/manifest-signer.pem
  chain: [ca/root.pem]
YAML
  fi
  # Last: its presence means the line is complete.
  mv "$dir/ca/manifest-signer.pem.tmp" "$dir/ca/manifest-signer.pem"
}

# A second issuing CA (5 years, under the dev root) for CA rollover: profiles name it as
# rollover.next_issuer (docs/lifecycle.md).
make_issuing2() {
  rm -f "$dir/ca/issuing-2.csr" "$dir/ca/issuing-2.pem.tmp"
  if ! cf ca csr --key issuing-ca-2 --subject "CN=certfab Dev Issuing CA 2,O=certfab development" \
      --out "$dir/ca/issuing-2.csr" >/dev/null 2>&1; then
    cf ca keygen --key issuing-ca-2 --algorithm p256
    cf ca csr --key issuing-ca-2 --subject "CN=certfab Dev Issuing CA 2,O=certfab development" \
      --out "$dir/ca/issuing-2.csr"
  fi
  cf ca sign --issuer-key root --csr "$dir/ca/issuing-2.csr" --validity 5y --path-len 0 \
    --out "$dir/ca/issuing-2.pem.tmp"
  cf ca import --key issuing-ca-2 --cert "$dir/ca/issuing-2.pem.tmp"
  if ! grep -q '^  issuing-2:' "$dir/certfab.yaml"; then
    sed -i 's|^cas:$|cas:\n  issuing-2:\n    key: "pkcs11:object=issuing-ca-2;type=private"\n    cert: ca/issuing-2.pem\n    chain: [ca/root.pem]|' \
      "$dir/certfab.yaml"
  fi
  mv "$dir/ca/issuing-2.pem.tmp" "$dir/ca/issuing-2.pem"
}

if [ -f "$dir/certfab.yaml" ] && [ -f "$dir/ca/issuing.pem" ] && [ -f "$dir/ca/matter-pai.pem" ]; then
  if [ -f "$dir/ca/manifest-signer.pem" ] && [ -f "$dir/ca/issuing-2.pem" ]; then
    echo "dev line already set up in $dir"
    exit 0
  fi
  if [ ! -f "$dir/ca/issuing-2.pem" ]; then
    echo "dev line in $dir predates the second issuing CA: adding it"
    make_issuing2
  fi
  if [ ! -f "$dir/ca/manifest-signer.pem" ]; then
    echo "dev line in $dir predates the manifest signer: adding it"
    make_signer
  fi
  echo "dev line ready: $dir/certfab.yaml"
  exit 0
fi

# A half-built line (interrupted earlier) is rebuilt from scratch: it holds nothing of value.
rm -rf "$dir/tokens" "$dir/ca"
mkdir -p "$dir/tokens" "$dir/ca"
umask 077
cat > "$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/pin"
head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/so-pin"
chmod 600 "$dir/pin" "$dir/so-pin"
umask 022

cat > "$dir/certfab.yaml" <<YAML
# certfab site config for a development line (made by hsm-fixtures/dev-line.sh).
pkcs11:
  module: $module
  token: certfab-dev
  pin: file:pin
  env:
    SOFTHSM2_CONF: $dir/softhsm2.conf
station:
  id: dev-line
  serial_prefix: 1
profiles_dir: $repo/profiles
ledger: ledger.sqlite
cas:
  root:
    key: "pkcs11:object=root-ca;type=private"
    cert: ca/root.pem
  issuing:
    key: "pkcs11:object=issuing-ca;type=private"
    cert: ca/issuing.pem
    chain: [ca/root.pem]
  matter-pai:
    key: "pkcs11:object=matter-pai;type=private"
    cert: ca/matter-pai.pem
    chain: [ca/matter-paa.pem]
YAML

cf hsm init-token --label certfab-dev --so-pin "file:$dir/so-pin" --pin "file:$dir/pin"

cf ca keygen --key root-ca --algorithm p384
cf ca selfsign --key root-ca --subject "CN=certfab Dev Root CA,O=certfab development" \
  --validity none --out "$dir/ca/root.pem"
cf ca import --key root-ca --cert "$dir/ca/root.pem"

cf ca keygen --key issuing-ca --algorithm p256
cf ca csr --key issuing-ca --subject "CN=certfab Dev Issuing CA 1,O=certfab development" \
  --out "$dir/ca/issuing.csr"
cf ca sign --issuer-key root --csr "$dir/ca/issuing.csr" --validity none --path-len 0 \
  --out "$dir/ca/issuing.pem"
cf ca import --key issuing-ca --cert "$dir/ca/issuing.pem"

# Matter test PKI: PAA (no VID) and PAI for the test vendor id FFF1.
cf ca keygen --key matter-paa --algorithm p256
cf ca selfsign --key matter-paa --subject "CN=certfab Dev Matter PAA" --validity 30y \
  --out "$dir/ca/matter-paa.pem"
cf ca keygen --key matter-pai --algorithm p256
cf ca csr --key matter-pai --subject "CN=certfab Dev Matter PAI,1.3.6.1.4.1.37244.2.1=FFF1" \
  --out "$dir/ca/matter-pai.csr"
cf ca sign --issuer-key matter-paa --issuer-cert "$dir/ca/matter-paa.pem" \
  --csr "$dir/ca/matter-pai.csr" --validity 10y --path-len 0 --out "$dir/ca/matter-pai.pem"
cf ca import --key matter-pai --cert "$dir/ca/matter-pai.pem"

make_issuing2
make_signer

echo "dev line ready: $dir/certfab.yaml"
