"""Conditional return stubs executed on the real CPU, from racing threads (no Go, no delve).

F is a small function written at the harness's entry whose first instructions include a short
conditional branch (relocated into the cave on the skip path, as Go's `jbe morestack` is):

    amd64 (register ABI, id in RAX, len(name) in RCX):   386 (ABI0, result at [esp+R]):
      test rax,rax ; js neg ; add rax,rcx ; ret             mov eax,[esp+4] ; test eax,eax ; js neg
      neg: mov rax,-1 ; ret                                 add eax,[esp+12] ; mov [esp+R],eax ; ret
                                                            neg: mov dword [esp+R],-1 ; ret
A faulted call returns 4242; any other call must return F's own result with every argument
register, R14/RDX and every stack word intact (the harness counts differences).
"""
import math
import shutil
import struct

import pytest

from blade_go.abi.abi0 import ABI0_386, ABI0_AMD64
from blade_go.abi.regabi_amd64 import REGABI_AMD64
from blade_go.errors import BladeError
from blade_go.inspector.gotypes import Field, GoType, Kind, Param, Signature, basic
from blade_go.patch import Patch
from blade_go.stubs import parse_values
from blade_go.stubs.conditions import Conditions, read_counters
from blade_go.stubs.conditions_match import parse_match
from blade_go.stubs.conditions_return import plan_conditional_return
from blade_go.stubs.placement import FunctionCode
from tests.support import cond_harness as H

pytestmark = pytest.mark.skipif(not shutil.which("gcc"), reason="gcc not installed")

FAULT = 4242
STRS = H.DATA + 0x1000  # argument strings / structs live here


def f_amd64() -> bytes:
    return bytes.fromhex("4885c0" "7804" "4801c8" "c3" "48c7c0ffffffff" "c3")


def f_386(res: int) -> bytes:
    return (bytes.fromhex("8b442404" "85c0" "7809" "0344240c") + bytes([0x89, 0x44, 0x24, res])
            + b"\xc3" + bytes([0xC7, 0x44, 0x24, res]) + b"\xff\xff\xff\xff" + b"\xc3")


@pytest.fixture(scope="module")
def h64(tmp_path_factory):
    exe, why = H.build(tmp_path_factory.mktemp("c64"), "amd64")
    assert exe, why
    return exe


@pytest.fixture(scope="module")
def h32(tmp_path_factory):
    exe, why = H.build(tmp_path_factory.mktemp("c32"), "386")
    if not exe:
        from tests.support.toolchains import missing
        missing(f"gcc -m32 unavailable (install gcc-multilib): {why.strip()[:200]}")
    return exe


def types(ptrsize):
    p = ptrsize
    t = {"int": basic("int", Kind.INT, p), "string": GoType("string", Kind.STRING, 2 * p, p),
         "bool": basic("bool", Kind.BOOL, 1), "int8": basic("int8", Kind.INT, 1),
         "uint16": basic("uint16", Kind.UINT, 2), "uint64": basic("uint64", Kind.UINT, 8, p),
         "int64": basic("int64", Kind.INT, 8, p), "int32": basic("int32", Kind.INT, 4)}
    rec = GoType("main.Rec", Kind.STRUCT, 3 * p, p, fields=(
        Field("region", 0, t["string"]), Field("n", 2 * p, t["int32"])))
    t["*Rec"] = GoType("*main.Rec", Kind.POINTER, p, p, elem=rec)
    return t


def sig_of(ptrsize, names_types, result="int"):
    t = types(ptrsize)
    return Signature(tuple(Param(n, t[ty]) for n, ty in names_types),
                     (Param("~r0", t[result], True),))


SIMPLE = [("id", "int"), ("name", "string")]
MANY = [("id", "int"), ("name", "string"), ("flag", "bool"), ("small", "int8"),
        ("u", "uint16"), ("big", "uint64"), ("p", "*Rec"), ("neg", "int64")]


