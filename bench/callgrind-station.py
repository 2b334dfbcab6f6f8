#!/usr/bin/env python3
"""Per-stage instructions per station device from two callgrind profiles of `certfab --json
station`, shifts of N and of 2N devices (bench/callgrind-station.sh).

    callgrind-station.py N CERTFAB TREE_N SELF_N TREE_2N SELF_2N

TREE is `callgrind_annotate --inclusive=yes --tree=calling` output (each function's inclusive
cost, then the inclusive cost of each function it calls), SELF `--inclusive=no`. Every figure
is (cost in the 2N shift - cost in the N shift) / N: the start-up (site, token login, the CA
checks, the adapter's hello) is the same in both and cancels.

A stage is the inclusive cost of the functions that do it, less the calls it makes into another
stage (`minus`), so the stages do not overlap and "rest" is what none of them covers. The
allocator is the self cost of malloc/free and friends wherever they are called from (it is
inside the stages too, so it is not added to them). certfab's own instructions are the program's
minus what SoftHSM executes inside C_SignInit/C_Sign (on a real HSM that runs in the token).
"""
import importlib.util
import json
import os
import platform
import re
import sys

HEAD = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+\*\s+(.*)$")
CALLEE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+>\s+(.*)$")
SELF = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$")

# The batch script's reader of callgrind_annotate output (function names, program totals).
_spec = importlib.util.spec_from_file_location(
    "callgrind_stages", os.path.join(os.path.dirname(os.path.abspath(__file__)), "callgrind-stages.py")
)
_stages = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_stages)
fn_name, total = _stages.fn_name, _stages.total


def tree(path):
    """{function: (inclusive, {callee: inclusive of the calls})}, summed over entries that
    callgrind lists apart (one per object or file, or per monomorphised copy)."""
    funcs, cur = {}, None
    for line in open(path, encoding="utf-8", errors="replace"):
        m = HEAD.match(line)
        if m:
            name = fn_name(m.group(2))
            incl, callees = funcs.get(name, (0, {}))
            funcs[name] = (incl + int(m.group(1).replace(",", "")), callees)
            cur = name
            continue
        m = CALLEE.match(line)
        if m and cur is not None:
            callee = fn_name(m.group(2))
            callees = funcs[cur][1]
            callees[callee] = callees.get(callee, 0) + int(m.group(1).replace(",", ""))
            continue
        if not line.strip() or line.startswith("-"):
            cur = None
    return funcs


def m(path):
    """`certfab::x::T::f` matching `certfab::x::T::f`, `certfab::x::T<S>::f`,
    `<certfab::x::T>::f`, `<certfab::x::T as Trait>::f` and generic copies (`::<..>`)."""
    head, f = path.rsplit("::", 1)
    h = re.escape(head)
    return r"(<%s(<[^>]*>)?( as [^>]*)?>|%s(<[^>]*>)?)::%s(::<.*>)?" % (h, h, re.escape(f))


def ledger(f):
    """A `Ledger` method, also from an `impl Ledger` block in a submodule."""
    return r"certfab::ledger::(Ledger|.*<impl certfab::ledger::Ledger>)::%s" % f


# The link threads (reader, stderr forwarder) run their loops inlined into thread_start.
ADAPTER = [m("certfab::station::client::Adapter::call"), r"certfab::station::link::reader.*", r".*::thread_start"]
CSR = [m("certfab::csr::parse_csr")]
SIGNER = [r"<certfab::hsm::[^ ]* as certfab::crypto::signer::Signer>::sign"]
VERIFY = m("certfab::crypto::pubkey::PublicKey::verify")
TOKEN = [r"C_SignInit", r"C_Sign"]
LEDGER = [ledger(f) for f in ("reserve", "record_signed_with", "record_attempt_with", "device",
                              "set_device_state", "record_group")]
