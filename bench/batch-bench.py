#!/usr/bin/env python3
"""Batch throughput benchmark (docs/performance.md).

For each input kind (public keys, CSRs, host keygen) and each size, on a fresh SoftHSM dev line:
measure the raw 2-session signing rate of the same token (`certfab hsm bench`), run
`certfab batch --jobs 2`, and report certificates/s, the ratio to the raw rate, and the peak
RSS of the certfab process. For CSRs it also runs `openssl ca -batch` with the pkcs11 engine
on the same token and key. Writes bench/results/batch-<time>.json.

For each kind the output layouts in LAYOUTS (default `dirs,bundle`) run one after the other,
each on its own fresh dev line with its own raw-rate measurement just before it, so every
ratio compares a batch with the token rate of the same minute. Each run also records the
1-minute load average before and after (the machine is shared) and certfab's CPU time
(user + system, token included: SoftHSM is in-process) per certificate, and certfab's own CPU
per certificate: that minus the token's CPU per signature (getrusage of a 1-session
`certfab hsm bench` on the same line over the signatures it made).

With TOKEN=p11-kit each dev line's SoftHSM token is exported by `p11-kit server` and certfab
loads p11-kit's client module: signing runs in the server's process, so certfab's CPU time per
certificate is its own (the issue's "certfab's own CPU per certificate, token out of process";
the PKCS#11 RPC marshalling on certfab's side is counted, as with any network HSM). The ratio
columns of such a run compare with p11-kit's rate, not the in-process token's.

CERTFAB=path measures another build (the script then builds only gen-inputs).

Usage: bench/batch-bench.py [SIZES...]   (default: 10000 100000)
       KINDS=pubkey bench/batch-bench.py 1000000   (only some input kinds)
       LAYOUTS=bundle KINDS=pubkey,csr bench/batch-bench.py 100000
"""
import csv, json, os, resource, shutil, subprocess, sys, tempfile, time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CERTFAB = os.environ.get("CERTFAB") or os.path.join(REPO, "target/release/certfab")
TOKEN = os.environ.get("TOKEN", "softhsm")
GEN = os.path.join(REPO, "target/release/examples/gen-inputs")


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def measured(args, env=None):
    """Runs args in a child of a fresh Python process so ru_maxrss is this run's alone."""
    code = (
        "import json,resource,subprocess,sys,time;t=time.time();"
        "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
        "u=resource.getrusage(resource.RUSAGE_CHILDREN);"
        "print(json.dumps({'rc':p.returncode,'out':p.stdout,'err':p.stderr[-2000:],'wall':time.time()-t,"
        "'maxrss_kib':u.ru_maxrss,'cpu_s':u.ru_utime+u.ru_stime,'sys_s':u.ru_stime}))"
    )
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    return json.loads(r.stdout)


def line(work):
    d = os.path.join(work, "line")
    stop_line(d)
    shutil.rmtree(d, ignore_errors=True)
    sh(os.path.join(REPO, "hsm-fixtures/dev-line.sh"), "--token", TOKEN, d, env={**os.environ, "CERTFAB": CERTFAB})
    return d


def stop_line(d):
    """Ends the processes a line started (p11-kit's server), if any."""
    if os.path.exists(os.path.join(d, "stop")):
        subprocess.run([os.path.join(d, "stop")], capture_output=True)


def raw_rate(d):
    r = sh(CERTFAB, "--config", f"{d}/certfab.yaml", "--json", "hsm", "bench", "--key", "issuing-ca", "--sessions", "2", "--seconds", "3")
    return json.loads(r.stdout)["results"][0]["per_second"]


def token_cpu_us(d):
    """The token's CPU per signature: `certfab hsm bench` with one session is (after its
    start-up) nothing but signatures, so its getrusage CPU time over the signatures it made is
    what one signature costs the in-process SoftHSM. Subtracted from a batch's CPU per
    certificate it leaves certfab's own ("getrusage minus the token's share")."""
    m = measured([CERTFAB, "--config", f"{d}/certfab.yaml", "--json", "hsm", "bench", "--key", "issuing-ca", "--sessions", "1", "--seconds", "3"])
    n = json.loads(m["out"])["results"][0]["signatures"]
    return m["cpu_s"] / n * 1e6