def plan(arch, abi, sig, conds_kw=None, match=None, after=False, fcode=None):
    params = abi.param_locations(sig)
    results = abi.result_locations(sig)
    values = parse_values(str(FAULT), results)
    matches = parse_match(match, params, abi.ptrsize, "F")
    conds = Conditions(matches=matches, **(conds_kw or {}))
    code = FunctionCode.decode(fcode, H.ENTRY, arch, name="F")
    p = plan_conditional_return(results, values, conds, arch, abi.ptrsize, None,
                                lambda n: H.CAVE, lambda n, a: H.DATA, code,
                                lambda a, n: b"\xcc" * n, after=after)
    return [Patch(H.ENTRY, b"", fcode)] + p.patches, p, params, results


# --------------------------------------------------------------------- argument images

class Args:
    """Builds register/stack inputs for one call from Python values, per the ABI's locations."""

    def __init__(self, params, ptrsize):
        self.params, self.p = params, ptrsize
        self.mem = []
        self.next = STRS

    def _put(self, data: bytes) -> int:
        addr = self.next
        self.mem.append((addr, data))
        self.next += (len(data) + 15) // 16 * 16 + 16
        return addr

    def image(self, t, v) -> bytes:
        p = self.p
        if t.kind == Kind.STRING:
            b = v.encode()
            return (self._put(b) if b else 0).to_bytes(p, "little") + len(b).to_bytes(p, "little")
        if t.kind == Kind.POINTER:
            if v is None:
                return bytes(p)
            region, n = v
            s = self.image(t.elem.fields[0].type, region)
            obj = s + struct.pack("<i", n) + bytes(t.elem.size - len(s) - 4)
            return self._put(obj).to_bytes(p, "little")
        return (v & ((1 << (8 * t.size)) - 1)).to_bytes(t.size, "little")

    def call(self, **vals):
        regs, stack = {}, bytearray(b"\xab" * (8 * H.NSTACK if self.p == 8 else 4 * H.NSTACK))
        for loc in self.params:
            img = self.image(loc.type, vals[loc.name])
            for pc in loc.pieces:
                chunk = img[pc.value_offset:pc.value_offset + pc.size]
                if pc.where == "reg":
                    # junk in the upper bits a register may carry for small values
                    junk = 0xDEAD_BEEF_0000_0000 if pc.size < 8 else 0
                    regs[pc.reg.lower()] = int.from_bytes(chunk, "little") | (
                        junk & ~((1 << (8 * pc.size)) - 1))
                else:
                    k = pc.sp_offset - self.p
                    stack[k:k + pc.size] = chunk
        words = [int.from_bytes(stack[i:i + self.p], "little") for i in range(0, len(stack), self.p)]
        return regs, words


def expected_f(vals):
    return (1 << 64) - 1 if vals["id"] < 0 else vals["id"] + len(vals["name"])


SCRATCH64 = {"rax", "r12", "r13", "rsp", "rbp"}


def keep64():
    return [n for n in H.GPR64 if n not in SCRATCH64]


# --------------------------------------------------------------------------- counts

@pytest.mark.parametrize("threads,calls,n", [(8, 100000, 750000), (8, 3000, 1)])
def test_effect_count_exact_under_racing_threads_amd64(h64, threads, calls, n):
    sig = sig_of(8, SIMPLE)
    patches, p, params, _ = plan("amd64", REGABI_AMD64, sig, {"count": n}, fcode=f_amd64())
    a = Args(params, 8)
    sets = [a.call(id=7, name="abc"), a.call(id=-3, name="x")]
    r = H.run(h64, patches, sets, threads, calls, keep_regs=keep64(),
              keep_stack=range(H.NSTACK), memory=a.mem)
    r.layout = p.layout
    assert sum(r.clobbered) == 0
    values = r.all()
    assert sum(v == FAULT for v in values) == n
    assert all(v in (FAULT, 10, (1 << 64) - 1) for v in values)
    assert read_counters(r.counters, r.layout) == {"calls_seen": threads * calls, "calls_faulted": n}


