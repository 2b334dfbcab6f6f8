#!/usr/bin/env bash
# Builds a self-contained development line under DIR (safe to re-run):
#   hsm-fixtures/dev-line.sh [--token softhsm|tpm2|kryoptic|p11-kit] DIR
#
#   DIR/certfab.yaml       site config pointing at all of it
#   DIR/pin, DIR/so-pin    user and security-officer PINs, mode 0600, random per line
#   DIR/ca/root.pem        dev root CA        (P-384 key generated inside the token)
#   DIR/ca/issuing.pem     dev issuing CA     (P-256 key generated inside the token)
#   DIR/ca/issuing-2.pem   second issuing CA  (P-256, 5 years; the next CA in rollover tests)
#   DIR/ca/matter-paa.pem, DIR/ca/matter-pai.pem   test Matter PAA and PAI (VID FFF1)
#   DIR/ca/manifest-signer.pem  end-entity certificate (under the dev root) of the P-256 key
#                          `manifest-signer` that signs manifests and audit checkpoints
#   DIR/token-kind         which token the line is on (a line stays on the token it was made on)
#   DIR/token-notes        what the token could not do and what the line used instead (if any)
#   DIR/stop               ends the processes the line started (tpm2, p11-kit); safe to re-run
#
# The token (default softhsm; docs/hsm-compat.md has the matrix):
#   softhsm   SoftHSM2; DIR/softhsm2.conf keeps its store in DIR/tokens (never the system one)
#   tpm2      a TPM 2.0 through tpm2-pkcs11, backed by swtpm: TPM state in DIR/tpm, the swtpm
#             server on the Unix socket DIR/swtpm.sock (control: DIR/swtpm.sock.ctrl, pid:
#             DIR/swtpm.pid), the tpm2-pkcs11 store in DIR/tpm2-store, and in front of the TPM
#             the resource manager tpm2-abrmd (pid DIR/abrmd.pid) on a D-Bus of the line's own
#             (DIR/dbus.sock, pid DIR/dbus.pid), as /dev/tpmrm0 is on a real host. With
#             DEV_LINE_TPM_RM=none the TPM is used raw (3 loaded objects, nothing flushed after
#             a dead process: DIR/tpm-flush does that; docs/hsm-compat.md)
#   kryoptic  kryoptic (Rust soft token) built by hsm-fixtures/kryoptic.sh; DIR/kryoptic.conf,
#             its store DIR/kryoptic.sql
#   p11-kit   a SoftHSM2 token (as softhsm) exported by `p11-kit server` on the Unix socket
#             DIR/p11-kit.sock (pid DIR/p11-kit.pid); certfab loads p11-kit-client.so, so
#             every signature is made in another process, as with a network HSM
# A server that is not running when the script is re-run (after a reboot, or DIR/stop) is
# started again. Every certfab command of the ceremony runs against the chosen token.
# A line made before the manifest signer existed is upgraded in place (key, certificate and
# the signer: section are added; its CAs and ledger are kept).
# PINs are passed to certfab as file: sources, never on a command line.
# Set CERTFAB=/path/to/certfab to use a given binary; otherwise it is built with cargo.
set -euo pipefail

usage() {
  echo "usage: $0 [--token softhsm|tpm2|kryoptic|p11-kit] DIR" >&2
  exit 2
}
token=""
while [ $# -gt 0 ]; do
  case "$1" in
    --token) [ $# -ge 2 ] || usage; token=$2; shift 2 ;;
    --token=*) token=${1#--token=}; shift ;;
    -h|--help) usage ;;
    -*) echo "dev-line: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
[ $# -eq 1 ] || usage
case "${token:-softhsm}" in
  softhsm|tpm2|kryoptic|p11-kit) ;;
  *) echo "dev-line: unknown token '$token' (softhsm, tpm2, kryoptic or p11-kit)" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
mkdir -p "$1"
dir=$(cd "$1" && pwd)

if [ -z "${CERTFAB:-}" ]; then
  (cd "$repo" && cargo build --quiet)
  CERTFAB="$repo/target/debug/certfab"
fi

