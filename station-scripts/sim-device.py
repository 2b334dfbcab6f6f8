#!/usr/bin/env python3
"""A simulated production line of devices for certfab station mode.

A "line" is a directory:

    DIR/line.json                 queue order and line state
    DIR/devices/NAME/             the device's "flash":
        identity.json             what `identify` reports
        modem.json                the nRF91 dialect's IMEI, UUID, firmware
        device.json               faults and options fixed at make-line time
        state.json                lock bit, fault bookkeeping
        key.pem                   the device key (PKCS#8, unencrypted: it is a simulator)
        files/NAME                files stored by `install` (protocol v1)
        cmng/TAG_TYPE             credentials stored by AT%CMNG / AT%KEYGEN (nrf91 dialect)
        identity_key.pem          the simulated Nordic device identity key (COSE signatures)

Subcommands: make-line, serve, requeue, status (see --help of each). The station adapter protocol is
docs/station-protocol.md; the nRF91 AT dialect is docs/station-nrf91.md.

Every state file is replaced atomically (temporary file, fsync, rename, fsync of the
directory), so a simulator killed at any point resumes from a consistent line.
"""

import argparse
import base64
import datetime
import fcntl
import hashlib
import json
import os
import re
import secrets
import select
import socket
import sys
import tempfile
import termios
import time
import tty
import uuid

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import NameOID

ADAPTER_NAME = "sim-device/1.0"
CAPABILITIES = ["wait_device", "generate_csr", "read_back", "prove", "lock", "release"]
OPS = ("hello", "wait_device", "identify", "generate_csr", "install", "read_back", "prove",
       "lock", "release")
PROVE_PREFIX = b"certfab-prove/1\n"
MAX_LINE = 1 << 20
# A failed board is put back at the end of the queue until it has been in the fixture this
# many times (an operator retrying it); then it goes to the reject bin.
MAX_PRESENTATIONS = 3
GARBAGE = b"\x00\x1b[2J#@! not json\n"
FILE_KINDS = ("certificate", "chain", "private_key", "config", "ca")
ALGORITHMS = ("p256", "p384", "rsa2048")

# nrf91 dialect constants (values as the nRF9160 documentation shows them).
NRF91_FIRMWARE = "mfw_nrf9160_1.3.5"
NRF91_MODEL = "nRF9160-SICA"
NRF91_TAC = "35265610"            # type allocation code of the IMEI in Nordic's +CGSN example
CFUN_ACTIVE = (1, 2, 21)          # %CMNG write/delete and %KEYGEN are refused in these modes
CFUN_VALID = (0, 1, 2, 4, 20, 21, 30, 31, 40, 41, 44)
CME_INCORRECT_PARAMETERS = 50
CME_NOT_FOUND = 513
CME_NO_ACCESS = 514
CME_NOT_ALLOWED_ACTIVE = 518
CME_KEYGEN_FAILED = 523


