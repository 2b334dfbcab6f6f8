#!/usr/bin/env python3
"""Groups a callgrind profile of `certfab batch` into per-stage instructions per certificate
(bench/callgrind-batch.sh).

    callgrind-stages.py INCLUSIVE.txt SELF.txt DEVICES CERTFAB [KIND] [LAYOUT]

INCLUSIVE.txt and SELF.txt are `callgrind_annotate --inclusive=yes|no` output. A stage is the
inclusive cost of the functions that do it (a function nested in another stage is subtracted
from that stage, so the stages do not overlap); allocation is the self cost of the allocator's
functions wherever they are called from.

certfab's own instructions per certificate are the whole program's minus what SoftHSM executes
inside `C_Sign` (the token's share: out of process on a real HSM), start-up included; the
difference between two sizes removes the start-up as well.
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
    name = re.sub(r" \(\d+x\)$", "", entry.split(" [")[0].strip())
    if re.match(r"^[^<:]*\.(rs|c|cpp|cc|h|S|s)?:|^\?\?\?:", name):
        name = name.split(":", 1)[1]
    return name


def m(path):
    """`certfab::x::T::f` matching both `certfab::x::T::f` and `<certfab::x::T>::f`."""
    head, f = path.rsplit("::", 1)
    return r"(<%s>|%s)::%s(::<.*>)?" % (re.escape(head), re.escape(head), re.escape(f))


TOKEN = "HSM signature (SoftHSM in-process: C_SignInit + C_Sign)"
STAGES = [
    ("input: read and parse the public key", [m("certfab::csr::parse_public_key")]),
    ("input: parse the CSR and verify its proof of possession", [m("certfab::csr::parse_csr")]),
    ("key policy", [r"certfab::csr::(keypolicy::)?check_key(::<.*>)?"]),
    ("name policy", [r"certfab::csr::(names::)?check_name(::<.*>)?"]),
    ("TBS build", [m("certfab::x509::tbs::build_tbs")]),
    ("lint (incl. its independent re-parse)", [m("certfab::issue::lint::lint")]),
    ("prepare (all of the above and the rest of prepare)", [m("certfab::issue::prepare")]),
    (TOKEN, [r"C_SignInit", r"C_Sign"]),
    ("verify-after-sign (ring, P-256)", [m("certfab::crypto::pubkey::PublicKey::verify")]),
    ("assemble (TBS + signature, twice: lint and sign)", [m("certfab::x509::tbs::assemble")]),
    ("sign + verify + assemble", [m("certfab::issue::sign")]),
    ("ledger: reserve (intent)", [m("certfab::ledger::Ledger::reserve")]),
    ("ledger: record (signed)", [m("certfab::ledger::Ledger::record_group")]),
    ("ledger: audit rows (in reserve and record)", [m("certfab::ledger::audit::append_many")]),
    ("ledger: identity keys (NFKC, skeleton)", [m("certfab::identity::key")]),
    ("audit chain check before the auto-checkpoint", [r"(<certfab::ledger::Ledger>|certfab::ledger::audit::<impl certfab::ledger::Ledger>)::verify_chain"]),
    ("output files (writer's deliver: PEM/JSON line, create, fsync, rename)", [r"(<certfab::batch::output::(Dirs|Writer)>|certfab::batch::output::(Dirs|Writer))::deliver"]),
]
ALLOC = re.compile(r"^(malloc|free|realloc|calloc|_int_malloc|_int_free|_int_realloc|malloc_consolidate|cfree|__libc_malloc|__libc_free|__libc_realloc|__libc_calloc|unlink_chunk.*|tcache.*)$")


def main():
    incl_path, self_path, n, binary = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    kind = sys.argv[5] if len(sys.argv) > 5 else "pubkey"
    layout = sys.argv[6] if len(sys.argv) > 6 else "dirs"
    incl = costs(incl_path)
    grand = total(incl_path)
    stages = {}
    for name, pats in STAGES:
        total_ir, names = 0, []
        for pat in pats:
            rx = re.compile(pat)
            matched = {}
            for ir, entry in incl:
                f = fn_name(entry)
                if rx.fullmatch(f):
                    # The same function can be listed per object/file; count a name once.
                    matched[f] = max(matched.get(f, 0), ir)
            if matched:
                best = max(matched, key=matched.get)
                total_ir += matched[best]
                names.append(best)
        stages[name] = {"ir_per_cert": round(total_ir / n) if names else None, "functions": names}
    alloc = sum(ir for ir, entry in costs(self_path) if ALLOC.match(fn_name(entry)))
    token = stages[TOKEN]["ir_per_cert"] or 0
    print(json.dumps({
        "certfab": binary,
        "kind": kind,
        "layout": layout,
        "devices": n,
        "program_total_ir_per_cert": round(grand / n),
        "certfab_own_ir_per_cert": round(grand / n) - token,
        "stages": stages,
        "allocation_self_ir_per_cert": round(alloc / n),
        "note": "inclusive instruction counts (Ir) per certificate; nested stages (prepare ⊃ parse, policy, TBS, lint; sign ⊃ C_Sign, verify) are listed both ways",
    }, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
