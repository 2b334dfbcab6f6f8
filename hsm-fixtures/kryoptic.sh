#!/usr/bin/env bash
# Builds kryoptic (a PKCS#11 soft token written in Rust, https://crates.io/crates/kryoptic)
# from its published crate and prints the path of its module, libkryoptic_pkcs11.so.
#
#   hsm-fixtures/kryoptic.sh          build if not cached, print the module path
#   hsm-fixtures/kryoptic.sh --check  print the path if cached, exit 1 otherwise (no build)
#
# Why this build:
# - kryoptic's default features ("standard") include EdDSA, which needs OpenSSL >= 3.2 APIs
#   (the crate's `eddsa` feature turns on `ossl/ossl320`); Debian 12 has OpenSSL 3.0. The
#   `minimal` feature set (sqlite storage, AES, ECDSA/ECDH, SHA-1/2 + HMAC, RSA) builds and
#   links against the system libcrypto.so.3 (`dynamic`), which is all certfab needs.
# - The `ossl` crate makes its bindings with bindgen at build time: libclang-dev and
#   libssl-dev must be installed (setup-host.sh does that).
# - The crate ships its own Cargo.lock; it is built with --locked against that lock file.
# - The result is cached under ${CERTFAB_CACHE:-~/.cache/certfab}/kryoptic-VERSION-FEATURES/
#   and reused until the version or features change (the build costs ~2 minutes on 2 cores).
#   Set KRYOPTIC_MODULE=/path/to/libkryoptic_pkcs11.so to use another build instead.
set -euo pipefail

KRYOPTIC_VERSION=1.5.4
FEATURES="kryoptic-lib/minimal,kryoptic-lib/dynamic"

if [ -n "${KRYOPTIC_MODULE:-}" ]; then
  if [ ! -f "$KRYOPTIC_MODULE" ]; then
    echo "kryoptic.sh: KRYOPTIC_MODULE=$KRYOPTIC_MODULE does not exist" >&2
    exit 2
  fi
  echo "$KRYOPTIC_MODULE"
  exit 0
fi

here=$(cd "$(dirname "$0")" && pwd)
cache_root=${CERTFAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/certfab}
tag=$(printf '%s' "$FEATURES" | tr -c 'a-z0-9\n' '_')
cache="$cache_root/kryoptic-$KRYOPTIC_VERSION-$tag"
module="$cache/libkryoptic_pkcs11.so"

if [ -f "$module" ]; then
  echo "$module"
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  exit 1
fi

for tool in cargo python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "kryoptic.sh: $tool is needed" >&2; exit 2; }
done
mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 1. Fetch the published crate through an ordinary Cargo manifest that depends on it.
mkdir -p "$work/fetch"
cp "$here/kryoptic/Cargo.toml" "$work/fetch/Cargo.toml"
: > "$work/fetch/lib.rs"
src=$(cargo metadata --quiet --format-version 1 --manifest-path "$work/fetch/Cargo.toml" |
  python3 -c '
import json, os, sys
meta = json.load(sys.stdin)
want = sys.argv[1]
for p in meta["packages"]:
    if p["name"] == "kryoptic" and p["version"] == want:
        print(os.path.dirname(p["manifest_path"]))
        break
else:
    sys.exit("kryoptic " + want + " not in cargo metadata: does kryoptic/Cargo.toml pin it?")
' "$KRYOPTIC_VERSION")

# 2. Build the cdylib from a copy of that source with the crate's own lock file.
cp -r "$src" "$work/src"
echo "kryoptic.sh: building kryoptic $KRYOPTIC_VERSION ($FEATURES); this takes a few minutes" >&2
start=$(date +%s)
(cd "$work/src" && CARGO_TARGET_DIR="$work/target" nice -n 5 cargo build --quiet --release \
  --locked --no-default-features --features "$FEATURES")
echo "kryoptic.sh: built in $(( $(date +%s) - start ))s" >&2
install -m 0755 "$work/target/release/libkryoptic_pkcs11.so" "$module.tmp"
mv "$module.tmp" "$module"
echo "$module"