def test_effect_count_exact_under_racing_threads_386(h32):
    sig = sig_of(4, SIMPLE)
    # enough calls, started together, that a count without a lock would lose tickets
    patches, p, params, results = plan("386", ABI0_386, sig, {"count": 750000},
                                       fcode=f_386(16))
    a = Args(params, 4)
    sets = [a.call(id=7, name="abc"), a.call(id=-3, name="x")]
    slot = (results[0].pieces[0].sp_offset - 4) // 4
    r = H.run(h32, patches, sets, 8, 100000, slot=slot, keep_regs=("ebx", "edx", "esi", "edi"),
              keep_stack=[k for k in range(H.NSTACK) if k != slot], memory=a.mem, ptrsize=4)
    r.layout = p.layout
    assert sum(r.clobbered) == 0
    got = r.all("slot")
    assert sum(v == FAULT for v in got) == 750000
    assert all(v in (FAULT, 10, 0xFFFFFFFF) for v in got)
    assert read_counters(r.counters, r.layout) == {"calls_seen": 800000, "calls_faulted": 750000}


# --------------------------------------------------------------------------- percent

def binom_bounds(n, p, alpha=1e-6):
    """Smallest lo and largest hi with P(X < lo) <= alpha/2 and P(X > hi) <= alpha/2."""
    logpmf = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
              + (k * math.log(p) if k else 0) + ((n - k) * math.log1p(-p) if n - k else 0)
              for k in range(n + 1)]
    pmf = [math.exp(x) for x in logpmf]
    acc, lo = 0.0, 0
    while acc + pmf[lo] <= alpha / 2:
        acc += pmf[lo]
        lo += 1
    acc, hi = 0.0, n
    while acc + pmf[hi] <= alpha / 2:
        acc += pmf[hi]
        hi -= 1
    return lo, hi


def _percent_run(exe, arch, percent, threads, calls):
    ptr = 8 if arch == "amd64" else 4
    abi = REGABI_AMD64 if arch == "amd64" else ABI0_386
    fcode = f_amd64() if arch == "amd64" else f_386(16)
    patches, p, params, results = plan(arch, abi, sig_of(ptr, SIMPLE), {"percent": percent},
                                       fcode=fcode)
    a = Args(params, ptr)
    sets = [a.call(id=7, name="abc")]
    slot = 0 if arch == "amd64" else (results[0].pieces[0].sp_offset - 4) // 4
    r = H.run(exe, patches, sets, threads, calls, slot=slot, memory=a.mem, ptrsize=ptr)
    r.layout = p.layout
    got = r.all("rax" if arch == "amd64" else "slot")
    assert all(v in (FAULT, 10) for v in got)
    return [v == FAULT for v in got], r


