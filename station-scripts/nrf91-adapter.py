#!/usr/bin/env python3
"""certfab station adapter for Nordic nRF91 modems: protocol v1 on stdin/stdout, AT commands
on the modem's UART.

    certfab station --adapter "exec:station-scripts/nrf91-adapter.py --port /dev/ttyACM0"

Operations (see docs/station-nrf91.md for the AT exchanges and their sources):

    identify      AT+CGSN (IMEI), AT%XMODEMUUID, AT+CGMR, AT+CGMM
    generate_csr  AT+CFUN=4 if the modem is online, then AT%KEYGEN=<sec_tag>,2,0
    install       AT%CMNG=0,<sec_tag>,<type>,"<PEM>" per file (AT+CFUN=4 first if online)
    read_back     AT%CMNG=1,<sec_tag>: the modem's own SHA-256 of each credential

`prove` and `lock` are not offered: the modem does not sign arbitrary data with a %KEYGEN
key over AT, and has no lock operation. `wait_device` and `release` exist only with
--sim-line, where they drive sim-device.py's simulator-only AT#SIMNEXT command; the real
adapter never sends it.

Only the standard library: the port is opened with os.open and set raw with termios.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import select
import sys
import termios
import time
import tty

ADAPTER_NAME = "nrf91-adapter/1.0"
MAX_LINE = 1 << 20
DEFAULT_SEC_TAG = 16842753  # the sec_tag nRF Cloud's tools and Nordic's examples use

# %CMNG credential types (nRF9160 AT command reference, %CMNG set command).
TYPE_ROOT_CA = 0
TYPE_CLIENT_CERT = 1
TYPE_CLIENT_KEY = 2
KIND_TO_TYPE = {
    "ca": TYPE_ROOT_CA,
    "certificate": TYPE_CLIENT_CERT,
    # The modem has one client-certificate slot per sec_tag; a PEM chain (leaf first) can be
    # stored there, and the modem presents it in the TLS handshake.
    "chain": TYPE_CLIENT_CERT,
    "private_key": TYPE_CLIENT_KEY,
}
# certfab's file names (profile station.install), so read_back works in an adapter process
# that did not see the install (certfab restarts exec adapters after a failure).
DEFAULT_NAME_TYPES = {"cert.pem": TYPE_CLIENT_CERT, "chain.pem": TYPE_CLIENT_CERT,
                      "ca.pem": TYPE_ROOT_CA}

CME_TEXT = {
    50: "incorrect parameters",
    513: "not found",
    514: "not allowed / no access",
    515: "memory full",
    518: "not allowed in active state",
    519: "already exists",
    523: "key generation failed",
    527: "invalid content",
    528: "not allowed while the power-off warning is active",
}


def log(msg):
    print(f"nrf91-adapter[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


class AdapterError(Exception):
    def __init__(self, code, message, retry=False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry = retry


class ModemTimeout(Exception):
    pass


class AtResult:
    def __init__(self, lines, final):
        self.lines = lines  # intermediate response lines
        self.final = final  # "OK", "ERROR", "+CME ERROR: n", ...

    @property
    def ok(self):
        return self.final == "OK"

    @property
    def cme(self):
        m = re.match(r"\+CM[ES] ERROR: *(\d+)", self.final)
        return int(m.group(1)) if m else None

    def describe(self):
        cme = self.cme
        if cme is None:
            return self.final
        return f"{self.final} ({CME_TEXT.get(cme, 'unknown error')})"


class Modem:
    """The modem's UART: one AT command at a time, responses until a final result code."""

    def __init__(self, port, baud, eol, timeout):
        self.port = port
        self.baud = baud
        self.eol = eol
        self.timeout = timeout
        self.fd = None
        self.buf = bytearray()

    def open(self):
        if self.fd is not None:
            return
        try:
            fd = os.open(self.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as e:
            raise AdapterError("device_error", f"cannot open {self.port}: {e.strerror}") from None
        try:
            tty.setraw(fd)
            attrs = termios.tcgetattr(fd)
            speed = getattr(termios, f"B{self.baud}")
            attrs[4] = attrs[5] = speed
            # 8N1, no flow control, ignore modem control lines.
            attrs[2] = (attrs[2] & ~(termios.PARENB | termios.CSTOPB | termios.CSIZE |
                                     getattr(termios, "CRTSCTS", 0))) | \
                termios.CS8 | termios.CLOCAL | termios.CREAD
            attrs[0] &= ~(termios.IXON | termios.IXOFF | termios.IXANY)
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        except (termios.error, AttributeError) as e:
            os.close(fd)
            raise AdapterError("device_error", f"{self.port}: cannot set raw mode: {e}") from None
        self.fd = fd
        log(f"opened {self.port} at {self.baud} baud")

    def drain(self):
        """Drops whatever the modem sent unasked (a boot banner, a late answer to a command
        that timed out, an unsolicited notification) so it is not read as this answer."""
        self.buf.clear()
        try:
            termios.tcflush(self.fd, termios.TCIFLUSH)
        except termios.error:
            pass
        while select.select([self.fd], [], [], 0)[0]:
            try:
                if not os.read(self.fd, 65536):
                    break
            except (BlockingIOError, OSError):
                break

    def write(self, data):
        view = memoryview(data)
        deadline = time.monotonic() + self.timeout
        while view:
            if not select.select([], [self.fd], [], max(0, deadline - time.monotonic()))[1]:
                raise ModemTimeout("the port does not take data")
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                continue

    def read_line(self, deadline):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 1]
                return line.decode("utf-8", "replace").strip("\r")
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise ModemTimeout("no answer")
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            except OSError as e:
                raise ModemTimeout(f"read error: {e.strerror}") from None
            if not chunk:
                time.sleep(0.05)  # a pty without a peer reads EOF; keep waiting
                continue
            self.buf += chunk
            if len(self.buf) > MAX_LINE:
                self.buf.clear()

    def command(self, cmd, timeout=None):
        self.open()
        self.drain()
        shown = cmd if len(cmd) < 90 else cmd[:60] + f"... ({len(cmd)} chars)"
        log(f"> {shown}")
        self.write(cmd.encode() + self.eol)
        deadline = time.monotonic() + (timeout or self.timeout)
        lines = []
        while True:
            line = self.read_line(deadline)
            if not line.strip():
                continue
            s = line.strip()
            # A final result code is a whole line; "OK" inside a base64 CSR is not one.
            if s in ("OK", "ERROR") or s.startswith(("+CME ERROR", "+CMS ERROR")):
                log(f"< {s}" + (f" after {len(lines)} line(s)" if lines else ""))
                return AtResult(lines, s)
            lines.append(s)