def pkcs11_engine_missing():
    """The `openssl ca` comparison needs OpenSSL's pkcs11 engine (libp11), which Debian ships
    as libengine-pkcs11-openssl; without it `-engine pkcs11` fails with "could not load the
    shared library" (what the 2026-12-03 run reported as "the pkcs11 engine failed")."""
    r = subprocess.run(["openssl", "engine", "-t", "pkcs11"], capture_output=True, text=True)
    if r.returncode == 0:
        return None
    return ("OpenSSL's pkcs11 engine is not installed (`openssl engine -t pkcs11`: "
            + (r.stderr.strip().splitlines() or ["failed"])[-1]
            + "); install it with `apt-get install libengine-pkcs11-openssl` or set NO_OPENSSL=1")


def openssl_ca(d, csv_path, work):
    ca = os.path.join(work, "osslca")
    shutil.rmtree(ca, ignore_errors=True)
    os.makedirs(f"{ca}/certs")
    os.makedirs(f"{ca}/csrs")
    open(f"{ca}/index.txt", "w").close()
    open(f"{ca}/serial", "w").write("01\n")
    open(f"{ca}/ca.cnf", "w").write(
        "[ca]\ndefault_ca = d\n[d]\ndir = .\ndatabase = $dir/index.txt\nnew_certs_dir = $dir/certs\n"
        "serial = $dir/serial\ndefault_md = sha256\npolicy = p\ndefault_days = 3650\nunique_subject = no\n"
        "copy_extensions = none\nx509_extensions = leaf\n[p]\ncommonName = supplied\n"
        "[leaf]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n"
        "extendedKeyUsage = clientAuth\n"
    )
    files = []
    with open(csv_path) as f:
        for i, row in enumerate(csv.DictReader(f)):
            p = f"{ca}/csrs/{i:07}.csr"
            open(p, "w").write(row["csr"] + "\n")
            files.append(p)
    pin = open(f"{d}/pin").read().strip()
    env = {**os.environ, "SOFTHSM2_CONF": f"{d}/softhsm2.conf"}
    # The PIN goes into the key URI: the way the pkcs11 engine takes it, and one of the
    # things certfab avoids.
    args = ["openssl", "ca", "-batch", "-config", "ca.cnf", "-engine", "pkcs11", "-keyform", "engine",
            "-keyfile", f"pkcs11:token=certfab-dev;object=issuing-ca;type=private;pin-value={pin}",
            "-cert", f"{d}/ca/issuing.pem", "-outdir", "certs", "-infiles"]
    t = time.time()
    # In chunks of 10,000 files, as xargs would: one command line cannot hold 100,000 paths.
    for i in range(0, len(files), 10_000):
        r = subprocess.run(args + files[i:i + 10_000], cwd=ca, capture_output=True, env=env)
        if r.returncode != 0:
            break
    wall = time.time() - t
    n = len(os.listdir(f"{ca}/certs"))
    shutil.rmtree(ca, ignore_errors=True)
    # The exact failure, with the PIN (it is in the key URI) taken out.
    err = r.stderr.decode(errors="replace").replace(pin, "***")[-2000:] if r.returncode else None
    return {"rc": r.returncode, "certs": n, "wall_s": wall, "per_second": n / wall, "error": err}