@pytest.mark.parametrize("arch", ["amd64", "386"])
@pytest.mark.parametrize("percent", [30, 1, 97])
def test_effect_percent_binomial(h64, h32, arch, percent):
    n, p = 20000, percent / 100
    fired, r = _percent_run(h64 if arch == "amd64" else h32, arch, percent, 1, n)
    lo, hi = binom_bounds(n, p)
    assert lo <= sum(fired) <= hi, (sum(fired), lo, hi)
    # independence of consecutive calls: disjoint pairs where both fire ~ Binomial(n/2, p^2)
    both = sum(fired[k] and fired[k + 1] for k in range(0, n, 2))
    lo2, hi2 = binom_bounds(n // 2, p * p)
    assert lo2 <= both <= hi2, (both, lo2, hi2)
    assert read_counters(r.counters, r.layout) == {"calls_seen": n, "calls_faulted": sum(fired)}


@pytest.mark.parametrize("arch", ["amd64", "386"])
def test_effect_percent_racing_threads_and_edges(h64, h32, arch):
    exe = h64 if arch == "amd64" else h32
    fired, r = _percent_run(exe, arch, 50, 8, 2500)
    lo, hi = binom_bounds(20000, 0.5)
    assert lo <= sum(fired) <= hi
    assert read_counters(r.counters, r.layout)["calls_seen"] == 20000  # no lost update of the counter
    assert not any(_percent_run(exe, arch, 0, 2, 2000)[0])
    assert all(_percent_run(exe, arch, 100, 2, 2000)[0])


# --------------------------------------------------------------------------- matchers

CALLS = [
    dict(id=42, name="tenant-a", flag=True, small=-5, u=65535, big=(1 << 64) - 2,
         p=("eu", 7), neg=-(1 << 40)),
    dict(id=41, name="tenant-", flag=False, small=-5, u=1, big=3, p=None, neg=5),
    dict(id=1000, name="bob", flag=True, small=-128, u=300, big=1 << 63, p=("eu-west", -1),
         neg=-1),
    dict(id=-7, name="", flag=False, small=127, u=0, big=0, p=("us", 1 << 20), neg=1 << 40),
    dict(id=1 << 40, name="tenant-zzzzzzzzzzzzzzzzzzzzzzzzz", flag=True, small=0, u=299,
         big=(1 << 64) - 1, p=("", 0), neg=-(1 << 63)),
]
C = CALLS


def _region(c):
    return None if c["p"] is None else c["p"][0]


# (expression, predicate over a call's values); pointers to a nil struct never match a field
MATCHERS = [
    ("id==42", lambda c: c["id"] == 42),
    ("id!=42", lambda c: c["id"] != 42),
    ("id>=1000", lambda c: c["id"] >= 1000),
    ("#0<0", lambda c: c["id"] < 0),
    ("id<=41 && id>-8", lambda c: -8 < c["id"] <= 41),
    ('name=="bob"', lambda c: c["name"] == "bob"),
    ('name!="bob"', lambda c: c["name"] != "bob"),
    ('name^="tenant-"', lambda c: c["name"].startswith("tenant-")),
    ('name==""', lambda c: c["name"] == ""),
    ('name^="tenant-zzzzzzzzz"', lambda c: c["name"].startswith("tenant-zzzzzzzzz")),
    ("flag==true", lambda c: c["flag"]),
    ("flag!=true && small<0", lambda c: not c["flag"] and c["small"] < 0),
    ("small<0", lambda c: c["small"] < 0),
    ("small>=-128 && small<=-5", lambda c: -128 <= c["small"] <= -5),
    ("u>299", lambda c: c["u"] > 299),
    ("big>=0x8000000000000000", lambda c: c["big"] >= 1 << 63),
    ("big==18446744073709551614", lambda c: c["big"] == (1 << 64) - 2),
    ("big<4", lambda c: c["big"] < 4),
    ("neg<0", lambda c: c["neg"] < 0),
    ("neg>-1099511627776", lambda c: c["neg"] > -(1 << 40)),
    ("neg<=1099511627776 && neg>=-1", lambda c: -1 <= c["neg"] <= 1 << 40),
    ("p==nil", lambda c: c["p"] is None),
    ("p!=nil", lambda c: c["p"] is not None),
    ('p.region=="eu"', lambda c: _region(c) == "eu"),
    ('p.region^="eu" && p.n<0', lambda c: (_region(c) or "x").startswith("eu") and c["p"][1] < 0),
    ("p.n>=1048576", lambda c: c["p"] is not None and c["p"][1] >= 1 << 20),
    ('id==42 && name^="tenant-" && flag==true', lambda c: c["id"] == 42
     and c["name"].startswith("tenant-") and c["flag"]),
]


def _matcher_run(exe, arch, abi, expr):
    ptr = abi.ptrsize
    if ptr == 4:  # ints are 32-bit on 386
        calls = [dict(c, id=c["id"] if -(1 << 31) <= c["id"] < 1 << 31 else 5) for c in CALLS]
    else:
        calls = CALLS
    sig = sig_of(ptr, MANY)
    fcode = f_amd64() if arch == "amd64" else f_386(sig_offset_of_result(abi, sig))
    patches, p, params, results = plan(arch, abi, sig, match=expr, fcode=fcode)
    a = Args(params, ptr)
    sets = [a.call(**c) for c in calls]
    res = results[0].pieces[0]
    slot = 0 if res.where == "reg" else (res.sp_offset - ptr) // ptr
    keep = keep64() if ptr == 8 else ["ebx", "edx", "esi", "edi"]
    r = H.run(exe, patches, sets, 1, len(sets), slot=slot, keep_regs=keep,
              keep_stack=[k for k in range(H.NSTACK) if res.where == "reg" or k != slot],
              memory=a.mem, ptrsize=ptr)
    r.layout = p.layout
    assert r.clobbered == [0]
    if res.where == "reg":
        got = [v == FAULT for v in r.rax[0]]
        for c, v in zip(calls, r.rax[0]):
            assert v in (FAULT, expected_f(c) & ((1 << 64) - 1))
    else:
        got = [v == FAULT for v in r.slot[0]]
        for (_, words), v in zip(sets, r.slot[0]):
            assert v == FAULT or abi is ABI0_386 or v == words[slot]
    return calls, got, r


def sig_offset_of_result(abi, sig):
    return abi.result_locations(sig)[0].pieces[0].sp_offset


@pytest.mark.parametrize("expr,pred", MATCHERS, ids=[m[0] for m in MATCHERS])
@pytest.mark.parametrize("abi_name", ["regabi", "abi0-amd64", "abi0-386"])
def test_matchers(h64, h32, abi_name, expr, pred):
    abi, arch, exe = {"regabi": (REGABI_AMD64, "amd64", h64),
                      "abi0-amd64": (ABI0_AMD64, "amd64", h64),
                      "abi0-386": (ABI0_386, "386", h32)}[abi_name]
    calls, got, r = _matcher_run(exe, arch, abi, expr)
    want = [bool(pred(c)) for c in calls]
    assert got == want, (expr, got, want)
    assert any(want) or expr.startswith("p.n"), "each matcher should select some call"
    assert read_counters(r.counters, r.layout) == {"calls_seen": len(calls), "calls_faulted": sum(want)}


def test_matchers_with_count_and_percent_compose(h64):
    sig = sig_of(8, MANY)
    patches, p, params, _ = plan("amd64", REGABI_AMD64, sig, {"count": 3, "percent": 100},
                                 match='name^="tenant-"', fcode=f_amd64())
    a = Args(params, 8)
    sets = [a.call(**c) for c in CALLS]
    r = H.run(h64, patches, sets, 1, 50, keep_regs=keep64(), memory=a.mem)
    r.layout = p.layout
    fired = [(k % 5, v == FAULT) for k, v in enumerate(r.rax[0])]
    # only calls 0, 1, 4 of each round match; the first 3 of them fault, then none
    assert [k for k, f in fired if f] == [0, 1, 4]
    assert read_counters(r.counters, r.layout) == {"calls_seen": 50, "calls_faulted": 3}


# --------------------------------------------------------------------------- --after

def test_after_replaces_results_on_every_return_path_amd64(h64):
    sig = sig_of(8, SIMPLE)
    patches, p, params, _ = plan("amd64", REGABI_AMD64, sig, {"count": 4}, after=True,
                                 fcode=f_amd64())
    assert len(p.sites) == 2  # both RETs routed
    a = Args(params, 8)
    sets = [a.call(id=7, name="abc"), a.call(id=-3, name="x")]
    r = H.run(h64, patches, sets, 1, 10, keep_regs=keep64(), keep_stack=range(H.NSTACK),
              memory=a.mem)
    r.layout = p.layout
    assert r.clobbered == [0]
    assert r.rax[0] == [FAULT] * 4 + [10, (1 << 64) - 1] * 3


def test_after_replaces_results_on_every_return_path_386(h32):
    sig = sig_of(4, SIMPLE)
    patches, p, params, results = plan("386", ABI0_386, sig, {"count": 3}, after=True,
                                       fcode=f_386(16))
    assert len(p.sites) == 2
    a = Args(params, 4)
    sets = [a.call(id=7, name="abc"), a.call(id=-3, name="x")]
    r = H.run(h32, patches, sets, 1, 8, slot=3, keep_regs=("ebx", "edx", "esi", "edi"),
              keep_stack=[k for k in range(H.NSTACK) if k != 3], memory=a.mem, ptrsize=4)
    r.layout = p.layout
    assert r.slot[0] == [FAULT] * 3 + [0xFFFFFFFF, 10, 0xFFFFFFFF, 10, 0xFFFFFFFF]


def test_after_refusals():
    sig = sig_of(8, SIMPLE)
    with pytest.raises(BladeError, match="--match cannot be combined with --after"):
        plan("amd64", REGABI_AMD64, sig, match="id==1", after=True, fcode=f_amd64())
    tail = bytes.fromhex("4885c0" "7405" "e9f0ffffff" "c3")  # test; je ret; jmp <outside>; ret
    with pytest.raises(BladeError, match="tail call"):
        plan("amd64", REGABI_AMD64, sig, {"count": 1}, after=True, fcode=tail)
    into = bytes.fromhex("4885c0" "7401" "90" "c3")  # a branch lands on the RET: inside the site
    with pytest.raises(BladeError, match="every return of F must be patched"):
        plan("amd64", REGABI_AMD64, sig, {"count": 1}, after=True, fcode=into)


def test_stack_check_runs_before_the_prefix_so_a_growing_call_is_decided_once(h64):
    # F's first instructions mimic Go's stack check: a conditional branch to a block that
    # calls (morestack) and jumps back to F's entry; here the "slow path" negates id first.
    f = bytearray(b"\xcc" * 0x41)
    f[0:22] = bytes.fromhex("4885c0" "7804" "4801c8" "c3"       # test; js ms; add; ret
                            "48f7d8" "e82f000000" "e9eaffffff")  # ms: neg rax; call; jmp F
    f[0x40] = 0xC3                                              # the "morestack" callee
    sig = sig_of(8, SIMPLE)
    patches, p, params, _ = plan("amd64", REGABI_AMD64, sig, match="id==7", fcode=bytes(f))
    assert "(F's entry, relocated" in p.listing.split("lock inc")[0]  # before the prefix
    a = Args(params, 8)
    sets = [a.call(id=-7, name="abc"), a.call(id=3, name="abc")]
    r = H.run(h64, patches, sets, 1, 4, keep_regs=keep64(), keep_stack=range(H.NSTACK),
              memory=a.mem)
    r.layout = p.layout
    assert r.rax[0] == [FAULT, 6, FAULT, 6]
    # each call seen once: the pass through the slow path is decided after it, not before
    assert read_counters(r.counters, r.layout) == {"calls_seen": 4, "calls_faulted": 2}


def test_whole_stack_check_displaced_on_386(h32):
    # 386's check is longer than the 5-byte jmp (mov ecx,...; cmp; jbe): the site grows to
    # the whole check so it can run first; here: mov ecx,[esp+4]; test ecx,ecx; js ms.
    f = bytearray(b"\xcc" * 0x41)
    f[0:35] = bytes.fromhex("8b4c2404" "85c9" "780d"                     # the "check"
                            "8b442404" "0344240c" "89442410" "c3"          # body
                            "f75c2404" "e822000000" "e9ddffffff")        # ms: neg id; call; jmp F
    f[0x40] = 0xC3
    sig = sig_of(4, SIMPLE)
    patches, p, params, results = plan("386", ABI0_386, sig, match="id==7", fcode=bytes(f))
    head = p.listing.split("lock add")[0]
    assert "mov ecx,[esp+4]" in head and "js " in head  # all three, before the prefix
    a = Args(params, 4)
    sets = [a.call(id=-7, name="abc"), a.call(id=3, name="abc")]
    r = H.run(h32, patches, sets, 1, 4, slot=3, keep_regs=("ebx", "edx", "esi", "edi"),
              memory=a.mem, ptrsize=4)
    r.layout = p.layout
    assert r.slot[0] == [FAULT, 6, FAULT, 6]
    assert read_counters(r.counters, r.layout) == {"calls_seen": 4, "calls_faulted": 2}
