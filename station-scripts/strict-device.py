#!/usr/bin/env python3
"""strict-device: a fixture of devices implementing station adapter protocol v1 strictly as
docs/station-protocol.md describes it, and nothing more.

It was written from that document alone (not from sim-device.py), so that certfab's tests can
run against an implementation that only knows what an adapter author knows. Where certfab sends
something the document does not allow, this adapter answers `bad_request` with a message that
starts "certfab broke protocol v1:" and says so on stderr, so a test fails loudly.

    strict-device.py init BENCH NAME... [--knob NAME:KEY=VALUE ...]
    strict-device.py serve BENCH [--tcp HOST:PORT] [--key-types p256,p384,rsa2048]
    strict-device.py again BENCH [NAME...] [--erase NAME ...]
    strict-device.py show BENCH

The whole bench (queue, the device in the fixture, every device's key, stored files and lock
bit) is one JSON document, BENCH/bench.json. Every request reads it, acts, and replaces it
atomically under an exclusive lock before the reply is written, so the adapter can be killed at
any moment (certfab kills an exec: adapter whenever it drops a link) and the next process
continues from what the devices really hold.

Knobs (per device, set at init): see KNOBS below.
"""

import argparse
import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import os
import socket
import sys
import tempfile
import time

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

NAME = "strict-device/1"
# docs: "Framing"
LINE_LIMIT = 1 << 20
# docs: "hello": key_types are p256, p384, rsa2048.
ALL_KEY_TYPES = ("p256", "p384", "rsa2048")
# docs: "install": the kinds of file.
KINDS = ("certificate", "chain", "private_key", "config", "ca")
# docs: "prove": the signed message starts with these 16 bytes.
PROVE_PREFIX = b"certfab-prove/1\n"
# A device that fails is put back in the queue until it has been presented this often.
PRESENTATIONS = 3

KNOBS = {
    # Store the files of the next N installs, then drop the link instead of replying.
    "lose_install_reply": int,
    # Do not answer the next N read_back requests.
    "mute_read_back": int,
    # Do not answer the next N prove requests; the retry must carry the same nonce.
    "mute_prove": int,
    # Answer the next N lock requests with device_error.
    "refuse_lock": int,
    # Take this long over every install (milliseconds).
    "install_ms": int,
    # Claim to be another device: report its identity and public key, keep our own key.
    "impostor_of": str,
    # With impostor_of: also carry a copy of that device's stored files.
    "copy_files": bool,
}


def say(text):
    print(f"strict-device[{os.getpid()}]: {text}", file=sys.stderr, flush=True)


class Violation(Exception):
    """certfab sent something docs/station-protocol.md does not allow."""


class Refusal(Exception):
    """An error reply (docs: "Error codes")."""

    def __init__(self, code, message, retry=False):
        super().__init__(message)
        self.code, self.message, self.retry = code, message, retry


class DropLink(Exception):
    """Leave without replying (a knob): the link is lost."""


class Mute(Exception):
    """Do not reply, keep the link (a knob): the request times out."""


# ---------------------------------------------------------------------------------------------
# The bench document