class Adapter:
    def __init__(self, args):
        self.args = args
        self.modem = Modem(args.port, args.baud, {"crlf": b"\r\n", "cr": b"\r",
                                                  "lf": b"\n"}[args.eol], args.at_timeout)
        self.sec_tag = args.sec_tag
        self.name_types = dict(DEFAULT_NAME_TYPES)
        for item in args.map:
            name, sep, t = item.partition("=")
            if not sep or not t.isdigit():
                raise SystemExit(f"--map wants NAME=TYPE, not {item!r}")
            self.name_types[name] = int(t)
        self.cmee_on = False
        self.log_lines = []

    # Protocol plumbing -----------------------------------------------------------------------

    def note(self, text, level="info"):
        """A protocol log line (shown in certfab's verbose output) and a stderr line."""
        log(text)
        self.log_lines.append({"v": 1, "log": text, "level": level})

    def serve(self):
        buf = bytearray()
        overlong = False
        while True:
            try:
                chunk = os.read(0, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                log("stdin closed; exiting")
                return
            buf += chunk
            while True:
                i = buf.find(b"\n")
                if i < 0:
                    if len(buf) > MAX_LINE:
                        buf.clear()
                        overlong = True
                    break
                line = bytes(buf[:i])
                del buf[:i + 1]
                if overlong or len(line) > MAX_LINE:
                    overlong = False
                    self.send({"v": 1, "id": None, "ok": False, "error": {
                        "code": "bad_request", "message": "line too long", "retry": False}})
                    continue
                if line.strip():
                    self.send(self.handle(line.rstrip(b"\r")))

    @staticmethod
    def send(obj):
        data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]

    def handle(self, line):
        try:
            req = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return self.error_reply(None, AdapterError("bad_request", "request is not JSON"))
        if not isinstance(req, dict) or not isinstance(req.get("id"), int):
            return self.error_reply(None, AdapterError("bad_request", "not a request object"))
        rid, op = req["id"], req.get("op")
        if req.get("v") != 1:
            return self.error_reply(rid, AdapterError("bad_request", "unsupported version"))
        handler = getattr(self, "op_" + op, None) if isinstance(op, str) and \
            re.fullmatch(r"[a-z_]+", op) else None
        if handler is None:
            return self.error_reply(rid, AdapterError("unsupported", f"no operation {op!r}"))
        self.log_lines = []
        try:
            result = handler(req)
            reply = {"v": 1, "id": rid, "ok": True, **result}
        except AdapterError as e:
            reply = self.error_reply(rid, e)
        except ModemTimeout as e:
            # The exchange is in an unknown state: certfab retries over a fresh link (a new
            # adapter process, which drains the port before its first command).
            reply = self.error_reply(rid, AdapterError(
                "no_device" if op in ("identify", "wait_device") else "device_error",
                f"modem on {self.args.port}: {e}", retry=op not in ("identify", "wait_device")))
        for entry in self.log_lines:
            self.send(entry)
        return reply

    @staticmethod
    def error_reply(rid, e):
        return {"v": 1, "id": rid, "ok": False,
                "error": {"code": e.code, "message": e.message, "retry": e.retry}}

    # AT helpers ------------------------------------------------------------------------------

    def at(self, cmd, timeout=None):
        if not self.cmee_on:
            # Numeric +CME ERROR codes instead of a bare ERROR (the modem starts with 0).
            self.modem.command("AT+CMEE=1")
            self.cmee_on = True
        return self.modem.command(cmd, timeout)

    def at_ok(self, cmd, what, timeout=None):
        r = self.at(cmd, timeout)
        if not r.ok:
            raise self.at_error(what, r)
        return r

    @staticmethod
    def at_error(what, r):
        cme = r.cme
        code = "storage_full" if cme == 515 else "device_error"
        return AdapterError(code, f"{what}: {r.describe()}")

    def go_offline(self):
        """%CMNG write/delete and %KEYGEN are refused while the modem is online (CFUN 1, 2,
        21): take it to offline mode 4, which keeps the SIM and settings."""
        r = self.at_ok("AT+CFUN?", "reading the functional mode")
        mode = next((int(m.group(1)) for s in r.lines
                     for m in [re.match(r"\+CFUN: *(\d+)", s)] if m), None)
        if mode in (0, 4):
            return
        self.at_ok("AT+CFUN=4", "going offline (AT+CFUN=4)")
        self.note(f"modem was in CFUN={mode}; set offline (CFUN=4) to change credentials")

    # Operations ------------------------------------------------------------------------------

    def op_hello(self, req):
        versions = req.get("protocol", [1])
        if not isinstance(versions, list) or 1 not in versions:
            raise AdapterError("bad_request", f"no common protocol version in {versions!r}")
        caps = ["generate_csr", "read_back"]
        if self.args.sim_line:
            caps = ["wait_device"] + caps + ["release"]
        return {"protocol": 1, "adapter": ADAPTER_NAME, "capabilities": caps,
                "key_types": ["p256"]}

    def op_wait_device(self, req):
        if not self.args.sim_line:
            raise AdapterError("unsupported", "wait_device needs --sim-line (simulator only)")
        r = self.at_ok("AT#SIMNEXT", "AT#SIMNEXT")
        m = next((m for s in r.lines for m in [re.match(r'#SIMNEXT: *(\d)', s)] if m), None)
        if m is None:
            raise AdapterError("device_error", f"AT#SIMNEXT: unexpected answer {r.lines}")
        if m.group(1) == "0":
            return {"present": False, "end": True}
        self.cmee_on = False  # another modem: its +CMEE setting is its own
        return {"present": True}

    def op_identify(self, req):
        r = self.at_ok("AT+CGSN", "reading the IMEI (AT+CGSN)")
        imei = next((s for s in r.lines if re.fullmatch(r"\d{15}", s)), None)
        if imei is None:
            raise AdapterError("device_error", f"AT+CGSN: no IMEI in {r.lines}")
        r = self.at_ok("AT%XMODEMUUID", "reading the modem UUID")
        uuid = next((m.group(1) for s in r.lines
                     for m in [re.match(r"%XMODEMUUID: *(\S+)", s)] if m), None)
        fw = self.plain_line(self.at_ok("AT+CGMR", "reading the firmware version"))
        model = self.plain_line(self.at_ok("AT+CGMM", "reading the model"))
        ident = {"device_id": imei, "hw_serial": imei, "firmware": fw, "security": {}}
        if uuid:
            ident["chip_uid"] = uuid
        if model:
            ident["attributes"] = {"model": model}
        return ident

    @staticmethod
    def plain_line(r):
        """The information text of +CGMR/+CGMM: a line without a +/% result prefix."""
        return next((s for s in r.lines if not s.startswith(("+", "%", "#"))), None)

    def op_generate_csr(self, req):
        new_key = req.get("new_key")
        if new_key is not True:
            # %KEYGEN always makes a new key and no AT command returns a CSR for the key
            # already in a sec_tag, so "a CSR for the existing key" cannot be honoured.
            raise AdapterError("no_key", "the modem cannot make a CSR for an existing key")
        algorithm = req.get("algorithm")
        if algorithm != "p256":
            raise AdapterError("unsupported", f"the modem makes P-256 keys only, not {algorithm}")
        self.go_offline()
        self.note(f"generating a key in sec_tag {self.sec_tag} (AT%KEYGEN, a few seconds)")
        cmd = f"AT%KEYGEN={self.sec_tag},2,0"
        r = self.at(cmd, timeout=self.args.keygen_timeout)
        if r.cme == 519:
            # "Already exists": make room for the new key and try once more.
            self.note(f"%KEYGEN: key exists in sec_tag {self.sec_tag}; deleting it", "warn")
            self.at_ok(f"AT%CMNG=3,{self.sec_tag},{TYPE_CLIENT_KEY}", "deleting the old key")
            r = self.at(cmd, timeout=self.args.keygen_timeout)
        if not r.ok:
            raise self.at_error("AT%KEYGEN", r)
        blob = next((m.group(1) for s in r.lines
                     for m in [re.match(r'%KEYGEN: *"([^"]*)"', s)] if m), None)
        if blob is None:
            raise AdapterError("device_error", "AT%KEYGEN: no %KEYGEN line in the answer")
        # "<base64url(CSR DER)>.<base64url(COSE_Sign1)>". The COSE part is Nordic's
        # attestation of the CSR with the device identity key; checking it needs Nordic's
        # identity keys, so it is only logged, never verified here.
        csr_b64, _, cose_b64 = blob.partition(".")
        try:
            der = base64.urlsafe_b64decode(csr_b64 + "=" * (-len(csr_b64) % 4))
        except ValueError:
            raise AdapterError("device_error", "AT%KEYGEN: CSR is not base64url") from None
        if cose_b64:
            log(f"%KEYGEN COSE_Sign1 ({len(cose_b64)} chars, not verified): {cose_b64[:40]}...")
        b64 = base64.b64encode(der).decode()
        pem = "-----BEGIN CERTIFICATE REQUEST-----\n" + \
            "".join(b64[i:i + 64] + "\n" for i in range(0, len(b64), 64)) + \
            "-----END CERTIFICATE REQUEST-----\n"
        return {"csr": pem}

    def op_install(self, req):
        files = req.get("files")
        if not isinstance(files, list) or not files:
            raise AdapterError("bad_request", "files must be a non-empty list")
        plan, by_type = [], {}
        for f in files:
            if not isinstance(f, dict):
                raise AdapterError("bad_request", "each file must be an object")
            name, kind = f.get("name"), f.get("kind")
            content, digest = f.get("content"), f.get("sha256")
            if not isinstance(name, str) or not isinstance(content, str) or \
                    not isinstance(digest, str):
                raise AdapterError("bad_request", "name, content and sha256 are required")
            if hashlib.sha256(content.encode("utf-8")).hexdigest() != digest.lower():
                raise AdapterError("verify_failed", f"{name}: SHA-256 mismatch", retry=True)
            if kind == "config":
                self.note(f"{name}: the modem has no place for config files; skipped")
                continue
            if kind not in KIND_TO_TYPE:
                raise AdapterError("bad_request", f"{name}: unknown kind {kind!r}")
            cred_type = KIND_TO_TYPE[kind]
            if cred_type in by_type:
                raise AdapterError(
                    "unsupported",
                    f"{name} and {by_type[cred_type]} both go to %CMNG type {cred_type} of "
                    f"sec_tag {self.sec_tag}, which holds one credential; install either cert "
                    f"or chain (e.g. station.install: [chain, ca])")
            if '"' in content or "\x00" in content:
                raise AdapterError("bad_request", f"{name}: content cannot be sent in an AT string")
            by_type[cred_type] = name
            plan.append((name, cred_type, content))
        if plan:
            self.go_offline()
        installed = []
        for name, cred_type, content in plan:
            # The content goes between the quotes as it is (newlines included: the modem's
            # AT parser does not end a command inside a string), so the modem's SHA-256 in
            # %CMNG list is over exactly the bytes certfab hashed.
            cmd = f'AT%CMNG=0,{self.sec_tag},{cred_type},"{content}"'
            r = self.at(cmd)
            if r.cme == 519:
                self.note(f"{name}: type {cred_type} exists in sec_tag {self.sec_tag}; "
                          f"deleting it and writing again", "warn")
                self.at_ok(f"AT%CMNG=3,{self.sec_tag},{cred_type}", f"deleting type {cred_type}")
                r = self.at(cmd)
            if not r.ok:
                raise self.at_error(f"writing {name} (%CMNG type {cred_type})", r)
            self.name_types[name] = cred_type
            installed.append(name)
        return {"installed": installed}

    def op_read_back(self, req):
        names = req.get("names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise AdapterError("bad_request", "names must be a list of strings")
        r = self.at_ok(f"AT%CMNG=1,{self.sec_tag}", "listing credentials (AT%CMNG=1)")
        hashes = {}
        for s in r.lines:
            m = re.match(r'%CMNG: *(\d+) *, *(\d+) *(?:, *"([0-9A-Fa-f]{64})")?', s)
            if m and int(m.group(1)) == self.sec_tag:
                hashes[int(m.group(2))] = m.group(3)
        out = {}
        for name in names:
            cred_type = self.name_types.get(name)
            if cred_type is None:
                self.note(f"{name}: no %CMNG type known for this name; left out "
                          f"(use --map {name}=TYPE)", "warn")
                continue
            digest = hashes.get(cred_type)
            if digest:
                out[name] = digest.lower()  # the modem's own hash, reported as it is
            elif cred_type in hashes:
                self.note(f"{name}: the modem lists type {cred_type} without a SHA-256", "warn")
        return {"files": out}

    def op_release(self, req):
        if not self.args.sim_line:
            return {}  # a modem has no fixture to release; nothing to do
        result = req.get("result")
        if result not in ("pass", "fail"):
            raise AdapterError("bad_request", "result must be pass or fail")
        self.at_ok(f"AT#SIMNEXT={result}", "AT#SIMNEXT")
        return {}

    def op_prove(self, req):
        raise AdapterError("unsupported", "the modem cannot sign arbitrary data with its key")

    def op_lock(self, req):
        raise AdapterError("unsupported", "the modem has no lock operation over AT")


def main(argv=None):
    p = argparse.ArgumentParser(
        description="certfab station adapter (protocol v1 on stdin/stdout) for nRF91 modems "
                    "(AT commands on a serial port).")
    p.add_argument("--port", required=True, help="the modem's UART, e.g. /dev/ttyACM0")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--sec-tag", type=int, default=DEFAULT_SEC_TAG,
                   help=f"security tag for the key and certificates (default {DEFAULT_SEC_TAG})")
    p.add_argument("--eol", choices=("crlf", "cr", "lf"), default="crlf",
                   help="command terminator the device's AT host expects (default crlf)")
    p.add_argument("--at-timeout", type=float, default=10.0,
                   help="seconds to wait for an AT answer (default 10)")
    p.add_argument("--keygen-timeout", type=float, default=25.0,
                   help="seconds to wait for %%KEYGEN (default 25; keep it under certfab's "
                        "generate_csr timeout)")
    p.add_argument("--map", action="append", default=[], metavar="NAME=TYPE",
                   help="the %%CMNG type read_back reports for a file name (cert.pem, "
                        "chain.pem and ca.pem are known); repeatable")
    p.add_argument("--sim-line", action="store_true",
                   help="drive sim-device.py's line with AT#SIMNEXT (simulator only)")
    args = p.parse_args(argv)
    if not 0 <= args.sec_tag <= 2147483647:
        raise SystemExit("--sec-tag must be 0..2147483647")
    if not hasattr(termios, f"B{args.baud}"):
        raise SystemExit(f"unsupported baud rate {args.baud}")
    try:
        Adapter(args).serve()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