# A line stays on the token it was made on; a line without DIR/token-kind predates the
# matrix and is a SoftHSM line.
if [ -f "$dir/certfab.yaml" ]; then
  made_on=softhsm
  [ -f "$dir/token-kind" ] && made_on=$(cat "$dir/token-kind")
  if [ -n "$token" ] && [ "$token" != "$made_on" ]; then
    echo "dev-line: $dir is a $made_on line; use another DIR for --token $token" >&2
    exit 2
  fi
  token=$made_on
fi
token=${token:-softhsm}
# The TPM line's resource manager: abrmd (default) or none; a line keeps the one it was made with.
tpm_rm=${DEV_LINE_TPM_RM:-abrmd}
[ -f "$dir/tpm-rm" ] && tpm_rm=$(cat "$dir/tpm-rm")
case "$tpm_rm" in
  abrmd|none) ;;
  *) echo "dev-line: DEV_LINE_TPM_RM=$tpm_rm: use abrmd or none" >&2; exit 2 ;;
esac

# First existing file among the arguments, or nothing.
first_file() {
  for f in "$@"; do
    if [ -f "$f" ]; then echo "$f"; return; fi
  done
}
softhsm_module=$(first_file /usr/lib/softhsm/libsofthsm2.so \
  /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
  /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so /usr/local/lib/softhsm/libsofthsm2.so)
need() {
  if [ -z "$1" ]; then
    echo "dev-line: $2 is not installed (hsm-fixtures/setup-host.sh installs it)" >&2
    exit 2
  fi
}
case "$token" in
  softhsm)
    need "$softhsm_module" "SoftHSM2 (softhsm2)"
    module=$softhsm_module
    ;;
  tpm2)
    module=$(first_file /usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so \
      /usr/lib/aarch64-linux-gnu/pkcs11/libtpm2_pkcs11.so /usr/lib/pkcs11/libtpm2_pkcs11.so \
      /usr/local/lib/pkcs11/libtpm2_pkcs11.so)
    need "$module" "tpm2-pkcs11 (libtpm2-pkcs11-1)"
    command -v swtpm >/dev/null 2>&1 || need "" "swtpm (swtpm, swtpm-tools)"
    command -v tpm2_getrandom >/dev/null 2>&1 || need "" "tpm2-tools"
    if [ "$tpm_rm" = abrmd ]; then
      command -v tpm2-abrmd >/dev/null 2>&1 || need "" "tpm2-abrmd (tpm2-abrmd, libtss2-tcti-tabrmd0)"
      command -v dbus-daemon >/dev/null 2>&1 || need "" "dbus-daemon"
    fi
    ;;
  kryoptic)
    module=$("$here/kryoptic.sh")
    ;;
  p11-kit)
    need "$softhsm_module" "SoftHSM2 (softhsm2)"
    module=$(first_file /usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so \
      /usr/lib/aarch64-linux-gnu/pkcs11/p11-kit-client.so /usr/lib/pkcs11/p11-kit-client.so)
    need "$module" "p11-kit-client.so (p11-kit-modules)"
    command -v p11-kit >/dev/null 2>&1 || need "" "p11-kit"
    ;;
esac

cf() { "$CERTFAB" --config "$dir/certfab.yaml" "$@"; }
export SOFTHSM2_CONF="$dir/softhsm2.conf"

# Whether the pid in pid file $1 is a live process named $2 (not a reused pid).
alive() {
  [ -f "$1" ] || return 1
  local pid
  pid=$(tr -dc 0-9 < "$1")
  # $2 is a glob: `p11-kit server` re-executes itself as p11-kit-server.
  # shellcheck disable=SC2053
  [ -n "$pid" ] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == $2 ]]
}

wait_for_socket() {
  for _ in $(seq 200); do
    [ -S "$1" ] && return 0
    sleep 0.05
  done
  echo "dev-line: $2 did not open $1 (log: $3)" >&2
  exit 4
}