def log(msg):
    """Diagnostics go to stderr only: in stdio mode stdout is the protocol link."""
    print(f"sim-device[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# Crash-safe storage


def atomic_write(path, data, mode=0o644):
    """Replaces `path` with `data`: a reader (or a restarted simulator) sees the old or the new
    content, never a torn one."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # The rename itself is only durable once the directory entry is on disk.
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_json(path, obj):
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path, default=None):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return default


def remove_durably(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# --------------------------------------------------------------------------------------------
# Faults


class Fault:
    """One fault from `make-line --fault NAME=SPEC`.

    once=True faults fire `count` times in total, recorded in the device's flash *before*
    they act, so a simulator killed by the fault (or by certfab) does not fire it again.
    once=False faults are properties of the board and apply every time.
    """

    def __init__(self, spec, kind, op=None, count=1, ms=0, code=None, other=None, once=True,
                 size=0, copy=False):
        self.spec = spec
        self.size = size
        self.copy = copy
        self.kind = kind
        self.op = op
        self.count = count
        self.ms = ms
        self.code = code
        self.other = other
        self.once = once


def _positive_int(text, what):
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"{what} must be an integer, not {text!r}") from None
    if n < 1:
        raise ValueError(f"{what} must be at least 1")
    return n


def _op(text):
    if text not in OPS:
        raise ValueError(f"unknown operation {text!r} (one of {', '.join(OPS)})")
    return text


def parse_fault(spec):
    parts = spec.split(":")
    kind = parts[0]
    if kind == "timeout" and len(parts) in (2, 3):
        count = _positive_int(parts[2], "COUNT") if len(parts) == 3 else 1
        return Fault(spec, kind, op=_op(parts[1]), count=count)
    if kind == "slow" and len(parts) == 3:
        ms = _positive_int(parts[2], "MS")
        return Fault(spec, kind, op=_op(parts[1]), ms=ms)
    if kind == "disconnect" and parts[1:] == ["after-install"]:
        return Fault(spec, kind, op="install")
    if kind == "garbage" and len(parts) == 2:
        return Fault(spec, kind, op=_op(parts[1]))
    if kind == "wrong-readback" and len(parts) == 1:
        return Fault(spec, kind, op="read_back")
    if kind == "bad-proof" and len(parts) == 1:
        return Fault(spec, kind, op="prove")
    if kind == "debug-unlocked" and len(parts) == 1:
        return Fault(spec, kind, op="identify", once=False)
    if kind == "reuse-key" and len(parts) == 2 and parts[1]:
        return Fault(spec, kind, op="generate_csr", other=parts[1], once=False)
    if kind == "flood" and len(parts) in (2, 3):
        mb = _positive_int(parts[2], "MB") if len(parts) == 3 else 200
        return Fault(spec, kind, op=_op(parts[1]), size=mb << 20)
    if kind == "strict-lock" and len(parts) == 1:
        return Fault(spec, kind, op="lock", once=False)
    if kind == "impostor" and len(parts) in (2, 3) and parts[1] and parts[2:] in ([], ["copy"]):
        return Fault(spec, kind, op="identify", other=parts[1], once=False,
                     copy=len(parts) == 3)
    if kind == "error" and len(parts) in (3, 4) and parts[2]:
        count = _positive_int(parts[3], "COUNT") if len(parts) == 4 else 1
        return Fault(spec, kind, op=_op(parts[1]), code=parts[2], count=count)
    raise ValueError(f"bad fault spec {spec!r}")


# --------------------------------------------------------------------------------------------
# Keys


def new_key(algorithm):
    if algorithm == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if algorithm == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(algorithm)


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def spki_der(public_key):
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def key_algorithm(key):
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"secp256r1": "p256", "secp384r1": "p384"}.get(key.curve.name, key.curve.name)
    if isinstance(key, rsa.RSAPrivateKey):
        return f"rsa{key.key_size}"
    return type(key).__name__


def digest_for(key):
    """SHA-384 for P-384, SHA-256 otherwise (the protocol's proof and CSR rules)."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1":
        return hashes.SHA384()
    return hashes.SHA256()


def sign(key, message):
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(digest_for(key)))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    raise ValueError("unsupported key type")


# --------------------------------------------------------------------------------------------
# The line and its devices


class Device:
    """One board: its flash is DIR/devices/NAME."""

    def __init__(self, line, name):
        self.line = line
        self.name = name
        self.dir = os.path.join(line.root, "devices", name)
        self.identity = read_json(os.path.join(self.dir, "identity.json"))
        if self.identity is None:
            raise SystemExit(f"device {name}: {self.dir}/identity.json is missing")
        self.modem = read_json(os.path.join(self.dir, "modem.json"), {})
        options = read_json(os.path.join(self.dir, "device.json"), {})
        self.no_key_report = bool(options.get("no_key_report", False))
        self.faults = [parse_fault(s) for s in options.get("faults", [])]
        self.state = read_json(os.path.join(self.dir, "state.json"),
                               {"locked": False, "fired": {}})

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def save_state(self):
        write_json(self.path("state.json"), self.state)

    @property
    def locked(self):
        return bool(self.state.get("locked"))

    # The device key ----------------------------------------------------------------------

    def key(self):
        try:
            with open(self.path("key.pem"), "rb") as f:
                return serialization.load_pem_private_key(f.read(), password=None)
        except FileNotFoundError:
            return None

    def store_key_pem(self, pem):
        atomic_write(self.path("key.pem"), pem, mode=0o600)

    # Faults ------------------------------------------------------------------------------

    def fault_fires(self, index, fault):
        """Whether `fault` acts on this request; records it first (see Fault)."""
        key = f"{index}:{fault.spec}"
        fired = self.state.setdefault("fired", {})
        if fault.once and fired.get(key, 0) >= fault.count:
            return False
        fired[key] = fired.get(key, 0) + 1
        self.save_state()
        log(f"{self.name}: fault {fault.spec} fires ({fired[key]}"
            f"{'/' + str(fault.count) if fault.once else ''})")
        return True

    def faults_for(self, op, kinds):
        return [(i, f) for i, f in enumerate(self.faults) if f.op == op and f.kind in kinds]

    def first_firing(self, op, kinds):
        for i, f in self.faults_for(op, kinds):
            if self.fault_fires(i, f):
                return f
        return None

    def has_fault(self, kind):
        return next((f for f in self.faults if f.kind == kind), None)


class Line:
    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.path = os.path.join(self.root, "line.json")
        self.state = read_json(self.path)
        if self.state is None:
            raise SystemExit(f"{root}: not a line (no line.json); create one with make-line")
        self._devices = {}

    def save(self):
        write_json(self.path, self.state)

    def device(self, name):
        if name not in self._devices:
            self._devices[name] = Device(self, name)
        return self._devices[name]

    def names(self):
        return list(self.state["order"])

    def record(self, name):
        return self.state["devices"].setdefault(name, {"presented": 0, "results": []})

    def current(self):
        name = self.state.get("current")
        return self.device(name) if name else None

    def present_next(self):
        """Puts the next queued board into the fixture; None when the queue is empty."""
        if self.state.get("current"):
            return self.current()
        if not self.state["queue"]:
            return None
        name = self.state["queue"].pop(0)
        self.state["current"] = name
        self.record(name)["presented"] += 1
        self.save()
        log(f"{name} is in the fixture (presentation {self.record(name)['presented']})")
        return self.device(name)

    def release(self, result, message):
        name = self.state.get("current")
        if not name:
            log("release with no device in the fixture: nothing to do")
            return
        rec = self.record(name)
        rec["results"].append({"result": result, "message": message, "at": now_iso()})
        if result == "pass":
            self.state["done"].append(name)
            where = "done"
        elif rec["presented"] < MAX_PRESENTATIONS:
            self.state["queue"].append(name)
            where = "back in the queue"
        else:
            self.state["rejects"].append(name)
            where = "rejects"
        self.state["current"] = None
        self.save()
        log(f"{name} released ({result}): {where}")


def acquire_lock(line):
    """One `serve` per line. certfab kills an exec adapter before it starts the next one, so
    the lock is normally free at once; wait a little for the old process to die."""
    fd = os.open(os.path.join(line.root, ".serve.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + 10
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{line.root}: another sim-device serve holds the line")
            time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# Outcome of one request


class Outcome:
    """What goes back on the link: `flood` bytes of log lines (a flooding adapter), then
    `lines` (each ends with its terminator), then, when `disconnect` is set, the link is
    dropped."""

    def __init__(self, lines=(), disconnect=False, flood=0):
        self.lines = list(lines)
        self.disconnect = disconnect
        self.flood = flood

    def chunks(self):
        if self.flood:
            # 1 KB log lines, 64 per write, generated as they are written (never held).
            line = V1Dialect.encode({"v": 1, "log": "flood " + "x" * 990, "level": "info"})
            burst = line * 64
            for _ in range(self.flood // len(burst) + 1):
                yield burst
        yield from self.lines


class ProtocolError(Exception):
    def __init__(self, code, message, retry=False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry = retry


# --------------------------------------------------------------------------------------------
# Protocol v1 dialect


class LineFramer:
    """Splits the byte stream into LF-terminated lines of at most MAX_LINE bytes. An overlong
    line is dropped and reported as None, so the caller can answer bad_request."""

    def __init__(self):
        self.buf = bytearray()
        self.overlong = False

    def push(self, data):
        self.buf += data
        out = []
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                if len(self.buf) > MAX_LINE:
                    self.buf.clear()
                    self.overlong = True
                return out
            line = bytes(self.buf[:i])
            del self.buf[:i + 1]
            if self.overlong or len(line) > MAX_LINE:
                self.overlong = False
                out.append(None)
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            out.append(line)


class V1Dialect:
    def __init__(self, line, args):
        self.line = line
        self.delay = args.delay_ms / 1000.0
        self.log_lines = args.log_lines
        self.key_types = [t for t in args.key_types.split(",") if t] \
            if args.key_types is not None else None
        self.reply_lost = False

    def framer(self):
        return LineFramer()

    # Replies -------------------------------------------------------------------------------

    @staticmethod
    def encode(obj):
        return (json.dumps(obj, separators=(",", ":")) + "\n").encode()

    def ok(self, rid, result):
        return self.encode({"v": 1, "id": rid, "ok": True, **result})

    def error(self, rid, code, message, retry=False):
        return self.encode({"v": 1, "id": rid, "ok": False,
                            "error": {"code": code, "message": message, "retry": retry}})

    def log_line(self, text, level="info"):
        return self.encode({"v": 1, "log": text, "level": level})

    # Dispatch ------------------------------------------------------------------------------

    def handle(self, raw):
        if raw is None:
            return Outcome([self.error(None, "bad_request", f"line over {MAX_LINE} bytes")])
        if not raw.strip():
            return Outcome()
        try:
            req = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            log(f"malformed request: {raw[:80]!r}")
            return Outcome([self.error(None, "bad_request", "request is not JSON")])
        if not isinstance(req, dict):
            return Outcome([self.error(None, "bad_request", "request is not a JSON object")])
        rid = req.get("id")
        if not isinstance(rid, int) or isinstance(rid, bool):
            return Outcome([self.error(None, "bad_request", "request has no integer id")])
        if req.get("v") != 1:
            return Outcome([self.error(rid, "bad_request", "unsupported protocol version")])
        op = req.get("op")
        handler = getattr(self, "op_" + op, None) if isinstance(op, str) and op in OPS else None
        if handler is None:
            return Outcome([self.error(rid, "unsupported", f"unknown operation {op!r}")])
        # Faults act on the board in the fixture, whatever the operation.
        device = self.line.current()
        if device is None and op not in ("hello", "wait_device", "release"):
            return Outcome([self.error(rid, "no_device", "no device in the fixture")])
        return self.run(rid, op, req, handler, device)

    def run(self, rid, op, req, handler, device):
        """Applies the device's faults around the real operation."""
        if device is not None and device.first_firing(op, ("timeout",)):
            log(f"{device.name}: dropping {op} request {rid} (timeout fault)")
            return Outcome()
        if op != "hello" and self.delay:
            time.sleep(self.delay)  # simulated device time (flash writes, key generation)
        flood = device.first_firing(op, ("flood",)) if device is not None else None
        if flood:
            log(f"{device.name}: {flood.size >> 20} MB of log lines before the {op} reply")
        outcome = self.answer(rid, op, req, handler, device)
        if flood:
            outcome.flood = flood.size
        return outcome

    def answer(self, rid, op, req, handler, device):
        if device is not None:
            slow = device.first_firing(op, ("slow",))
            if slow:
                time.sleep(slow.ms / 1000.0)
            err = device.first_firing(op, ("error",))
            if err:
                return Outcome([self.error(rid, err.code, f"simulated {err.code} fault",
                                           retry=err.code == "busy")])
        # garbage: the operation runs, its reply is lost in line noise. Decided first so
        # that faults which alter the reply (wrong-readback, bad-proof) are not spent on a
        # reply nobody will read.
        self.reply_lost = device is not None and bool(device.first_firing(op, ("garbage",)))
        extra = []
        try:
            result = handler(req, device, extra)
            reply, succeeded = self.ok(rid, result), True
        except ProtocolError as e:
            reply, succeeded = self.error(rid, e.code, e.message, e.retry), False
        if succeeded and op == "install" and device.first_firing(op, ("disconnect",)):
            log(f"{device.name}: install done, dropping the link without a reply")
            return Outcome(disconnect=True)
        if self.reply_lost:
            return Outcome([GARBAGE])
        return Outcome((extra if self.log_lines else []) + [reply])

    # Operations ----------------------------------------------------------------------------

    def op_hello(self, req, device, extra):
        versions = req.get("protocol", [1])
        if not isinstance(versions, list) or 1 not in versions:
            raise ProtocolError("bad_request", f"no common protocol version in {versions!r}")
        hello = {"protocol": 1, "adapter": ADAPTER_NAME, "capabilities": CAPABILITIES}
        if self.key_types is not None:
            hello["key_types"] = self.key_types
        return hello

    def op_wait_device(self, req, device, extra):
        device = self.line.present_next()
        if device is None:
            return {"present": False, "end": True}
        return {"present": True}

    def op_identify(self, req, device, extra):
        impostor = device.has_fault("impostor")
        if impostor:
            return self.impersonate(device, impostor)
        ident = dict(device.identity)
        security = dict(ident.get("security", {}))
        if device.has_fault("debug-unlocked"):
            device.first_firing("identify", ("debug-unlocked",))
            security["debug"] = "unlocked"
        if device.locked:
            security["key_locked"] = True
        ident["security"] = security
        key = device.key()
        if key is not None and not device.no_key_report:
            ident["key"] = {"spki": base64.b64encode(spki_der(key.public_key())).decode()}
        ident["attributes"] = {"board_rev": "C"}
        return ident

    def impersonate(self, device, fault):
        """impostor fault: the board reports another board's identity and public key (and with
        `copy`, holds a copy of its stored files) but has only a key of its own."""
        other = self.line.device(fault.other)
        ident = dict(other.identity)
        ident["attributes"] = {"board_rev": "C"}
        if device.key() is None:
            device.store_key_pem(key_pem(new_key("p256")))
        theirs = other.key()
        if theirs is not None:
            ident["key"] = {"spki": base64.b64encode(spki_der(theirs.public_key())).decode()}
        if fault.copy and os.path.isdir(other.path("files")):
            os.makedirs(device.path("files"), exist_ok=True)
            for fn in os.listdir(other.path("files")):
                if not fn.startswith("."):
                    with open(other.path("files", fn), "rb") as f:
                        atomic_write(device.path("files", fn), f.read())
        log(f"{device.name}: claims to be {fault.other}")
        return ident

    def op_generate_csr(self, req, device, extra):
        if device.locked:
            raise ProtocolError("locked", "the key slot is locked")
        want_new = req.get("new_key")
        if not isinstance(want_new, bool):
            raise ProtocolError("bad_request", "new_key must be true or false")
        subject = req.get("subject") or {}
        if not isinstance(subject, dict):
            raise ProtocolError("bad_request", "subject must be an object")
        if want_new:
            algorithm = req.get("algorithm")
            makes = ALGORITHMS if self.key_types is None else self.key_types
            if algorithm not in makes:
                raise ProtocolError("bad_request", f"algorithm must be one of {makes}")
            reuse = device.has_fault("reuse-key")
            if reuse:
                device.first_firing("generate_csr", ("reuse-key",))
                key = self.borrowed_key(device, reuse.other, algorithm)
            else:
                key = new_key(algorithm)
                device.store_key_pem(key_pem(key))
            extra.append(self.log_line(f"generated a {key_algorithm(key)} key"))
            log(f"{device.name}: new {key_algorithm(key)} key")
        else:
            key = device.key()
            if key is None:
                raise ProtocolError("no_key", "the identity slot is empty")
        cn = subject.get("CN") or device.identity["device_id"]
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(cn))]))
               .sign(key, digest_for(key)))
        return {"csr": csr.public_bytes(serialization.Encoding.PEM).decode()}

    def borrowed_key(self, device, other_name, algorithm):
        """reuse-key fault: this board ends up with OTHER's key (a cloned or badly programmed
        secure element)."""
        if other_name not in self.line.state["devices"] and \
                not os.path.isdir(os.path.join(self.line.root, "devices", other_name)):
            raise ProtocolError("device_error", f"reuse-key: no device {other_name}")
        other = self.line.device(other_name)
        key = other.key()
        if key is None:
            key = new_key(algorithm)
            other.store_key_pem(key_pem(key))
        device.store_key_pem(key_pem(key))
        log(f"{device.name}: reusing {other_name}'s key")
        return key

    def op_install(self, req, device, extra):
        files = req.get("files")
        if not isinstance(files, list) or not files:
            raise ProtocolError("bad_request", "files must be a non-empty list")
        checked = []
        for f in files:
            if not isinstance(f, dict):
                raise ProtocolError("bad_request", "each file must be an object")
            name, kind = f.get("name"), f.get("kind")
            content, digest = f.get("content"), f.get("sha256")
            if not isinstance(name, str) or not valid_file_name(name):
                raise ProtocolError("bad_request", f"bad file name {name!r}")
            if kind not in FILE_KINDS:
                raise ProtocolError("bad_request", f"{name}: unknown kind {kind!r}")
            if not isinstance(content, str) or not isinstance(digest, str):
                raise ProtocolError("bad_request", f"{name}: content and sha256 are required")
            data = content.encode("utf-8")
            if sha256_hex(data) != digest.lower():
                raise ProtocolError("verify_failed", f"{name}: SHA-256 mismatch", retry=True)
            checked.append((name, kind, data))
        if device.locked:
            raise ProtocolError("locked", "the device is locked")

        # The key the certificate must match: a private_key in this install replaces the
        # slot's key (host keygen), else the key already in the slot.
        key = device.key()
        new_key_pem = None
        for name, kind, data in checked:
            if kind == "private_key":
                try:
                    key = serialization.load_pem_private_key(data, password=None)
                except (ValueError, TypeError) as e:
                    raise ProtocolError("device_error", f"{name}: not a PKCS#8 key: {e}")
                new_key_pem = data
        for name, kind, data in checked:
            if kind != "certificate":
                continue
            try:
                cert = x509.load_pem_x509_certificate(data)
            except ValueError as e:
                raise ProtocolError("device_error", f"{name}: not a PEM certificate: {e}")
            matches = key is not None and \
                spki_der(cert.public_key()) == spki_der(key.public_key())
            log(f"{device.name}: {name} {'matches' if matches else 'does NOT match'} my key")
            if not matches:
                raise ProtocolError("device_error", "certificate does not match my key")

        os.makedirs(device.path("files"), exist_ok=True)
        for name, kind, data in checked:
            atomic_write(device.path("files", name), data)
            extra.append(self.log_line(f"stored {name} ({len(data)} bytes)"))
        if new_key_pem is not None:
            device.store_key_pem(new_key_pem)
        log(f"{device.name}: installed {', '.join(n for n, _, _ in checked)}")
        return {"installed": [n for n, _, _ in checked]}

    def op_read_back(self, req, device, extra):
        names = req.get("names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ProtocolError("bad_request", "names must be a list of strings")
        out = {}
        for name in names:
            if not valid_file_name(name):
                continue
            try:
                with open(device.path("files", name), "rb") as f:
                    out[name] = sha256_hex(f.read())
            except FileNotFoundError:
                pass
        if out and not self.reply_lost and \
                device.first_firing("read_back", ("wrong-readback",)):
            first = next(n for n in names if n in out)
            out[first] = flip_hex_digit(out[first])
        return {"files": out}

    def op_prove(self, req, device, extra):
        nonce_b64 = req.get("nonce")
        try:
            nonce = base64.b64decode(nonce_b64, validate=True)
        except (TypeError, ValueError):
            raise ProtocolError("bad_request", "nonce must be base64") from None
        key = device.key()
        if key is None:
            raise ProtocolError("device_error", "no key in the identity slot")
        message = PROVE_PREFIX + nonce
        if not self.reply_lost and device.first_firing("prove", ("bad-proof",)):
            message = b"certfab-prove/0\n" + nonce  # a signature over the wrong message
        return {"signature": base64.b64encode(sign(key, message)).decode()}

    def op_lock(self, req, device, extra):
        if device.locked and device.has_fault("strict-lock"):
            raise ProtocolError("locked", "already locked: the lock bits can be set only once")
        device.state["locked"] = True
        device.save_state()
        log(f"{device.name}: locked")
        return {"locked": True}

    def op_release(self, req, device, extra):
        result = req.get("result")
        if result not in ("pass", "fail"):
            raise ProtocolError("bad_request", "result must be pass or fail")
        message = req.get("message", "")
        self.line.release(result, message if isinstance(message, str) else str(message))
        return {}


def valid_file_name(name):
    return bool(name) and "/" not in name and ".." not in name and "\\" not in name \
        and "\x00" not in name and not name.startswith(".")


def flip_hex_digit(digest):
    c = digest[0]
    return ("1" if c == "0" else "0") + digest[1:]


# --------------------------------------------------------------------------------------------
# nRF91 AT dialect


class AtFramer:
    """Splits the stream into AT command lines the way Nordic's at_host does: CR or LF ends a
    command only outside double quotes, so a PEM inside AT%CMNG may carry its newlines."""

    def __init__(self):
        self.buf = bytearray()
        self.in_quotes = False

    def push(self, data):
        out = []
        for b in data:
            if not self.in_quotes and b in (0x0D, 0x0A):
                if self.buf.strip():
                    out.append(bytes(self.buf))
                self.buf.clear()
                continue
            if b == 0x22:
                self.in_quotes = not self.in_quotes
            if len(self.buf) < MAX_LINE:
                self.buf.append(b)
        return out


def split_at_params(text):
    """Splits AT parameters on commas outside quotes: [(value, quoted), ...]."""
    params, cur, quoted, in_q, i = [], [], False, False, 0
    while i < len(text):
        c = text[i]
        if c == '"':
            in_q = not in_q
            quoted = True
        elif c == "," and not in_q:
            params.append(("".join(cur) if quoted else "".join(cur).strip(), quoted))
            cur, quoted = [], False
        elif in_q or c not in " \t":
            cur.append(c)
        i += 1
    if in_q:
        raise ValueError("unterminated string")
    params.append(("".join(cur) if quoted else "".join(cur).strip(), quoted))
    return params


def b64url(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def cbor_head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    for add, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | add]) + n.to_bytes(size, "big")
    raise ValueError("CBOR integer too large")


