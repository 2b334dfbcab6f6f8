#!/usr/bin/env bash
# Installs what certfab's dev line and tests need on a Debian/Ubuntu host, when missing:
# SoftHSM2 (the development token), OpenSC (pkcs11-tool), OpenSSL (independent checks), and for
# the simulated line Python 3 with `cryptography` (station-scripts/) and socat (PTY pairs).
set -euo pipefail
missing=()
command -v softhsm2-util >/dev/null 2>&1 || missing+=(softhsm2)
command -v pkcs11-tool >/dev/null 2>&1 || missing+=(opensc)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v socat >/dev/null 2>&1 || missing+=(socat)
python3 -c 'import cryptography' >/dev/null 2>&1 || missing+=(python3 python3-cryptography)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The Python that runs the tests and station-scripts (python3 on PATH, which may be a pyenv
# interpreter that Debian's python3-cryptography does not reach) needs cryptography, and
# jwcrypto for tests/manifest.rs's independent JWS check.
if ! python3 -c 'import cryptography, jwcrypto' >/dev/null 2>&1; then
  python3 -m pip install --quiet cryptography jwcrypto
fi
# botocore (AWS's SDK service models) for tests/export_aws.rs, which validates the AWS IoT
# request bodies certfab exports against AWS's own API model.
if ! python3 -c 'import botocore' >/dev/null 2>&1; then
  python3 -m pip install --quiet botocore
fi
# parliament (AWS IAM policy auditor with AWS's action/resource database) lints the IoT
# policies certfab exports.
if ! python3 -c 'import parliament' >/dev/null 2>&1; then
  python3 -m pip install --quiet parliament
fi
# For tests/export_other.rs, each platform's own tooling: the Azure DPS service SDK's models
# (msrest), a JSON Schema validator (Hono and Peridio shapes), and
# Microchip's manifest verifier pytrustplatform with python-jose, Nordic's nrfcloud-utils (installed without its
# dev-kit USB dependencies, which its manifest module does not import); a JDK for Java's
# X500Principal (Hono's auth-id): java runs tests/java/Rfc2253.java from source, which needs
# the JDK's compiler (javac is the sign of it), not only a JRE.
if ! python3 -c 'import msrest, provisioningserviceclient, jsonschema, jose' >/dev/null 2>&1; then
  python3 -m pip install --quiet msrest azure-iothub-provisioningserviceclient jsonschema \
    python-jose
fi
if ! python3 -c 'import pytrustplatform.manifest.manifest' >/dev/null 2>&1; then
  python3 -m pip install --quiet --no-deps pytrustplatform
fi
# Nordic's nrfcloud-utils: its onboarding CSV reader and writer (its modules used here need
# only requests and coloredlogs; --no-deps keeps it from replacing the cryptography in use).
if ! python3 -c 'import nrfcloud_utils.nrf_cloud_onboard' >/dev/null 2>&1; then
  python3 -m pip install --quiet requests coloredlogs
  python3 -m pip install --quiet --no-deps nrfcloud-utils
fi
if ! command -v javac >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq default-jdk-headless >/dev/null
fi