# swtpm: a TPM 2.0 simulator on a Unix socket. Its TCTI (libtss2-tcti-swtpm) finds the
# control channel at SOCKET.ctrl. startup-clear sends TPM2_Startup, so a restarted swtpm
# starts with no transient objects loaded.
start_swtpm() {
  alive "$dir/swtpm.pid" swtpm && return 0
  mkdir -p "$dir/tpm"
  rm -f "$dir/swtpm.sock" "$dir/swtpm.sock.ctrl" "$dir/swtpm.pid"
  swtpm socket --tpm2 --tpmstate "dir=$dir/tpm" \
    --server "type=unixio,path=$dir/swtpm.sock" \
    --ctrl "type=unixio,path=$dir/swtpm.sock.ctrl" \
    --flags startup-clear,not-need-init --pid "file=$dir/swtpm.pid" \
    --log "file=$dir/swtpm.log,level=1" --daemon </dev/null >/dev/null 2>&1
  wait_for_socket "$dir/swtpm.sock" swtpm "$dir/swtpm.log"
}

# p11-kit server: exports the SoftHSM token over a Unix socket. It forks one process per
# client connection; DIR/stop ends those too.
start_p11kit() {
  alive "$dir/p11-kit.pid" 'p11-kit*' && return 0
  rm -f "$dir/p11-kit.sock" "$dir/p11-kit.pid"
  SOFTHSM2_CONF="$dir/softhsm2.conf" setsid p11-kit server --foreground \
    --provider "$softhsm_module" --name "$dir/p11-kit.sock" "pkcs11:token=certfab-dev" \
    </dev/null >"$dir/p11-kit.log" 2>&1 &
  echo $! > "$dir/p11-kit.pid"
  wait_for_socket "$dir/p11-kit.sock" "p11-kit server" "$dir/p11-kit.log"
}

# tpm2-abrmd, the TPM2 access broker and resource manager, on a private D-Bus session bus:
# it virtualises the TPM's 3 object slots (a command may use several keys, e.g. a batch's
# CA key and its manifest signer) and flushes what a client left loaded when it disconnects
# (a killed certfab), as the kernel's /dev/tpmrm0 does on a real host.
start_abrmd() {
  if ! alive "$dir/dbus.pid" dbus-daemon; then
    rm -f "$dir/dbus.sock" "$dir/dbus.pid"
    setsid dbus-daemon --session --nofork --nopidfile --address="unix:path=$dir/dbus.sock" \
      </dev/null >"$dir/dbus.log" 2>&1 &
    echo $! > "$dir/dbus.pid"
    wait_for_socket "$dir/dbus.sock" dbus-daemon "$dir/dbus.log"
  fi
  alive "$dir/abrmd.pid" tpm2-abrmd && return 0
  local root=()
  [ "$(id -u)" -ne 0 ] || root=(--allow-root)
  DBUS_SESSION_BUS_ADDRESS="unix:path=$dir/dbus.sock" setsid tpm2-abrmd --session "${root[@]}" \
    --flush-all --tcti="swtpm:path=$dir/swtpm.sock" </dev/null >"$dir/abrmd.log" 2>&1 &
  echo $! > "$dir/abrmd.pid"
  for _ in $(seq 200); do
    if DBUS_SESSION_BUS_ADDRESS="unix:path=$dir/dbus.sock" \
        TPM2TOOLS_TCTI="tabrmd:bus_type=session" tpm2_getrandom 1 >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.05
  done
  echo "dev-line: tpm2-abrmd did not come up (log: $dir/abrmd.log)" >&2
  exit 4
}

start_servers() {
  case "$token" in
    tpm2)
      start_swtpm
      if [ "$tpm_rm" = abrmd ]; then
        start_abrmd
      else
        write_tpm_flush
        "$dir/tpm-flush"
      fi
      ;;
    p11-kit) start_p11kit ;;
  esac
}