def cbor_int(n):
    return cbor_head(0, n) if n >= 0 else cbor_head(1, -1 - n)


def cbor_bstr(b):
    return cbor_head(2, len(b)) + b


def cbor_tstr(s):
    b = s.encode()
    return cbor_head(3, len(b)) + b


def cbor_array(items):
    return cbor_head(4, len(items)) + b"".join(items)


def cbor_map(pairs):
    return cbor_head(5, len(pairs)) + b"".join(k + v for k, v in pairs)


def cbor_tag(tag, item):
    return cbor_head(6, tag) + item


def cose_sign1(identity_key, payload):
    """A COSE_Sign1 (RFC 9052) shaped like the modem's: protected {alg: ES256}, unprotected
    {kid: CBOR(-2)} (nRF Cloud's parser reads -2 as "identity_key"), ES256 signature as raw
    r||s. Signed here with the board's simulated identity key, not Nordic's."""
    protected = cbor_bstr(cbor_map([(cbor_int(1), cbor_int(-7))]))
    unprotected = cbor_map([(cbor_int(4), cbor_bstr(cbor_int(-2)))])
    payload_b = cbor_bstr(payload)
    to_sign = cbor_array([cbor_tstr("Signature1"), protected, cbor_bstr(b""), payload_b])
    r, s = utils.decode_dss_signature(identity_key.sign(to_sign, ec.ECDSA(hashes.SHA256())))
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return cbor_tag(18, cbor_array([protected, unprotected, payload_b, cbor_bstr(signature)]))


