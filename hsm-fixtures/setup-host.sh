#!/usr/bin/env bash
# Installs what certfab's dev line and tests need on a Debian/Ubuntu host, when missing:
# SoftHSM2 (the development token), OpenSC (pkcs11-tool), OpenSSL (independent checks), and for
# the simulated line Python 3 with `cryptography` (station-scripts/) and socat (PTY pairs); the
# test-only Python checkers go into a virtual environment under target/ (below).
set -euo pipefail
missing=()
command -v softhsm2-util >/dev/null 2>&1 || missing+=(softhsm2)
command -v pkcs11-tool >/dev/null 2>&1 || missing+=(opensc)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v socat >/dev/null 2>&1 || missing+=(socat)
python3 -c 'import cryptography' >/dev/null 2>&1 || missing+=(python3 python3-cryptography)
# The token matrix (docs/hsm-compat.md, dev-line.sh --token): a TPM 2.0 simulator (swtpm) with
# tpm2-pkcs11, its tpm2_ptool, the tpm2-tools (tpm2_flushcontext, tpm2_getcap) and the TSS's
# TCTI to swtpm's socket; p11-kit's server and client module (p11-kit-client.so); and for
# building kryoptic from its crate (hsm-fixtures/kryoptic.sh) OpenSSL's and SQLite's headers,
# libclang (bindgen) and pkg-config.
command -v swtpm >/dev/null 2>&1 || missing+=(swtpm swtpm-tools)
[ -f /usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so ] ||
  [ -f /usr/lib/aarch64-linux-gnu/pkcs11/libtpm2_pkcs11.so ] || missing+=(libtpm2-pkcs11-1)
command -v tpm2_ptool >/dev/null 2>&1 || missing+=(libtpm2-pkcs11-tools)
command -v tpm2_flushcontext >/dev/null 2>&1 || missing+=(tpm2-tools)
ldconfig -p | grep -q libtss2-tcti-swtpm.so || missing+=(libtss2-tcti-swtpm0)
# The TPM line's resource manager (as /dev/tpmrm0 on a real host) on a private D-Bus.
command -v tpm2-abrmd >/dev/null 2>&1 || missing+=(tpm2-abrmd)
ldconfig -p | grep -q libtss2-tcti-tabrmd.so || missing+=(libtss2-tcti-tabrmd0)
command -v dbus-daemon >/dev/null 2>&1 || missing+=(dbus-daemon)
command -v p11-kit >/dev/null 2>&1 || missing+=(p11-kit)
[ -f /usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so ] ||
  [ -f /usr/lib/aarch64-linux-gnu/pkcs11/p11-kit-client.so ] || missing+=(p11-kit-modules)
# The benchmarks (bench/, docs/performance.md): OpenSSL's pkcs11 engine for the `openssl ca`
# comparison in bench/batch-bench.py, and valgrind for bench/callgrind-batch.sh's instruction
# counts.
[ -f /usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so ] ||
  [ -f /usr/lib/aarch64-linux-gnu/engines-3/pkcs11.so ] || missing+=(libengine-pkcs11-openssl)
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
# The shells whose completion scripts certfab ships (tests/it/cli_habits.rs parses each with its
# own shell) and groff, which renders the man pages in the same test.
command -v zsh >/dev/null 2>&1 || missing+=(zsh)
command -v fish >/dev/null 2>&1 || missing+=(fish)
command -v groff >/dev/null 2>&1 || missing+=(groff-base)
# The central ledger's tests (tests/it/central_ledger.rs, docs/central-ledger.md) start their own
# PostgreSQL cluster from the distribution's server (initdb, pg_ctl, psql); runuser (util-linux)
# runs it as the postgres user the package creates, since CI runs as root.
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 ||
  missing+=(postgresql postgresql-client)
dpkg -s libssl-dev libsqlite3-dev libclang-dev pkg-config >/dev/null 2>&1 ||
  missing+=(libssl-dev libsqlite3-dev libclang-dev pkg-config)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The Python that runs station-scripts/ (python3 on PATH, which may be a pyenv interpreter that
# Debian's python3-cryptography does not reach) needs cryptography: the adapters are part of
# the product and run with the operator's python3.
if ! python3 -c 'import cryptography' >/dev/null 2>&1; then
  python3 -m pip install --quiet cryptography
fi
# The test-only checkers live in a virtual environment under target/ (target/pyenv, or under
# $CARGO_TARGET_DIR), never in the system interpreter; the tests run them with that
# environment's python3 (common::python() in tests/it/common/mod.rs). `cargo clean` removes it;
# running this script again makes it again.
repo=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-target}
case "$target" in /*) ;; *) target="$repo/$target" ;; esac
venv="$target/pyenv"
py="$venv/bin/python3"
if ! "$py" -c 'import sys' >/dev/null 2>&1; then
  # Missing, or made by an interpreter that is gone.
  rm -rf "$venv"
  mkdir -p "$target"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian's python3 makes virtual environments only with python3-venv.
    rm -rf "$venv"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
fi
# cryptography for the checkers' independent parses (CRLs, exports), jwcrypto for
# tests/it/manifest.rs's independent JWS check, jsonschema for the station events
# (tests/py/station_events.py) and the Hono and Peridio shapes.
if ! "$py" -c 'import cryptography, jwcrypto, jsonschema' >/dev/null 2>&1; then
  "$py" -m pip install --quiet cryptography jwcrypto jsonschema
fi
# botocore (AWS's SDK service models) for tests/it/export_aws.rs, which validates the AWS IoT
# request bodies certfab exports against AWS's own API model.
if ! "$py" -c 'import botocore' >/dev/null 2>&1; then
  "$py" -m pip install --quiet botocore
fi
# parliament (AWS IAM policy auditor with AWS's action/resource database) lints the IoT
# policies certfab exports.
if ! "$py" -c 'import parliament' >/dev/null 2>&1; then
  "$py" -m pip install --quiet parliament
fi
# For tests/it/export_other.rs, each platform's own tooling: the Azure DPS service SDK's models
# (msrest), and Microchip's manifest verifier pytrustplatform with python-jose, Nordic's
# nrfcloud-utils (installed without its dev-kit USB dependencies, which its manifest module
# does not import); a JDK for Java's X500Principal (Hono's auth-id): the tests compile
# tests/java/*.java once per run with javac, so the JDK's compiler is needed, not only a JRE.
if ! "$py" -c 'import msrest, provisioningserviceclient, jose' >/dev/null 2>&1; then
  "$py" -m pip install --quiet msrest azure-iothub-provisioningserviceclient python-jose
fi
if ! "$py" -c 'import pytrustplatform.manifest.manifest' >/dev/null 2>&1; then
  "$py" -m pip install --quiet --no-deps pytrustplatform
fi
# Nordic's nrfcloud-utils: its onboarding CSV reader and writer (its modules used here need
# only requests and coloredlogs; --no-deps keeps it from replacing the cryptography in use).
if ! "$py" -c 'import nrfcloud_utils.nrf_cloud_onboard' >/dev/null 2>&1; then
  "$py" -m pip install --quiet requests coloredlogs
  "$py" -m pip install --quiet --no-deps nrfcloud-utils
fi
if ! command -v javac >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq default-jdk-headless >/dev/null
fi
# kryoptic, the third PKCS#11 implementation of the matrix, built from its crate once and
# cached under ~/.cache/certfab (hsm-fixtures/kryoptic.sh says why these features).
"$(dirname "$0")/kryoptic.sh" >/dev/null