# DIR/stop ends what start_servers started (by the pids in their pid files, and a p11-kit
# server's per-connection children).
write_stop() {
  cat > "$dir/stop" <<'STOP'
#!/usr/bin/env bash
# Ends the processes this dev line started (made by hsm-fixtures/dev-line.sh; safe to re-run).
dir=$(cd "$(dirname "$0")" && pwd)
stop_pid() {
  local file=$1 name=$2 pid
  [ -f "$file" ] || return 0
  pid=$(tr -dc 0-9 < "$file")
  # $name is a glob: `p11-kit server` re-executes itself as p11-kit-server.
  # shellcheck disable=SC2053
  if [ -n "$pid" ] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == $name ]]; then
    for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do kill "$child" 2>/dev/null || true; done
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
      [ -d "/proc/$pid" ] || break
      sleep 0.05
    done
  fi
  rm -f "$file"
}
stop_pid "$dir/abrmd.pid" tpm2-abrmd
stop_pid "$dir/dbus.pid" dbus-daemon
stop_pid "$dir/swtpm.pid" swtpm
stop_pid "$dir/p11-kit.pid" 'p11-kit*'
STOP
  chmod 755 "$dir/stop"
}

# DIR/tpm-flush (tpm2 lines): flushes the transient objects and sessions a process left loaded
# in the TPM. Without a resource manager (tpm2-abrmd, or the kernel's /dev/tpmrm0 on a real
# host) nothing flushes what a killed process, or a failed C_GenerateKeyPair in tpm2-pkcs11,
# left behind, and the TPM holds only 3 loaded objects: every later C_Login then fails with
# CKR_GENERAL_ERROR ("out of memory for object contexts" on stderr). Run it after killing a
# certfab on purpose (docs/hsm-compat.md).
write_tpm_flush() {
  cat > "$dir/tpm-flush" <<'FLUSH'
#!/usr/bin/env bash
# Flushes what dead processes left loaded in this dev line's swtpm (made by dev-line.sh).
set -euo pipefail
dir=$(cd "$(dirname "$0")" && pwd)
export TPM2TOOLS_TCTI="swtpm:path=$dir/swtpm.sock"
tpm2_flushcontext --transient-object
tpm2_flushcontext --loaded-session
FLUSH
  chmod 755 "$dir/tpm-flush"
}

# Records what this token could not do and what the line used instead.
note() {
  echo "$*" >> "$dir/token-notes"
  echo "dev-line: note: $*" >&2
}

# `cf ca keygen` of KEY with ALG, or with FALLBACK when the token cannot make ALG (noted).
keygen() {
  local key=$1 alg=$2 fallback=${3:-} err
  if err=$(cf ca keygen --key "$key" --algorithm "$alg" 2>&1); then
    echo "$err"
    return 0
  fi
  if [ -z "$fallback" ]; then
    echo "$err" >&2
    return 1
  fi
  note "$token: cannot generate $alg key '$key' ($(echo "$err" | grep 'certfab:' | tail -1)); used $fallback"
  if [ -x "$dir/tpm-flush" ]; then "$dir/tpm-flush"; fi
  cf ca keygen --key "$key" --algorithm "$fallback"
}

# The manifest/audit signer: a key of its own (never a device CA key) with an end-entity
# certificate from the dev root (CA:FALSE, keyUsage digitalSignature only).
make_signer() {
  rm -f "$dir/ca/manifest-signer.csr" "$dir/ca/manifest-signer.pem.tmp"
  if ! cf ca csr --key manifest-signer --subject "CN=certfab Dev Manifest Signer,O=certfab development" \
      --out "$dir/ca/manifest-signer.csr" >/dev/null 2>&1; then
    keygen manifest-signer p256
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
    keygen issuing-ca-2 p256
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
  write_stop
  start_servers
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
if [ -x "$dir/stop" ]; then "$dir/stop"; fi
rm -rf "$dir/tokens" "$dir/ca" "$dir/tpm" "$dir/tpm2-store" "$dir/kryoptic.sql" \
  "$dir/token-notes" "$dir/certfab.yaml" "$dir/tpm-rm" "$dir/tpm-flush"
tpm_rm=${DEV_LINE_TPM_RM:-abrmd}
mkdir -p "$dir/ca"
echo "$token" > "$dir/token-kind"
if [ "$token" = tpm2 ]; then echo "$tpm_rm" > "$dir/tpm-rm"; fi
write_stop
umask 077
head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/pin"
head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/so-pin"
chmod 600 "$dir/pin" "$dir/so-pin"
case "$token" in
  softhsm|p11-kit)
    mkdir -p "$dir/tokens"
    cat > "$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
    ;;
  tpm2)
    mkdir -p "$dir/tpm2-store"
    ;;
  kryoptic)
    cat > "$dir/kryoptic.conf" <<CONF