class AtError(Exception):
    def __init__(self, cme):
        super().__init__(cme)
        self.cme = cme  # None: plain ERROR


# Which protocol v1 operation an AT command stands for, so one set of fault specs
# (timeout:generate_csr, error:install:518, ...) works in both dialects.
def at_op(body):
    upper = body.upper()
    if upper.startswith("#SIMNEXT"):
        return "release" if "=" in upper else "wait_device"
    if upper.startswith(("+CGSN", "%XMODEMUUID", "+CGMR", "+CGMM", "+CGMI")):
        return "identify"
    if upper.startswith("%KEYGEN"):
        return "generate_csr"
    if upper.startswith("%CMNG=0"):
        return "install"
    if upper.startswith("%CMNG=1"):
        return "read_back"
    return None


class Nrf91Dialect:
    """Each board is an nRF9160 modem answering AT commands over its UART (echo off, CR LF
    line endings, responses as in Nordic's AT command reference)."""

    def __init__(self, line, args):
        self.line = line
        self.delay = args.delay_ms / 1000.0
        self.keygen_delay = args.keygen_ms / 1000.0
        self.initial_cfun = args.nrf91_cfun
        self.modems = {}  # board name -> {"cfun": n, "cmee": n}: modem RAM, lost on restart

    def framer(self):
        return AtFramer()

    def modem(self, device):
        return self.modems.setdefault(device.name, {"cfun": self.initial_cfun, "cmee": 0})

    @staticmethod
    def lines(*texts):
        return [t.encode("utf-8", "surrogateescape") + b"\r\n" for t in texts]

    def handle(self, raw):
        text = raw.decode("utf-8", "surrogateescape").strip()
        if text[:2].upper() != "AT":
            log(f"not an AT command: {text[:60]!r}")
            return Outcome(self.lines("ERROR"))
        body = text[2:]
        op = at_op(body)
        if body.upper().startswith("#SIMNEXT"):
            device = self.line.current()
        else:
            # The modem on the port is the board in the fixture; plugging the next one in
            # happens by itself when the last one was taken out.
            device = self.line.present_next()
            if device is None:
                log(f"{text[:40]!r}: no modem on the port (the line is finished)")
                return Outcome()
        if device is not None and op is not None:
            if device.first_firing(op, ("timeout",)):
                log(f"{device.name}: dropping {text[:40]!r} (timeout fault)")
                return Outcome()
        if self.delay:
            time.sleep(self.delay)
        if device is not None and op is not None:
            slow = device.first_firing(op, ("slow",))
            if slow:
                time.sleep(slow.ms / 1000.0)
            err = device.first_firing(op, ("error",))
            if err:
                return Outcome(self.error_lines(device, int(err.code)
                                                if err.code.isdigit() else None))
        try:
            out = self.execute(body, device) + ["OK"]
        except AtError as e:
            out = self.error_lines(device, e.cme, as_text=True)
        if device is not None and op is not None:
            if op == "install" and out[-1] == "OK" and \
                    device.first_firing(op, ("disconnect",)):
                log(f"{device.name}: credential written, dropping the link without a reply")
                return Outcome(disconnect=True)
            if op == "read_back" and device.first_firing(op, ("wrong-readback",)):
                out = self.corrupt_first_hash(out)
            if device.first_firing(op, ("garbage",)):
                # One line garbled on the wire; the final result code still arrives.
                noise = GARBAGE.rstrip(b"\n").decode("latin-1")
                out = [noise] + out[1:] if len(out) > 1 else [noise] + out
        return Outcome(self.lines(*out))

    def error_lines(self, device, cme, as_text=False):
        lines = ["ERROR"] if cme is None or device is None or \
            not self.modem(device)["cmee"] else [f"+CME ERROR: {cme}"]
        return lines if as_text else self.lines(*lines)

    @staticmethod
    def corrupt_first_hash(out):
        for i, line in enumerate(out):
            m = re.match(r'(%CMNG: \d+,\d+,")([0-9A-F])(.*)', line)
            if m:
                out[i] = m.group(1) + ("1" if m.group(2) == "0" else "0") + m.group(3)
                break
        return out

    # Commands ------------------------------------------------------------------------------

    def execute(self, body, device):
        upper = body.upper()
        if body == "":
            return []
        if upper.startswith("#SIMNEXT"):
            return self.simnext(body)
        m = self.modem(device)
        info = device.modem
        if upper in ("+CGSN", "+CGSN=0"):
            return [info["imei"]]
        if upper == "+CGSN=1":
            return [f'+CGSN: "{info["imei"]}"']
        if upper == "%XMODEMUUID":
            return [f"%XMODEMUUID: {info['uuid']}"]
        if upper == "+CGMR":
            return [info.get("firmware", NRF91_FIRMWARE)]
        if upper == "+CGMM":
            return [info.get("model", NRF91_MODEL)]
        if upper == "+CGMI":
            return ["Nordic Semiconductor ASA"]
        if upper == "+CFUN?":
            return [f"+CFUN: {m['cfun']}"]
        if upper.startswith("+CFUN="):
            mode = self.int_param(body[6:])
            if mode not in CFUN_VALID:
                raise AtError(CME_INCORRECT_PARAMETERS)
            m["cfun"] = mode
            log(f"{device.name}: CFUN={mode}")
            return []
        if upper == "+CMEE?":
            return [f"+CMEE: {m['cmee']}"]
        if upper.startswith("+CMEE="):
            mode = self.int_param(body[6:])
            if mode not in (0, 1):
                raise AtError(None)
            m["cmee"] = mode
            return []
        if upper.startswith("%KEYGEN="):
            return self.keygen(device, m, split_params(body[8:]))
        if upper.startswith("%CMNG="):
            return self.cmng(device, m, split_params(body[6:]))
        raise AtError(None)

    @staticmethod
    def int_param(text):
        try:
            return int(text.strip())
        except ValueError:
            raise AtError(CME_INCORRECT_PARAMETERS) from None

    def simnext(self, body):
        """AT#SIMNEXT (simulator only): `AT#SIMNEXT` puts the next board in the fixture
        unless one is there (#SIMNEXT: 1,"<IMEI>"; #SIMNEXT: 0 when the line is finished);
        `AT#SIMNEXT=<pass|fail>` takes the board out with that result."""
        if "=" in body:
            params = split_params(body.split("=", 1)[1])
            result = params[0][0].lower() if params else ""
            if result not in ("pass", "fail"):
                raise AtError(CME_INCORRECT_PARAMETERS)
            self.line.release(result, "AT#SIMNEXT")
            return []
        device = self.line.present_next()
        if device is None:
            return ["#SIMNEXT: 0"]
        return [f'#SIMNEXT: 1,"{device.modem["imei"]}"']

    # %KEYGEN ---------------------------------------------------------------------------------

    def keygen(self, device, m, params):
        """%KEYGEN=<sec_tag>,<key_type>[,<response_content>][,<attributes>][,<key_usage>]"""
        if len(params) < 2 or params[0][1] or params[1][1]:
            raise AtError(CME_INCORRECT_PARAMETERS)
        tag = self.tag_param(params[0][0])
        key_type = self.int_param(params[1][0])
        content = self.int_param(params[2][0]) if len(params) > 2 and params[2][0] else 0
        attributes = params[3][0] if len(params) > 3 else ""
        if key_type != 2 or content not in (0, 1):
            raise AtError(CME_NO_ACCESS)  # the simulator makes client keys only
        if m["cfun"] in CFUN_ACTIVE:
            raise AtError(CME_NOT_ALLOWED_ACTIVE)
        subject = self.csr_subject(attributes, device.modem["uuid"])
        if self.keygen_delay:
            time.sleep(self.keygen_delay)
        reuse = device.has_fault("reuse-key")
        if reuse:
            device.first_firing("generate_csr", ("reuse-key",))
            other = self.line.device(reuse.other)
            key = other.key() or ec.generate_private_key(ec.SECP256R1())
            other.store_key_pem(key_pem(key))
        else:
            key = ec.generate_private_key(ec.SECP256R1())  # the modem makes P-256 keys only
        pem = key_pem(key)
        self.store_cred(device, tag, 2, pem)
        device.store_key_pem(pem)
        log(f"{device.name}: %KEYGEN made a P-256 key in sec_tag {tag}")
        if content == 0:
            body = (x509.CertificateSigningRequestBuilder()
                    .subject_name(subject)
                    .add_extension(x509.KeyUsage(
                        digital_signature=True, content_commitment=True, key_encipherment=True,
                        data_encipherment=False, key_agreement=True, key_cert_sign=False,
                        crl_sign=False, encipher_only=False, decipher_only=False),
                        critical=False)
                    .sign(key, hashes.SHA256())
                    .public_bytes(serialization.Encoding.DER))
            message_type = 9  # CSR_msg_v1
        else:
            body = spki_der(key.public_key())
            message_type = 8  # pubkey_msg_v2
        # COSE payload as nRF Cloud's modem_credentials_parser reads it: [message type,
        # device UUID, bstr(CBOR(sec_tag)), SHA-256 of the body, nonce], self-described CBOR.
        payload = cbor_tag(55799, cbor_array([
            cbor_int(message_type),
            cbor_bstr(uuid.UUID(device.modem["uuid"]).bytes),
            cbor_bstr(cbor_int(tag)),
            cbor_bstr(hashlib.sha256(body).digest()),
            cbor_bstr(secrets.token_bytes(16)),
        ]))
        cose = cose_sign1(self.identity_key(device), payload)
        return [f'%KEYGEN: "{b64url(body)}.{b64url(cose)}"']

    @staticmethod
    def csr_subject(attributes, modem_uuid):
        """Without attributes the modem names the CSR after its UUID (CN=<uuid>); with them,
        "CN=...,O=..." becomes the subject."""
        if not attributes:
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, modem_uuid)])
        oids = {"C": NameOID.COUNTRY_NAME, "ST": NameOID.STATE_OR_PROVINCE_NAME,
                "L": NameOID.LOCALITY_NAME, "O": NameOID.ORGANIZATION_NAME,
                "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "CN": NameOID.COMMON_NAME}
        attrs = []
        for part in attributes.split(","):
            k, sep, v = part.partition("=")
            if not sep or k.strip() not in oids or not v:
                raise AtError(CME_INCORRECT_PARAMETERS)
            try:
                attrs.append(x509.NameAttribute(oids[k.strip()], v))
            except ValueError:
                raise AtError(CME_INCORRECT_PARAMETERS) from None
        return x509.Name(attrs)

    @staticmethod
    def identity_key(device):
        path = device.path("identity_key.pem")
        try:
            with open(path, "rb") as f:
                return serialization.load_pem_private_key(f.read(), password=None)
        except FileNotFoundError:
            key = ec.generate_private_key(ec.SECP256R1())
            atomic_write(path, key_pem(key), mode=0o600)
            return key

    # %CMNG -----------------------------------------------------------------------------------

    @staticmethod
    def tag_param(text):
        try:
            tag = int(text)
        except ValueError:
            raise AtError(CME_INCORRECT_PARAMETERS) from None
        if not 0 <= tag <= 0xFFFFFFFF:
            raise AtError(CME_INCORRECT_PARAMETERS)
        return tag

    @staticmethod
    def cred_path(device, tag, cred_type):
        return device.path("cmng", f"{tag}_{cred_type}")

    def store_cred(self, device, tag, cred_type, data):
        os.makedirs(device.path("cmng"), exist_ok=True)
        atomic_write(self.cred_path(device, tag, cred_type), data,
                     mode=0o600 if cred_type == 2 else 0o644)

    @staticmethod
    def creds(device):
        try:
            names = os.listdir(device.path("cmng"))
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            m = re.fullmatch(r"(\d+)_(\d+)", n)
            if m:
                out.append((int(m.group(1)), int(m.group(2))))
        return sorted(out)

    def cmng(self, device, m, params):
        """%CMNG=<opcode>[,<sec_tag>[,<type>[,<content>[,<passwd>]]]]"""
        opcode = self.int_param(params[0][0]) if params and not params[0][1] else None
        if opcode == 1:  # list
            tag = self.tag_param(params[1][0]) if len(params) > 1 and params[1][0] else None
            ctype = self.int_param(params[2][0]) if len(params) > 2 and params[2][0] else None
            out = []
            for t, ty in self.creds(device):
                if (tag is None or t == tag) and (ctype is None or ty == ctype):
                    with open(self.cred_path(device, t, ty), "rb") as f:
                        digest = sha256_hex(f.read()).upper()
                    out.append(f'%CMNG: {t},{ty},"{digest}"')
            return out
        if opcode not in (0, 2, 3) or len(params) < 3:
            raise AtError(CME_INCORRECT_PARAMETERS)
        tag = self.tag_param(params[1][0])
        ctype = self.int_param(params[2][0])
        if not 0 <= ctype <= 11:
            raise AtError(CME_INCORRECT_PARAMETERS)
        path = self.cred_path(device, tag, ctype)
        if opcode == 0:  # write
            if len(params) < 4 or not params[3][1] or not params[3][0]:
                raise AtError(CME_INCORRECT_PARAMETERS)
            if m["cfun"] in CFUN_ACTIVE:
                raise AtError(CME_NOT_ALLOWED_ACTIVE)
            data = params[3][0].encode("utf-8", "surrogateescape")
            self.store_cred(device, tag, ctype, data)
            log(f"{device.name}: %CMNG wrote sec_tag {tag} type {ctype} ({len(data)} bytes)")
            if ctype == 2:
                try:
                    serialization.load_pem_private_key(data, password=None)
                    device.store_key_pem(data)
                except (ValueError, TypeError):
                    log(f"{device.name}: type 2 content is not a PKCS#8 key")
            if ctype == 1:
                self.check_cert(device, tag, data)
            return []
        if not os.path.exists(path):
            raise AtError(CME_NOT_FOUND)
        if opcode == 2:  # read; a private key never leaves the modem
            if ctype == 2:
                raise AtError(CME_NO_ACCESS)
            with open(path, "rb") as f:
                data = f.read()
            text = data.decode("utf-8", "surrogateescape")
            return [f'%CMNG: {tag},{ctype},"{sha256_hex(data).upper()}","{text}"']
        if m["cfun"] in CFUN_ACTIVE:  # delete
            raise AtError(CME_NOT_ALLOWED_ACTIVE)
        remove_durably(path)
        if ctype == 2:
            remove_durably(device.path("key.pem"))
        log(f"{device.name}: %CMNG deleted sec_tag {tag} type {ctype}")
        return []

    def check_cert(self, device, tag, data):
        """The modem stores what it is given; a mismatch only shows at the TLS handshake.
        Log it so a test run shows it."""
        key_path = self.cred_path(device, tag, 2)
        try:
            cert = x509.load_pem_x509_certificates(data)[0]
            with open(key_path, "rb") as f:
                key = serialization.load_pem_private_key(f.read(), password=None)
        except (ValueError, FileNotFoundError, IndexError) as e:
            log(f"{device.name}: cannot compare the client certificate with the key: {e}")
            return
        same = spki_der(cert.public_key()) == spki_der(key.public_key())
        log(f"{device.name}: client certificate in sec_tag {tag} "
            f"{'matches' if same else 'does NOT match'} the key")


def split_params(text):
    try:
        return split_at_params(text)
    except ValueError:
        raise AtError(CME_INCORRECT_PARAMETERS) from None


# --------------------------------------------------------------------------------------------
# Transports


class LinkClosed(Exception):
    pass


def serve_stream(read_chunk, write, dialect):
    """Serves one link until it closes ("closed") or a fault drops it ("disconnect")."""
    framer = dialect.framer()
    while True:
        data = read_chunk()
        if not data:
            return "closed"
        for raw in framer.push(data):
            outcome = dialect.handle(raw)
            for chunk in outcome.chunks():
                write(chunk)
            if outcome.disconnect:
                return "disconnect"


def write_all_fd(fd, data):
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except (BrokenPipeError, OSError) as e:
            raise LinkClosed(str(e)) from None
        view = view[n:]


def serve_stdio(dialect):
    def read_chunk():
        try:
            return os.read(0, 65536)
        except OSError:
            return b""

    try:
        result = serve_stream(read_chunk, lambda d: write_all_fd(1, d), dialect)
    except LinkClosed:
        result = "closed"
    if result == "disconnect":
        # Like a board losing power mid-exchange: nothing more is written, the process ends.
        os._exit(0)
    log("stdin closed; exiting")


def open_tty(path, baud):
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    speed = getattr(termios, f"B{baud}", None)
    if speed is None:
        raise SystemExit(f"unsupported baud rate {baud}")
    attrs[4] = attrs[5] = speed                        # ispeed, ospeed
    attrs[2] |= termios.CLOCAL | termios.CREAD          # ignore modem lines
    attrs[2] &= ~getattr(termios, "CRTSCTS", 0)         # no hardware flow control
    attrs[0] &= ~(termios.IXON | termios.IXOFF)         # no software flow control
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return fd


def serve_pty(dialect, path, baud):
    """A serial port has no connection: the simulator keeps the port open and answers what
    arrives. If the port goes away (socat restarted), it waits for it and reopens it."""
    while True:
        try:
            fd = open_tty(path, baud)
        except OSError as e:
            log(f"waiting for {path}: {e.strerror}")
            time.sleep(1)
            continue
        log(f"serving {path} at {baud} baud")

        def read_chunk():
            while True:
                try:
                    return os.read(fd, 65536)
                except OSError:
                    return b""

        def write(data):
            write_all_fd(fd, data)

        try:
            result = serve_stream(read_chunk, write, dialect)
        except LinkClosed:
            result = "closed"
        os.close(fd)
        if result == "disconnect":
            # There is nothing to hang up on a UART: the board just stops answering; the
            # next request is answered normally.
            log("disconnect fault on a serial port: the reply was not sent")
            continue
        time.sleep(0.5)


def serve_tcp(dialect, spec):
    host, sep, port = spec.rpartition(":")
    if not sep:
        raise SystemExit(f"--tcp wants HOST:PORT, not {spec!r}")
    host = host.strip("[]") or "127.0.0.1"
    srv = socket.create_server((host, int(port)),
                               family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    bound = srv.getsockname()
    log(f"listening on {bound[0]}:{bound[1]}")
    while True:
        conn, peer = srv.accept()
        log(f"connection from {peer[0]}:{peer[1]}")
        with conn:
            def read_chunk():
                try:
                    return conn.recv(65536)
                except OSError:
                    return b""

            def write(data):
                try:
                    conn.sendall(data)
                except OSError as e:
                    raise LinkClosed(str(e)) from None

            try:
                result = serve_stream(read_chunk, write, dialect)
            except LinkClosed:
                result = "closed"
        log(f"connection {'dropped (disconnect fault)' if result == 'disconnect' else 'closed'}")


# --------------------------------------------------------------------------------------------
# Subcommands


def luhn_check_digit(payload):
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:  # the payload's rightmost digit is the one doubled
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def parse_fault_args(items, names):
    faults = {}
    for item in items:
        name, sep, specs = item.partition("=")
        if not sep or not specs:
            raise SystemExit(f"--fault wants NAME=SPEC[,SPEC...], not {item!r}")
        if name not in names:
            raise SystemExit(f"--fault {item}: no device {name} on this line")
        for spec in specs.split(","):
            try:
                fault = parse_fault(spec.strip())
            except ValueError as e:
                raise SystemExit(f"--fault {item}: {e}")
            if fault.kind in ("reuse-key", "impostor") and fault.other not in names:
                raise SystemExit(f"--fault {item}: no device {fault.other} on this line")
            faults.setdefault(name, []).append(fault.spec)
    return faults


def cmd_make_line(args):
    root = os.path.abspath(args.dir)
    if os.path.exists(os.path.join(root, "line.json")):
        raise SystemExit(f"{root} already holds a line")
    if args.count < 1:
        raise SystemExit("--count must be at least 1")
    width = max(4, len(str(args.count)))
    names = [f"{args.prefix}{i:0{width}d}" for i in range(1, args.count + 1)]
    faults = parse_fault_args(args.fault, set(names))
    os.makedirs(os.path.join(root, "devices"), exist_ok=True)
    serials = set()
    for name in names:
        d = os.path.join(root, "devices", name)
        os.makedirs(d, exist_ok=True)
        write_json(os.path.join(d, "identity.json"), {
            "device_id": name,
            "hw_serial": secrets.token_hex(4).upper(),
            # 0x02 in the first octet: a locally administered unicast address.
            "mac": "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5)),
            "chip_uid": secrets.token_hex(16),
            "firmware": "1.4.2",
            "security": {"debug": "locked", "secure_boot": True},
        })
        while True:
            serial = f"{secrets.randbelow(10 ** 6):06d}"
            if serial not in serials:
                serials.add(serial)
                break
        imei = NRF91_TAC + serial
        write_json(os.path.join(d, "modem.json"), {
            "imei": imei + luhn_check_digit(imei),
            "uuid": str(uuid.uuid4()),
            "firmware": NRF91_FIRMWARE,
            "model": NRF91_MODEL,
        })
        write_json(os.path.join(d, "device.json"), {
            "faults": faults.get(name, []),
            "no_key_report": args.no_key_report,
        })
        write_json(os.path.join(d, "state.json"), {"locked": False, "fired": {}})
    write_json(os.path.join(root, "line.json"), {
        "format": "certfab-sim-line/1",
        "created_at": now_iso(),
        "order": names,
        "queue": list(names),
        "current": None,
        "done": [],
        "rejects": [],
        "devices": {n: {"presented": 0, "results": []} for n in names},
    })
    print(f"line {root}: {len(names)} devices {names[0]} .. {names[-1]}"
          f"{', no key report' if args.no_key_report else ''}")
    for name, specs in sorted(faults.items()):
        print(f"  {name}: {', '.join(specs)}")
    print(f"serve it:  {sys.argv[0]} serve {root}")


def device_status(line, name):
    d = line.device(name)
    rec = line.record(name)
    st = line.state
    if st.get("current") == name:
        where = "current"
    elif name in st["done"]:
        where = "done"
    elif name in st["rejects"]:
        where = "rejected"
    elif name in st["queue"]:
        where = "queued"
    else:
        where = "unknown"
    files = {}
    if os.path.isdir(d.path("files")):
        for fn in sorted(os.listdir(d.path("files"))):
            if not fn.startswith("."):
                with open(d.path("files", fn), "rb") as f:
                    files[fn] = sha256_hex(f.read())
    creds = {}
    for tag, ctype in Nrf91Dialect.creds(d):
        with open(Nrf91Dialect.cred_path(d, tag, ctype), "rb") as f:
            creds[f"{tag},{ctype}"] = sha256_hex(f.read()).upper()
    key = d.key()
    fired = d.state.get("fired", {})
    return {
        "name": name,
        "state": where,
        "presented": rec["presented"],
        "results": rec["results"],
        "passed": sum(r["result"] == "pass" for r in rec["results"]),
        "failed": sum(r["result"] == "fail" for r in rec["results"]),
        "locked": d.locked,
        "key": None if key is None else {
            "algorithm": key_algorithm(key),
            "spki_sha256": sha256_hex(spki_der(key.public_key())),
        },
        "files": files,
        "cmng": creds,
        "faults": [{"spec": f.spec,
                    "fired": fired.get(f"{i}:{f.spec}", 0),
                    "limit": f.count if f.once else None}
                   for i, f in enumerate(d.faults)],
        "imei": d.modem.get("imei"),
    }


def cmd_status(args):
    line = Line(args.dir)
    st = line.state
    devices = [device_status(line, n) for n in line.names()]
    summary = {
        "line": line.root,
        "devices": len(devices),
        "queued": len(st["queue"]),
        "current": st.get("current"),
        "done": len(st["done"]),
        "rejected": len(st["rejects"]),
        "finished": not st["queue"] and not st.get("current"),
    }
    if args.json:
        print(json.dumps({"summary": summary, "devices": devices}, indent=2))
        return
    print(f"line {summary['line']}: {summary['devices']} devices, {summary['done']} done, "
          f"{summary['rejected']} rejected, {summary['queued']} queued, current "
          f"{summary['current'] or '-'}{' (finished)' if summary['finished'] else ''}")
    print(f"{'DEVICE':<12} {'STATE':<9} {'SEEN':>4} {'PASS':>4} {'FAIL':>4} {'LOCK':<4} KEY")
    for d in devices:
        key = "-" if d["key"] is None else \
            f"{d['key']['algorithm']} {d['key']['spki_sha256'][:16]}"
        print(f"{d['name']:<12} {d['state']:<9} {d['presented']:>4} {d['passed']:>4} "
              f"{d['failed']:>4} {'yes' if d['locked'] else 'no':<4} {key}")
        for fn, digest in d["files"].items():
            print(f"    file {fn}: {digest}")
        for slot, digest in d["cmng"].items():
            print(f"    cmng {slot}: {digest}")
        for f in d["faults"]:
            limit = "persistent" if f["limit"] is None else f"of {f['limit']}"
            print(f"    fault {f['spec']}: fired {f['fired']} {limit}")
        if d["results"]:
            last = d["results"][-1]
            print(f"    last release: {last['result']} {last['message']!r} at {last['at']}")


def cmd_requeue(args):
    """Puts boards back on the line (a re-run of the lot, or a field return): every board, or
    the named ones, goes back to the queue in line order with its flash as it is; --wipe also
    erases a board's flash (key, files, credentials, lock bit) as a reflash would."""
    line = Line(args.dir)
    acquire_lock(line)
    st = line.state
    names = args.name or line.names()
    unknown = [n for n in names if n not in st["order"]]
    wipe = set(args.wipe)
    unknown += [n for n in wipe if n not in st["order"]]
    if unknown:
        raise SystemExit(f"{line.root}: no such device: {', '.join(sorted(set(unknown)))}")
    chosen = set(names) | wipe
    for n in chosen:
        for bucket in ("done", "rejects", "queue"):
            st[bucket] = [x for x in st[bucket] if x != n]
        if st.get("current") == n:
            st["current"] = None
        rec = line.record(n)
        rec["presented"] = 0
    for n in sorted(wipe):
        d = line.device(n)
        remove_durably(d.path("key.pem"))
        for sub in ("files", "cmng"):
            if os.path.isdir(d.path(sub)):
                for fn in os.listdir(d.path(sub)):
                    remove_durably(d.path(sub, fn))
        d.state["locked"] = False
        d.save_state()
    # Queue order is line order; boards still queued keep their place ahead of requeued ones.
    st["queue"] += [n for n in st["order"] if n in chosen]
    line.save()
    print(f"line {line.root}: {len(chosen)} device(s) back in the queue"
          f"{', wiped: ' + ', '.join(sorted(wipe)) if wipe else ''}")


def cmd_serve(args):
    line = Line(args.dir)
    acquire_lock(line)
    dialect = Nrf91Dialect(line, args) if args.dialect == "nrf91" else V1Dialect(line, args)
    if args.dialect == "nrf91":
        skipped = {f.spec for n in line.names() for f in line.device(n).faults
                   if f.kind in ("bad-proof", "debug-unlocked")}
        if skipped:
            log(f"faults without meaning in the nrf91 dialect: {', '.join(sorted(skipped))}")
    log(f"serving line {line.root} ({args.dialect}); current "
        f"{line.state.get('current') or '-'}, {len(line.state['queue'])} queued")
    try:
        if args.pty:
            serve_pty(dialect, args.pty, args.baud)
        elif args.tcp:
            serve_tcp(dialect, args.tcp)
        else:
            serve_stdio(dialect)
    except KeyboardInterrupt:
        log("interrupted")


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Simulated line of devices for certfab station mode "
                    "(station adapter protocol v1, or nRF91 AT commands).")
    sub = p.add_subparsers(dest="command", required=True)

    mk = sub.add_parser("make-line", help="create a line directory with N devices")
    mk.add_argument("dir")
    mk.add_argument("--count", type=int, required=True)
    mk.add_argument("--prefix", default="SIM-")
    mk.add_argument("--fault", action="append", default=[], metavar="NAME=SPEC[,SPEC...]",
                    help="timeout:OP[:COUNT], slow:OP:MS, disconnect:after-install, "
                         "garbage:OP, wrong-readback, bad-proof, debug-unlocked, "
                         "reuse-key:OTHER, error:OP:CODE[:COUNT], flood:OP[:MB], strict-lock, "
                         "impostor:OTHER[:copy]; repeatable")
    mk.add_argument("--no-key-report", action="store_true",
                    help="identify never reports key.spki")
    mk.set_defaults(func=cmd_make_line)

    sv = sub.add_parser("serve", help="serve the line (stdin/stdout by default)")
    sv.add_argument("dir")
    where = sv.add_mutually_exclusive_group()
    where.add_argument("--stdio", action="store_true", help="stdin/stdout (the default)")
    where.add_argument("--pty", metavar="PATH", help="a tty, e.g. one end of a socat pty pair")
    where.add_argument("--tcp", metavar="HOST:PORT", help="a TCP server, one client at a time")
    sv.add_argument("--baud", type=int, default=115200, help="tty speed (default 115200)")
    sv.add_argument("--dialect", choices=("v1", "nrf91"), default="v1")
    sv.add_argument("--delay-ms", type=int, default=0,
                    help="simulated device time added to every request but hello")
    sv.add_argument("--keygen-ms", type=int, default=0,
                    help="nrf91: extra time %%KEYGEN takes (a real modem needs seconds)")
    sv.add_argument("--nrf91-cfun", type=int, default=1, choices=CFUN_VALID,
                    help="nrf91: functional mode a modem starts in (default 1, online)")
    sv.add_argument("--key-types", metavar="LIST",
                    help="v1: advertise these key types in hello (comma-separated, e.g. "
                         "p384,rsa2048) and make no others; default: all, not advertised")
    sv.add_argument("--log-lines", action="store_true",
                    help="v1: also send protocol log lines ({\"v\":1,\"log\":...})")
    sv.set_defaults(func=cmd_serve)

    rq = sub.add_parser("requeue", help="put boards back on the line (re-run, field return)")
    rq.add_argument("dir")
    rq.add_argument("name", nargs="*", help="boards to requeue (default: all)")
    rq.add_argument("--wipe", action="append", default=[], metavar="NAME",
                    help="also erase this board's flash: key, files, credentials, lock; repeatable")
    rq.set_defaults(func=cmd_requeue)

    stp = sub.add_parser("status", help="what happened on the line")
    stp.add_argument("dir")
    stp.add_argument("--json", action="store_true")
    stp.set_defaults(func=cmd_status)

    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