@contextlib.contextmanager
def bench(path, write=True):
    """The bench, locked for one request; saved atomically on the way out."""
    with open(os.path.join(path, ".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(os.path.join(path, "bench.json"), encoding="utf-8") as f:
            doc = json.load(f)
        yield doc
        if write:
            save(path, doc)


def save(path, doc):
    fd, tmp = tempfile.mkstemp(dir=path, prefix=".bench.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(path, "bench.json"))
    dirfd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def spend(board, knob):
    """Uses one of a counted knob's occurrences; true if there was one left."""
    left = board["knobs"].get(knob, 0)
    if left > 0:
        board["knobs"][knob] = left - 1
        return True
    return False


# ---------------------------------------------------------------------------------------------
# Keys


def load_key(pem):
    return serialization.load_pem_private_key(pem.encode(), password=None) if pem else None


def make_key(kind):
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem_of(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def spki_of(public_key):
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def hash_for(key):
    # docs: "prove": P-256 with SHA-256, P-384 with SHA-384, RSA PKCS#1 v1.5 with SHA-256.
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size == 384:
        return hashes.SHA384()
    return hashes.SHA256()


def signature(key, message):
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(message, ec.ECDSA(hash_for(key)))


def digest(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Operations: each takes (session, doc, board, request) and returns the result members.


class Session:
    """One link: what the document says certfab must do on it."""

    def __init__(self, path, key_types):
        self.path = path
        self.key_types = key_types
        self.greeted = False
        self.last_id = None


def fixture(doc):
    name = doc.get("current")
    return (name, doc["boards"][name]) if name else (None, None)


def need_device(doc):
    name, board = fixture(doc)
    if board is None:
        raise Refusal("no_device", "no device in the fixture")
    return name, board


def op_hello(s, doc, req):
    versions = req.get("protocol")
    if not isinstance(versions, list) or 1 not in versions:
        raise Violation(f"hello.protocol must list 1, got {versions!r}")
    return {"protocol": 1, "adapter": NAME,
            "capabilities": ["wait_device", "generate_csr", "read_back", "prove", "lock",
                             "release"],
            "key_types": s.key_types}


def op_wait_device(s, doc, req):
    if not isinstance(req.get("timeout_ms"), int):
        raise Violation("wait_device.timeout_ms must be an integer")
    if doc.get("current"):
        # Still in the fixture (docs: a device stays there until release).
        return {"present": True}
    if not doc["queue"]:
        return {"present": False, "end": True}
    name = doc["queue"].pop(0)
    board = doc["boards"][name]
    board["presented"] += 1
    board["checked"] = {}
    doc["current"] = name
    say(f"{name} in the fixture (presentation {board['presented']})")
    return {"present": True}


def op_identify(s, doc, req):
    name, board = need_device(doc)
    shown = board
    if board["knobs"].get("impostor_of"):
        shown = doc["boards"][board["knobs"]["impostor_of"]]
        if board["knobs"].get("copy_files"):
            board["files"] = dict(shown["files"])
        if not board["key_pem"]:
            board["key_pem"] = pem_of(make_key("p256"))
    out = dict(shown["identity"])
    out["security"] = dict(shown["identity"]["security"], locked=board["locked"])
    key = load_key(shown["key_pem"])
    if key is not None:
        out["key"] = {"spki": base64.b64encode(spki_of(key.public_key())).decode()}
    return out


def op_generate_csr(s, doc, req):
    name, board = need_device(doc)
    new_key, algorithm, subject = req.get("new_key"), req.get("algorithm"), req.get("subject")
    if not isinstance(new_key, bool):
        raise Violation("generate_csr.new_key must be true or false")
    if algorithm not in s.key_types:
        raise Violation(f"generate_csr.algorithm {algorithm!r} is not one of hello.key_types "
                        f"{s.key_types}")
    if subject is not None and not isinstance(subject, dict):
        raise Violation("generate_csr.subject must be an object")
    if board["locked"]:
        raise Refusal("locked", "the identity slot is locked")
    if new_key:
        key = make_key(algorithm)
        board["key_pem"] = pem_of(key)
    else:
        key = load_key(board["key_pem"])
        if key is None:
            raise Refusal("no_key", "the identity slot is empty")
    cn = (subject or {}).get("CN") or name
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, str(cn))])
    ).sign(key, hash_for(key))
    return {"csr_der": base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode()}


def check_file(f):
    if not isinstance(f, dict):
        raise Violation("install.files entries must be objects")
    name, kind, content, sha = (f.get(k) for k in ("name", "kind", "content", "sha256"))
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise Violation(f"install file name {name!r} is not a plain file name")
    if kind not in KINDS:
        raise Violation(f"install {name}: kind {kind!r} is not one of {KINDS}")
    if not isinstance(content, str):
        raise Violation(f"install {name}: content must be a string")
    if not isinstance(sha, str) or len(sha) != 64 or sha != sha.lower() or \
            any(c not in "0123456789abcdef" for c in sha):
        raise Violation(f"install {name}: sha256 must be 64 lowercase hex digits")
    return name, kind, content, sha


def certificates(pem_text, what):
    try:
        return x509.load_pem_x509_certificates(pem_text.encode())
    except ValueError as e:
        raise Violation(f"install {what}: not PEM certificates ({e})") from None


def op_install(s, doc, req):
    name, board = need_device(doc)
    files = req.get("files")
    if not isinstance(files, list) or not files:
        raise Violation("install.files must be a non-empty list")
    checked = [check_file(f) for f in files]
    for fname, kind, content, sha in checked:
        if digest(content) != sha:
            raise Refusal("verify_failed", f"{fname}: SHA-256 mismatch", retry=True)
    if board["locked"]:
        raise Refusal("locked", "the device is locked and takes no new credentials")
    by_kind = {kind: content for _, kind, content, _ in checked}
    if "certificate" not in by_kind:
        raise Violation("install without a certificate")
    leaf = certificates(by_kind["certificate"], "certificate")
    if len(leaf) != 1:
        raise Violation("the certificate file must hold exactly the device's leaf")
    if "chain" in by_kind:
        # docs: "chain (leaf then issuing CAs, no root)"
        chain = certificates(by_kind["chain"], "chain")
        if chain[0] != leaf[0]:
            raise Violation("chain.pem does not start with the leaf")
        for c in chain[1:]:
            if c.subject == c.issuer:
                raise Violation("chain.pem holds a self-signed (root) certificate")
    if "config" in by_kind:
        try:
            json.loads(by_kind["config"])
        except ValueError:
            raise Violation("the config file is not JSON") from None
    if "private_key" in by_kind:
        try:
            key = serialization.load_pem_private_key(by_kind["private_key"].encode(), None)
        except (ValueError, TypeError):
            raise Violation("the private_key file is not an unencrypted PKCS#8 PEM") from None
    else:
        key = load_key(board["key_pem"])
    if key is None or spki_of(key.public_key()) != spki_of(leaf[0].public_key()):
        raise Refusal("device_error", "the certificate is not for my key")
    if board["knobs"].get("install_ms"):
        time.sleep(board["knobs"]["install_ms"] / 1000)
    if "private_key" in by_kind:
        board["key_pem"] = by_kind["private_key"]
    for fname, _, content, _ in checked:
        board["files"][fname] = content
    board["checked"] = {}
    if spend(board, "lose_install_reply"):
        raise DropLink("files stored, reply lost")
    return {"installed": [c[0] for c in checked]}


def op_read_back(s, doc, req):
    name, board = need_device(doc)
    names = req.get("names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise Violation("read_back.names must be a list of strings")
    if spend(board, "mute_read_back"):
        raise Mute("read_back not answered")
    held = {n: digest(board["files"][n]) for n in names if n in board["files"]}
    board["checked"]["read_back"] = len(held) == len(names)
    return {"files": held}


def op_prove(s, doc, req):
    name, board = need_device(doc)
    try:
        nonce = base64.b64decode(req.get("nonce"), validate=True)
    except (TypeError, ValueError, binascii.Error):
        raise Violation("prove.nonce must be base64") from None
    if len(nonce) != 32:
        raise Violation(f"prove.nonce must be 32 bytes, got {len(nonce)}")
    # docs: "a retried prove carries the same nonce".
    unanswered = board.pop("unanswered_nonce", None)
    if unanswered is not None and unanswered != req["nonce"]:
        raise Violation("a retried prove carries a new nonce")
    if spend(board, "mute_prove"):
        board["unanswered_nonce"] = req["nonce"]
        raise Mute("prove not answered")
    key = load_key(board["key_pem"])
    if key is None:
        raise Refusal("no_key", "the identity slot is empty")
    board["checked"]["prove"] = True
    return {"signature": base64.b64encode(signature(key, PROVE_PREFIX + nonce)).decode()}


def op_lock(s, doc, req):
    name, board = need_device(doc)
    # docs: lock is "only sent after read-back and proof passed".
    if not (board["checked"].get("read_back") and board["checked"].get("prove")):
        raise Violation("lock before read-back and proof passed for this device")
    if board["locked"]:
        raise Refusal("locked", "already locked")
    if spend(board, "refuse_lock"):
        raise Refusal("device_error", "the lock bits did not take")
    board["locked"] = True
    return {"locked": True}


def op_release(s, doc, req):
    name, board = fixture(doc)
    result, message = req.get("result"), req.get("message", "")
    if result not in ("pass", "fail") or not isinstance(message, str):
        raise Violation("release wants result pass|fail and a message string")
    if board is None:
        raise Violation("release with no device in the fixture (released twice?)")
    board["history"].append(result)
    doc["current"] = None
    if result == "pass":
        doc["done"].append(name)
    elif board["presented"] < PRESENTATIONS:
        doc["queue"].append(name)
    else:
        doc["rejected"].append(name)
    say(f"{name} released: {result} ({message})")
    return {}


OPERATIONS = {
    "hello": op_hello, "wait_device": op_wait_device, "identify": op_identify,
    "generate_csr": op_generate_csr, "install": op_install, "read_back": op_read_back,
    "prove": op_prove, "lock": op_lock, "release": op_release,
}


# ---------------------------------------------------------------------------------------------
# One link


def encode(obj):
    # CR LF: docs "Framing" says a CR before the LF is ignored.
    return (json.dumps(obj, separators=(",", ":")) + "\r\n").encode()


def reply_to(s, line):
    """The lines to send for one request line, or DropLink."""
    try:
        req = json.loads(line)
    except ValueError:
        raise Violation(f"not JSON: {line[:80]!r}") from None
    if not isinstance(req, dict) or req.get("v") != 1:
        raise Violation("a request must be an object with \"v\":1")
    rid, op = req.get("id"), req.get("op")
    if not isinstance(rid, int) or isinstance(rid, bool):
        raise Violation("a request needs an integer id")
    if s.last_id is not None and rid <= s.last_id:
        raise Violation(f"id {rid} does not increase (last {s.last_id})")
    s.last_id = rid
    if not s.greeted and op != "hello":
        raise Violation(f"{op} before hello on this link")
    handler = OPERATIONS.get(op)
    if handler is None:
        return rid, [encode({"v": 1, "id": rid, "ok": False,
                             "error": {"code": "unsupported", "message": f"no operation {op!r}"}})]
    dropped = None
    with bench(s.path) as doc:
        try:
            result = handler(s, doc, req)
            out = {"v": 1, "id": rid, "ok": True}
            out.update(result)
        except Refusal as r:
            out = {"v": 1, "id": rid, "ok": False,
                   "error": {"code": r.code, "message": r.message, "retry": r.retry}}
        except (DropLink, Mute) as d:
            dropped = d  # what the device did is saved; then no reply
    if isinstance(dropped, DropLink):
        raise dropped
    if dropped is not None:
        say(f"no reply: {dropped}")
        return rid, []
    if op == "hello":
        s.greeted = True
    logs = [encode({"v": 1, "log": f"{op} handled", "level": "debug"})]
    if not out["ok"]:
        logs.append(encode({"v": 1, "log": f"{op}: {out['error']['code']}", "level": "warn"}))
    return rid, logs + [encode(out)]


def serve_link(path, key_types, read, write):
    s = Session(path, key_types)
    # A boot banner before hello (docs "Framing": skipped until the adapter greets).
    write(f"{NAME} booting, bench {path}\r\n".encode())
    pending = b""
    while True:
        chunk = read()
        if not chunk:
            return
        pending += chunk
        if len(pending) > LINE_LIMIT and b"\n" not in pending:
            raise Violation("a request line over 1 MiB")
        while b"\n" in pending:
            raw, pending = pending.split(b"\n", 1)
            raw = raw.rstrip(b"\r")
            if not raw.strip():
                continue
            rid = None
            try:
                rid, lines = reply_to(s, raw.decode("utf-8"))
            except Violation as v:
                say(f"certfab broke protocol v1: {v}")
                lines = [encode({"v": 1, "id": rid if rid is not None else s.last_id or 0,
                                 "ok": False, "error": {"code": "bad_request",
                                                        "message": f"certfab broke protocol v1: {v}"}})]
            except DropLink as d:
                say(f"dropping the link: {d}")
                return "dropped"
            for line in lines:
                write(line)


def serve_stdio(path, key_types):
    def read():
        try:
            return os.read(0, 65536)
        except OSError:
            return b""

    def write(data):
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]

    if serve_link(path, key_types, read, write) == "dropped":
        os._exit(0)


def serve_tcp(path, key_types, where):
    host, _, port = where.rpartition(":")
    server = socket.create_server((host or "127.0.0.1", int(port)))
    say(f"listening on {host}:{server.getsockname()[1]}")
    while True:
        conn, _ = server.accept()
        with conn:
            try:
                serve_link(path, key_types, lambda: conn.recv(65536), conn.sendall)
            except OSError as e:
                say(f"link closed: {e}")


# ---------------------------------------------------------------------------------------------
# Commands


def parse_knob(text, names):
    target, _, setting = text.partition(":")
    key, _, value = setting.partition("=")
    if target not in names or key not in KNOBS:
        raise SystemExit(f"--knob {text}: want NAME:KNOB=VALUE with a device NAME and a knob "
                         f"of {', '.join(KNOBS)}")
    kind = KNOBS[key]
    if kind is bool:
        return target, key, value in ("1", "true", "yes", "")
    if kind is int:
        return target, key, int(value)
    if value not in names:
        raise SystemExit(f"--knob {text}: no device {value}")
    return target, key, value


def cmd_init(a):
    os.makedirs(a.bench, exist_ok=False)
    boards = {}
    for i, name in enumerate(a.names):
        boards[name] = {
            "identity": {
                "device_id": name,
                "hw_serial": f"HW{i + 1:06d}",
                "mac": "02:5e:00:%02x:%02x:%02x" % (i >> 16 & 255, i >> 8 & 255, i & 255),
                "chip_uid": hashlib.sha256(name.encode()).hexdigest()[:32],
                "firmware": "2.0.0",
                "security": {"debug": "locked", "secure_boot": True},
                "attributes": {"board_rev": "D"},
            },
            "key_pem": None, "files": {}, "locked": False, "knobs": {},
            "presented": 0, "history": [], "checked": {},
        }
    for text in a.knob:
        target, key, value = parse_knob(text, boards)
        boards[target]["knobs"][key] = value
    save(a.bench, {"format": "strict-bench/1", "queue": list(a.names), "current": None,
                   "done": [], "rejected": [], "boards": boards})


def cmd_again(a):
    with bench(a.bench) as doc:
        names = a.names or list(doc["boards"])
        for name in dict.fromkeys(names + a.erase):
            if name not in doc["boards"]:
                raise SystemExit(f"no device {name}")
            for where in ("queue", "done", "rejected"):
                doc[where] = [n for n in doc[where] if n != name]
            if doc["current"] == name:
                doc["current"] = None
            board = doc["boards"][name]
            board["presented"] = 0
            if name in a.erase:
                board.update(key_pem=None, files={}, locked=False)
            doc["queue"].append(name)


def cmd_show(a):
    with bench(a.bench, write=False) as doc:
        json.dump(doc, sys.stdout, indent=1, sort_keys=True)
        print()


def cmd_serve(a):
    key_types = [t for t in a.key_types.split(",") if t]
    bad = [t for t in key_types if t not in ALL_KEY_TYPES]
    if bad:
        raise SystemExit(f"--key-types: unknown {bad}; use {', '.join(ALL_KEY_TYPES)}")
    if a.tcp:
        serve_tcp(a.bench, key_types, a.tcp)
    else:
        serve_stdio(a.bench, key_types)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init", help="a new bench with these devices in the queue")
    i.add_argument("bench")
    i.add_argument("names", nargs="+")
    i.add_argument("--knob", action="append", default=[], metavar="NAME:KNOB=VALUE")
    i.set_defaults(run=cmd_init)
    s = sub.add_parser("serve", help="speak protocol v1 on stdin/stdout, or on TCP")
    s.add_argument("bench")
    s.add_argument("--tcp", metavar="HOST:PORT")
    s.add_argument("--key-types", default=",".join(ALL_KEY_TYPES))
    s.set_defaults(run=cmd_serve)
    g = sub.add_parser("again", help="put devices back in the queue as they are")
    g.add_argument("bench")
    g.add_argument("names", nargs="*")
    g.add_argument("--erase", action="append", default=[], metavar="NAME",
                   help="also erase its key, files and lock bit (a reflashed field return)")
    g.set_defaults(run=cmd_again)
    w = sub.add_parser("show", help="print the bench document")
    w.add_argument("bench")
    w.set_defaults(run=cmd_show)
    a = p.parse_args()
    a.run(a)


if __name__ == "__main__":
    main()
