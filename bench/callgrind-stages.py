#!/usr/bin/env python3
"""Groups a callgrind profile of `certfab batch` into per-stage instructions per certificate
(bench/callgrind-batch.sh).

    callgrind-stages.py INCLUSIVE.txt SELF.txt DEVICES CERTFAB

INCLUSIVE.txt and SELF.txt are `callgrind_annotate --inclusive=yes|no` output. A stage is the
inclusive cost of the functions that do it (a function nested in another stage is subtracted
from that stage, so the stages do not overlap); allocation is the self cost of the allocator's
functions wherever they are called from.
"""
import json
import re
import sys

LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$")


def costs(path):
    out = []
    for line in open(path, encoding="utf-8", errors="replace"):
        m = LINE.match(line)
        if m:
            out.append((int(m.group(1).replace(",", "")), m.group(2).strip()))
    return out


def total(path):
    for line in open(path, encoding="utf-8", errors="replace"):
        m = re.match(r"^\s*([\d,]+)\s+\(100\.0+%\)\s+PROGRAM TOTALS", line)
        if m:
            return int(m.group(1).replace(",", ""))
    raise SystemExit(f"no PROGRAM TOTALS in {path}")


def fn_name(entry):
    # "file:function (Nx) [object]" -> function
    name = re.sub(r" \(\d+x\)$", "", entry.split(" [")[0])
    if re.match(r"^[^<:]*\.(rs|c|cpp|h|S|s)?:|^\?\?\?:", name):
        name = name.split(":", 1)[1]
    return name


# (stage, regex on the function name, stages it contains); the first matching function with
# the largest inclusive cost is the stage's.
STAGES = [
    ("input: read and parse the public key", r"certfab::csr::parse_public_key(::<.*>)?", []),
    ("key policy", r"certfab::csr::(keypolicy::)?check_key(::<.*>)?", []),
    ("name policy", r"certfab::csr::(names::)?check_name(::<.*>)?", []),
    ("TBS build", r"certfab::x509::tbs::build_tbs", []),
    ("lint (incl. independent re-parse)", r"certfab::issue::lint::lint", []),
    ("prepare (all of the above and the rest of prepare)", r"certfab::issue::prepare", []),
    ("HSM signature (C_Sign, SoftHSM in-process)", r"C_Sign", []),
    ("verify-after-sign (ring)", r"<certfab::crypto::pubkey::PublicKey>::verify", []),
    ("sign + verify + assemble", r"certfab::issue::sign(::<.*>)?", []),
    ("ledger: reserve (intent)", r"<certfab::ledger::Ledger>::reserve", []),
    ("ledger: record (signed)", r"<certfab::ledger::Ledger>::record_group", []),
    ("output files (writer: build the PEM files, create, fsync, rename)", r"<certfab::batch::output::(Dirs|Writer|Bundle)>::deliver", []),
]
ALLOC = re.compile(r"^(malloc|free|realloc|calloc|_int_malloc|_int_free|_int_realloc|malloc_consolidate|cfree|__libc_malloc|__libc_free|__libc_realloc|__libc_calloc|unlink_chunk.*|tcache.*)$")


def main():
    incl_path, self_path, n, binary = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    incl = costs(incl_path)
    grand = total(incl_path)
    stages = {}
    for name, pat, _ in STAGES:
        rx = re.compile(pat)
        best = None
        matched = {}
        for ir, entry in incl:
            f = fn_name(entry)
            if rx.fullmatch(f):
                # The same function can be listed per object/file; sum only distinct names.
                matched[f] = max(matched.get(f, 0), ir)
        if matched:
            best = max(matched.values())
        stages[name] = {"ir_per_cert": round(best / n) if best else None, "functions": sorted(matched)[:6]}
    alloc = sum(ir for ir, entry in costs(self_path) if ALLOC.match(fn_name(entry)))
    print(json.dumps({
        "certfab": binary,
        "devices": n,
        "program_total_ir_per_cert": round(grand / n),
        "stages": stages,
        "allocation_self_ir_per_cert": round(alloc / n),
        "note": "inclusive instruction counts (Ir) per certificate; nested stages (prepare ⊃ parse, policy, TBS, lint; sign ⊃ C_Sign, verify) are listed both ways",
    }, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
