#!/usr/bin/env python3
"""A station adapter that stands between certfab and a real one (sim-device.py) and halts the
exchange at one request, so a test can SIGKILL certfab at a known point of a device's flow
(tests/it/station.rs, the durable-commit kill test).

    station_kill_proxy.py MARKER OP WHEN [GO] -- ADAPTER ARGS...

Every line certfab sends is passed to ADAPTER and every line ADAPTER answers is passed back,
until the first request whose `op` is OP:
- WHEN=before: the request is not passed on (the device never sees it);
- WHEN=after: it is passed on and its reply is read but not passed back (the device did it,
  certfab never hears so).
Then MARKER is written and nothing more is passed either way until certfab's end closes stdin.
With GO (a path), WHEN=before instead waits for GO to exist and then carries on as if nothing
happened (the test does something in between, e.g. stops the token's server).
"""
import json
import os
import subprocess
import sys
import time


def main():
    marker, op, when = sys.argv[1], sys.argv[2], sys.argv[3]
    rest = sys.argv[4:]
    go = None
    if rest and rest[0] != "--":
        go, rest = rest[0], rest[1:]
    if not rest or rest[0] != "--" or when not in ("before", "after"):
        sys.exit("usage: station_kill_proxy.py MARKER OP before|after [GO] -- ADAPTER ARGS...")
    child = subprocess.Popen(rest[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    fired = False

    def halt():
        with open(marker + ".tmp", "w") as f:
            f.write(op + " " + when + "\n")
        os.replace(marker + ".tmp", marker)
        # Nothing more either way: wait for certfab's end (stdin closes when it dies).
        while sys.stdin.buffer.readline():
            pass
        child.stdin.close()
        child.wait()
        sys.exit(0)

    def reply_for(request_id):
        """Passes the adapter's log lines back; returns its reply to `request_id`."""
        while True:
            line = child.stdout.readline()
            if not line:
                return None
            try:
                msg = json.loads(line)
            except ValueError:
                msg = {}
            if isinstance(msg, dict) and "log" in msg and "id" not in msg:
                sys.stdout.buffer.write(line)
                sys.stdout.buffer.flush()
                continue
            return line

    for line in sys.stdin.buffer:
        try:
            req = json.loads(line)
        except ValueError:
            req = {}
        hit = not fired and isinstance(req, dict) and req.get("op") == op
        if hit and when == "before":
            fired = True
            if go is None:
                halt()
            with open(marker + ".tmp", "w") as f:
                f.write(op + " " + when + "\n")
            os.replace(marker + ".tmp", marker)
            while not os.path.exists(go):
                time.sleep(0.01)
        child.stdin.write(line)
        child.stdin.flush()
        reply = reply_for(req.get("id") if isinstance(req, dict) else None)
        if reply is None:
            break
        if hit and when == "after":
            fired = True
            halt()
        sys.stdout.buffer.write(reply)
        sys.stdout.buffer.flush()
    child.stdin.close()
    child.wait()


if __name__ == "__main__":
    main()