# `prove` (often inlined into prove_and_lock): what it calls to check the device's signature.
PROVE = [m("certfab::station::device::Shift::prove"), m("certfab::station::device::Shift::prove_and_lock")]
PROVE_CHECK = r"(%s|%s|%s|der::decode::Decode::from_der|der::encode::Encode::to_der|core::ptr::drop_in_place<x509_cert::.*>|certfab::station::device::cert_public_key|certfab::x509::signed::(cert_spki|split_signed))" % (
    VERIFY, m("certfab::crypto::pubkey::PublicKey::from_spki_der"), m("certfab::crypto::pubkey::PublicKey::default_signature"))
# (stage, functions whose inclusive cost it is, (caller, callee) call edges whose inclusive
# cost it is, functions inside it that belong to another stage: their whole inclusive cost is
# taken off)
STAGES = [
    ("adapter protocol I/O (requests, replies, decode, link threads)", ADAPTER, [], []),
    ("JSON events (--json)", [r"<certfab::cli::station::Ui as certfab::station::Observer>::event"], [], []),
    ("proof of possession (CSR parse + signature verify)", CSR, [], []),
    ("prepare without the CSR (key/name policy, TBS, lint)", [m("certfab::issue::prepare")], [], CSR),
    ("HSM sign (certfab's side: session, hash, DER)", SIGNER, [], TOKEN),
    ("HSM sign (SoftHSM in-process: C_SignInit + C_Sign)", TOKEN, [], []),
    ("verify-after-sign (CA key)", [], [(m("certfab::issue::sign"), VERIFY),
                                        (m("certfab::issue::record::issue_one_then"), VERIFY)], []),
    ("proof-of-install verify (prove: cert key, signature)", [], [(p, PROVE_CHECK) for p in PROVE], []),
    ("ledger (reads and commits)", LEDGER, [], []),
    ("install files (PEM, chain, config, SHA-256)", [m("certfab::station::device::Shift::files")], [], []),
]
ALLOC = re.compile(r"^(malloc|free|realloc|calloc|_int_malloc|_int_free|_int_realloc|malloc_consolidate|cfree|__libc_malloc|__libc_free|__libc_realloc|__libc_calloc|unlink_chunk.*|tcache.*|__rust_alloc|__rust_dealloc|__rust_realloc|__rdl_alloc|__rdl_dealloc|__rdl_realloc)$")


def matching(funcs, pats):
    return {f for f in funcs for p in pats if re.fullmatch(p, f)}


def stage_cost(funcs, pats, edges, minus):
    names = matching(funcs, pats)
    cost = sum(funcs[f][0] for f in names)
    for f in matching(funcs, minus):
        cost -= funcs[f][0]
    for caller, callee in edges:
        for f in matching(funcs, [caller]):
            for g, c in funcs[f][1].items():
                if re.fullmatch(callee, g):
                    cost += c
                    names.add(f"{f} -> {g}")
    return cost, sorted(names)


def alloc(path):
    return sum(int(mm.group(1).replace(",", "")) for line in open(path, encoding="utf-8", errors="replace")
               if (mm := SELF.match(line)) and ALLOC.match(fn_name(mm.group(2))))


def main():
    n, binary = int(sys.argv[1]), sys.argv[2]
    t1, s1, t2, s2 = sys.argv[3:7]
    f1, f2 = tree(t1), tree(t2)
    per = lambda a, b: round((b - a) / n)
    grand = per(total(t1), total(t2))
    stages, covered = {}, 0
    for name, pats, edges, minus in STAGES:
        c1, _ = stage_cost(f1, pats, edges, minus)
        c2, names = stage_cost(f2, pats, edges, minus)
        stages[name] = {"ir_per_device": per(c1, c2), "functions": names}
        covered += per(c1, c2)
    token = stages["HSM sign (SoftHSM in-process: C_SignInit + C_Sign)"]["ir_per_device"]
    stages["rest (station flow, clock, logs, everything not above)"] = {"ir_per_device": grand - covered, "functions": []}
    print(json.dumps({
        "certfab": binary,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "devices": [n, 2 * n],
        "program_ir_per_device": grand,
        "certfab_own_ir_per_device": grand - token,
        "stages": stages,
        "allocator_self_ir_per_device": per(alloc(s1), alloc(s2)),
        "note": "(cost of the 2N shift - cost of the N shift) / N, instructions (Ir); stages do not overlap; the allocator is counted inside them too",
    }, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