def main():
    sizes = [int(s) for s in sys.argv[1:]] or [10_000, 100_000]
    if "csr" in os.environ.get("KINDS", "pubkey,csr,host") and not os.environ.get("NO_OPENSSL") and TOKEN == "softhsm":
        missing = pkcs11_engine_missing()
        if missing:
            sys.exit(missing)
    sh("cargo", "build", "--release", "--quiet", "--example", "gen-inputs", cwd=REPO)
    if not os.environ.get("CERTFAB"):
        sh("cargo", "build", "--release", "--quiet", cwd=REPO)
    results = {"certfab": CERTFAB, "token": TOKEN, "machine": f"{os.uname().machine}, {os.cpu_count()} cores", "softhsm": sh("softhsm2-util", "--version").stdout.strip(), "runs": []}
    work = tempfile.mkdtemp(prefix="certfab-bench-")
    try:
        for n in sizes:
          for kind in os.environ.get("KINDS", "pubkey,csr,host").split(","):
            for layout in os.environ.get("LAYOUTS", "dirs,bundle").split(","):
                d = line(work)
                load_before = os.getloadavg()[0]
                rate = raw_rate(d)
                out = os.path.join(work, f"out-{kind}-{n}-{layout}")
                args = [CERTFAB, "--config", f"{d}/certfab.yaml", "--json", "batch", "--profile", "generic-iot", "--out", out, "--jobs", "2", "--layout", layout]
                if kind == "host":
                    open(f"{work}/pass", "w").write("bench passphrase\n")
                    os.chmod(f"{work}/pass", 0o600)
                    args += ["--count", str(n), "--keygen", "host", "--key-passphrase", f"file:{work}/pass"]
                else:
                    inp = os.path.join(work, f"{kind}-{n}.csv")
                    if not os.path.exists(inp):
                        sh(GEN, kind, str(n), inp)
                    args += ["--input", inp]
                token_us = token_cpu_us(d) if TOKEN == "softhsm" else None
                m = measured(args)
                s = json.loads(m["out"]) if m["rc"] == 0 else {"error": m["err"]}
                run = {
                    "token": TOKEN, "kind": kind, "layout": layout, "devices": n, "rc": m["rc"], "raw_2_session_per_s": round(rate),
                    "certfab_per_s": round(s.get("rate_per_s", 0)), "ratio": round(s.get("rate_per_s", 0) / rate, 3),
                    "wall_s": round(m["wall"], 2), "peak_rss_mib": round(m["maxrss_kib"] / 1024, 1),
                    "cpu_us_per_cert": round(m["cpu_s"] / n * 1e6), "sys_us_per_cert": round(m["sys_s"] / n * 1e6),
                    # certfab's own CPU per certificate: with TOKEN=p11-kit the process's
                    # whole CPU (the token is in p11-kit's server); in-process, minus the
                    # token's CPU per signature measured on the same line just before.
                    "own_cpu_us_per_cert": round(m["cpu_s"] / n * 1e6 - (token_us or 0)),
                    "token_cpu_us_per_sig": round(token_us, 1) if token_us is not None else None,
                    "load1_before": round(load_before, 2), "load1_after": round(os.getloadavg()[0], 2),
                }
                # `openssl ca` signs through its own in-process module: compared on SoftHSM lines.
                if kind == "csr" and layout == os.environ.get("LAYOUTS", "dirs,bundle").split(",")[0] and not os.environ.get("NO_OPENSSL") and TOKEN == "softhsm":
                    o = openssl_ca(d, os.path.join(work, f"csr-{n}.csv"), work)
                    if o["error"]:
                        run["openssl_ca_error"] = o["error"]
                    run["openssl_ca_per_s"] = round(o["per_second"])
                    run["certfab_vs_openssl_ca"] = round(s.get("rate_per_s", 0) / o["per_second"], 2) if o["per_second"] else None
                print(json.dumps(run), flush=True)
                results["runs"].append(run)
                # Outputs stay until the end: deleting 300,000 inodes right before the next run
                # makes ext4's inode allocation scan them and halves that run's rate.
    finally:
        stop_line(os.path.join(work, "line"))
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(REPO, "bench/results"), exist_ok=True)
    path = os.path.join(REPO, "bench/results", time.strftime("batch-%Y%m%dT%H%M%SZ.json", time.gmtime()))
    json.dump(results, open(path, "w"), indent=2)
    print(path)


if __name__ == "__main__":
    main()