[[slots]]
slot = 1
description = "certfab dev line"
dbtype = "sqlite"
dbargs = "$dir/kryoptic.sql"
CONF
    ;;
esac
umask 022

# The site config for MODULE with the pkcs11.env lines that token's module reads.
write_config() {
  local module=$1 env
  case "$2" in
    softhsm) env="    SOFTHSM2_CONF: $dir/softhsm2.conf" ;;
    tpm2)
      if [ "$tpm_rm" = abrmd ]; then
        env="    TPM2_PKCS11_TCTI: \"tabrmd:bus_type=session\"
    DBUS_SESSION_BUS_ADDRESS: \"unix:path=$dir/dbus.sock\""
      else
        env="    TPM2_PKCS11_TCTI: \"swtpm:path=$dir/swtpm.sock\""
      fi
      env="$env
    TPM2_PKCS11_STORE: $dir/tpm2-store" ;;
    kryoptic) env="    KRYOPTIC_CONF: $dir/kryoptic.conf" ;;
    p11-kit) env="    P11_KIT_SERVER_ADDRESS: \"unix:path=$dir/p11-kit.sock\"" ;;
  esac
  cat > "$dir/certfab.yaml.tmp" <<YAML
# certfab site config for a development line on $token (made by hsm-fixtures/dev-line.sh).
pkcs11:
  module: $module
  token: certfab-dev
  pin: file:pin
  env:
$env
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
  mv "$dir/certfab.yaml.tmp" "$dir/certfab.yaml"
}

if [ "$token" = p11-kit ]; then
  # The server exports an existing token: initialise it on SoftHSM itself, then switch the
  # site to the client module; everything after this signs through the server.
  write_config "$softhsm_module" softhsm
  cf hsm init-token --label certfab-dev --so-pin "file:$dir/so-pin" --pin "file:$dir/pin"
  start_servers
  write_config "$module" p11-kit
else
  start_servers
  write_config "$module" "$token"
  cf hsm init-token --label certfab-dev --so-pin "file:$dir/so-pin" --pin "file:$dir/pin"
fi

keygen root-ca p384 p256
cf ca selfsign --key root-ca --subject "CN=certfab Dev Root CA,O=certfab development" \
  --validity none --out "$dir/ca/root.pem"
cf ca import --key root-ca --cert "$dir/ca/root.pem"

keygen issuing-ca p256
cf ca csr --key issuing-ca --subject "CN=certfab Dev Issuing CA 1,O=certfab development" \
  --out "$dir/ca/issuing.csr"
cf ca sign --issuer-key root --csr "$dir/ca/issuing.csr" --validity none --path-len 0 \
  --out "$dir/ca/issuing.pem"
cf ca import --key issuing-ca --cert "$dir/ca/issuing.pem"

# Matter test PKI: PAA (no VID) and PAI for the test vendor id FFF1.
keygen matter-paa p256
cf ca selfsign --key matter-paa --subject "CN=certfab Dev Matter PAA" --validity 30y \
  --out "$dir/ca/matter-paa.pem"
keygen matter-pai p256
cf ca csr --key matter-pai --subject "CN=certfab Dev Matter PAI,1.3.6.1.4.1.37244.2.1=FFF1" \
  --out "$dir/ca/matter-pai.csr"
cf ca sign --issuer-key matter-paa --issuer-cert "$dir/ca/matter-paa.pem" \
  --csr "$dir/ca/matter-pai.csr" --validity 10y --path-len 0 --out "$dir/ca/matter-pai.pem"
cf ca import --key matter-pai --cert "$dir/ca/matter-pai.pem"

make_issuing2
make_signer

echo "dev line ready: $dir/certfab.yaml"
