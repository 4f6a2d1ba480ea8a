"""`--caller` and the blast-radius table executed on the real CPU (no Go, no delve).

The harness (tests/support/cond_harness.py) calls a dispatcher D at its entry; D builds a fake
g on its stack (g.stack = [SP - 64 KB, D's frame top]), points R14 at it and, by R10, calls F
(the conditional return stub's function, at F_AT) through one of these call paths, each
function keeping Go's frame-pointer chain (`push rbp; mov rbp,rsp; call ...`):

    R10=1: D -> A -> F                 R10=2: D -> B -> B2 -> F
    R10=3: D -> C1 -> C2 -> C3 -> F    R10=4: D -> G1 -> F with RBP = R11 (garbage)
    R10=5: D -> G2 -> F, G2's frame pointer pointing at itself (a loop)

A faulted call returns 4242, any other F's own result (id + len(name)); every other register
must come back intact (the harness counts differences).
"""
import shutil

import iced_x86 as x86
import pytest

from blade_go.abi.regabi_amd64 import REGABI_AMD64
from blade_go.abi.abi0 import ABI0_386
from blade_go.patch import Patch
from blade_go.stubs import parse_values
from blade_go.stubs.conditions import Conditions, read_counters, read_radius
from blade_go.stubs.conditions_return import plan_conditional_return
from blade_go.stubs.placement import FunctionCode
from tests.support import cond_harness as H
from tests.test_conditions_exec import FAULT, SIMPLE, Args, f_386, f_amd64, sig_of

pytestmark = pytest.mark.skipif(not shutil.which("gcc"), reason="gcc not installed")

R, C, I = x86.Register, x86.Code, x86.Instruction
F_AT = H.CODE + 0x400
AT = {"A": 0x100, "B": 0x140, "B2": 0x180, "C1": 0x1C0, "C2": 0x200, "C3": 0x240,
      "G1": 0x280, "G2": 0x2C0}
AT = {k: H.CODE + v for k, v in AT.items()}


def _enc(addr, insns) -> bytes:
    enc = x86.BlockEncoder(64)
    enc.add_many(insns)
    return enc.encode(addr)


def _framed_call(target):
    return [I.create_reg(C.PUSH_R64, R.RBP), I.create_reg_reg(C.MOV_R64_RM64, R.RBP, R.RSP),
            I.create_branch(C.CALL_REL32_64, target), I.create_reg(C.POP_R64, R.RBP),
            I.create(C.RETNQ)]


def return_address(name) -> int:
    """Return address of the call inside caller `name` (push rbp; mov rbp,rsp; call: 1+3+5)."""
    return AT[name] + 9


def code_patches():
    mo = x86.MemoryOperand
    d = [I.create_reg(C.PUSH_R64, R.RBP), I.create_reg_reg(C.MOV_R64_RM64, R.RBP, R.RSP),
         I.create_reg(C.PUSH_R64, R.R14),
         I.create_reg_i32(C.SUB_RM64_IMM32, R.RSP, 24),
         I.create_reg_mem(C.LEA_R64_M, R.R12, mo(R.RSP, displ=-0x10000, displ_size=8)),
         I.create_mem_reg(C.MOV_RM64_R64, mo(R.RSP), R.R12),
         I.create_reg_mem(C.LEA_R64_M, R.R12, mo(R.RBP, displ=16, displ_size=8)),
         I.create_mem_reg(C.MOV_RM64_R64, mo(R.RSP, displ=8, displ_size=1), R.R12),
         I.create_reg_reg(C.MOV_R64_RM64, R.R14, R.RSP)]
    out_label = H.CODE + 0xF0
    for k, name in ((1, "A"), (2, "B"), (3, "C1"), (4, "G1"), (5, "G2")):
        d += [I.create_reg_i32(C.CMP_RM64_IMM32, R.R10, k)]
        skip = I.create_branch(C.JNE_REL32_64, 0)  # patched below by the block encoder labels
        d += [skip]
    # build as: cmp; jne next; call X; jmp out   (labels via ids)
    d = d[:9]
    body = []
    for k, name in ((1, "A"), (2, "B"), (3, "C1"), (4, "G1"), (5, "G2")):
        nxt = I.create(C.NOPD)
        nxt.ip = 0x1000 + k  # a label: the instruction's ip is its id
        body += [I.create_reg_i32(C.CMP_RM64_IMM32, R.R10, k),
                 I.create_branch(C.JNE_REL32_64, 0x1000 + k),
                 I.create_branch(C.CALL_REL32_64, AT[name]),
                 I.create_branch(C.JMP_REL32_64, 0x2000), nxt]
    end = I.create_reg_i32(C.ADD_RM64_IMM32, R.RSP, 24)
    end.ip = 0x2000
    body += [end, I.create_reg(C.POP_R64, R.R14), I.create_reg(C.POP_R64, R.RBP),
             I.create(C.RETNQ)]
    for ins in d:
        ins.ip = 0
    enc = x86.BlockEncoder(64)
    enc.add_many(d + body)
    disp = enc.encode(H.CODE)
    assert len(disp) < 0x100 and out_label
    parts = [(H.CODE, disp)]
    parts.append((AT["A"], _enc(AT["A"], _framed_call(F_AT))))
    parts.append((AT["B"], _enc(AT["B"], _framed_call(AT["B2"]))))
    parts.append((AT["B2"], _enc(AT["B2"], _framed_call(F_AT))))
    parts.append((AT["C1"], _enc(AT["C1"], _framed_call(AT["C2"]))))
    parts.append((AT["C2"], _enc(AT["C2"], _framed_call(AT["C3"]))))
    parts.append((AT["C3"], _enc(AT["C3"], _framed_call(F_AT))))
    # G1: push rbp; mov rbp, r11 (garbage); call F; pop rbp; ret  (ra = G1 + 9 as well)
    parts.append((AT["G1"], _enc(AT["G1"], [
        I.create_reg(C.PUSH_R64, R.RBP), I.create_reg_reg(C.MOV_R64_RM64, R.RBP, R.R11),
        I.create_branch(C.CALL_REL32_64, F_AT), I.create_reg(C.POP_R64, R.RBP),
        I.create(C.RETNQ)])))
    # G2: push rbp; mov rbp,rsp; call G2b ... G2b: sub rsp,16; [rsp]=rsp; [rsp+8]=0; rbp=rsp;
    # call F; add rsp,16; ... restore rbp from the pushed one
    g2b = AT["G2"] + 0x20
    parts.append((AT["G2"], _enc(AT["G2"], _framed_call(g2b))))
    parts.append((g2b, _enc(g2b, g2b_code())))
    return [Patch(a, b"", bytes(b)) for a, b in parts]


def g2b_code(upto_call=False):
    mo = x86.MemoryOperand
    code = [I.create_reg(C.PUSH_R64, R.RBP),
            I.create_reg_i32(C.SUB_RM64_IMM32, R.RSP, 16),
            I.create_mem_reg(C.MOV_RM64_R64, mo(R.RSP), R.RSP),
            I.create_mem_i32(C.MOV_RM64_IMM32, mo(R.RSP, displ=8, displ_size=1), 0),
            I.create_reg_reg(C.MOV_R64_RM64, R.RBP, R.RSP),
            I.create_branch(C.CALL_REL32_64, F_AT)]
    if upto_call:
        return code
    return code + [I.create_reg_i32(C.ADD_RM64_IMM32, R.RSP, 16),
                   I.create_reg(C.POP_R64, R.RBP), I.create(C.RETNQ)]


def g2_return_address() -> int:
    at = AT["G2"] + 0x20
    return at + len(_enc(at, g2b_code(upto_call=True)))


@pytest.fixture(scope="module")
def h64(tmp_path_factory):
    exe, why = H.build(tmp_path_factory.mktemp("k64"), "amd64")
    assert exe, why
    return exe


def plan64(callers, depth, radius=True, **kw):
    sig = sig_of(8, SIMPLE)
    params = REGABI_AMD64.param_locations(sig)
    results = REGABI_AMD64.result_locations(sig)
    conds = Conditions(callers=tuple(callers), caller_depth=depth, caller_names=("X",),
                       radius=radius, **kw)
    code = FunctionCode.decode(f_amd64(), F_AT, "amd64", name="F")
    p = plan_conditional_return(results, parse_values(str(FAULT), results), conds, "amd64", 8,
                                None, lambda n: H.CAVE, lambda n, a: H.DATA, code,
                                lambda a, n: b"\xcc" * n)
    return code_patches() + [Patch(F_AT, b"", f_amd64())] + p.patches, p, params


def fn_range(name, size=0x40):
    return (AT[name], AT[name] + size)


KEEP = [n for n in H.GPR64 if n not in {"rax", "r12", "r13", "rsp", "rbp"}]


def run_paths(exe, patches, params, paths, threads=4, calls=3000, garbage=0):
    a = Args(params, 8)
    sets = []
    for k in paths:
        regs, stack = a.call(id=7, name="abc")
        regs.update(r10=k, r11=garbage)
        sets.append((regs, stack))
    r = H.run(exe, patches, sets, threads, calls, keep_regs=KEEP, keep_stack=range(H.NSTACK),
              memory=a.mem)
    assert sum(r.clobbered) == 0
    per = {k: [0, 0] for k in paths}
    for t in r.rax:
        for i, v in enumerate(t):
            k = paths[i % len(paths)]
            assert v in (FAULT, 10), hex(v)
            per[k][0] += 1
            per[k][1] += v == FAULT
    return per, r


@pytest.mark.parametrize("depth,callers,faulted", [
    (1, ["A"], {1}),                       # the direct caller
    (1, ["B"], set()),                     # B calls F through B2: not at depth 1
    (2, ["B"], {2}),
    (1, ["B2", "C3"], {2, 3}),
    (3, ["C1"], {3}),
    (2, ["C1"], set()),                    # C1 is the third frame
    (3, ["B"], {2}),
    (8, ["C1", "A"], {1, 3}),
])
@pytest.mark.parametrize("compact", [False, True])
def test_caller_faults_exactly_the_paths_asked(h64, depth, callers, faulted, compact):
    patches, p, params = plan64([fn_range(c) for c in callers], depth, compact=compact)
    paths = [1, 2, 3, 5]
    per, r = run_paths(h64, patches, params, paths)
    for k in paths:
        calls, hits = per[k]
        assert hits == (calls if k in faulted else 0), (k, per)
    # blast radius: one entry per direct call site, counts exact under 4 racing threads
    rows, overflow = read_radius(r.counters, p.layout)
    assert overflow is None
    want = {1: return_address("A"), 2: return_address("B2"), 3: return_address("C3"),
            5: g2_return_address()}
    got = {row["return_address"]: row for row in rows}
    assert set(got) == set(want.values())
    for k in paths:
        row = got[want[k]]
        assert row["calls"] == per[k][0]
        assert row["faulted"] == per[k][1]
        assert row["excluded_by_caller"] == per[k][0] - per[k][1]
    total = read_counters(r.counters, p.layout)
    assert total == {"calls_seen": sum(c for c, _ in per.values()),
                     "calls_faulted": sum(h for _, h in per.values())}


def test_caller_range_ending_at_the_return_address(h64):
    """A range whose end is the return address (a call ending an inlined copy) holds it."""
    ra = return_address("A")
    patches, p, params = plan64([(AT["A"] + 4, ra)], 1)
    per, _ = run_paths(h64, patches, params, [1, 2])
    assert per[1][1] == per[1][0] and per[2][1] == 0
    patches, p, params = plan64([(ra, ra + 4)], 1)  # starts at it: the call is before
    per, _ = run_paths(h64, patches, params, [1])
    assert per[1][1] == 0


@pytest.mark.parametrize("garbage", [0, 7, 0xDEAD0000, (1 << 64) - 8, 0x7FFFFFFFFFF8,
                                     H.DATA + 0x8])
@pytest.mark.parametrize("compact", [False, True])
def test_walk_never_faults_on_a_broken_chain(h64, garbage, compact):
    """RBP zero, unaligned, unmapped, at the top of the address space, or mapped memory outside
    the goroutine's stack: the walk stops (no match), the target lives."""
    patches, p, params = plan64([fn_range("C1"), fn_range("A")], 8, compact=compact)
    per, _ = run_paths(h64, patches, params, [4, 5, 1], threads=2, calls=500, garbage=garbage)
    assert per[4][1] == 0 and per[5][1] == 0 and per[1][1] == per[1][0]


@pytest.mark.parametrize("compact", [False, True])
def test_caller_with_other_conditions_and_overflow(h64, compact):
    """--caller with --effect-count; a table too small for the sites (all but the overflow
    entry prefilled by other addresses) puts new sites in the overflow entry."""
    from blade_go.stubs import conditions as K
    patches, p, params = plan64([fn_range("B2"), fn_range("C3")], 1, count=1000,
                                compact=compact)
    per, r = run_paths(h64, patches, params, [1, 2, 3])
    assert per[1][1] == 0 and per[2][1] + per[3][1] == 1000
    rows, _ = read_radius(r.counters, p.layout)
    other = sum(x["rejected_by_other_conditions"] for x in rows)
    assert other == per[2][0] + per[3][0] - 1000
    # overflow
    patches, p, params = plan64([fn_range("A")], 1, compact=compact)
    data = [x for x in patches if x.addr == H.DATA][0]
    img = bytearray(data.replacement)
    for k in range(K.SLOTS):
        at = K.TABLE + k * K.ENTRY
        img[at:at + 8] = (0x5000 + k).to_bytes(8, "little")
    img[K.NEXT:K.NEXT + 8] = K.SLOTS.to_bytes(8, "little")
    patches = [x for x in patches if x.addr != H.DATA] + [Patch(H.DATA, b"", bytes(img))]
    per, r = run_paths(h64, patches, params, [1, 2])
    rows, overflow = read_radius(r.counters, p.layout)
    assert overflow["calls"] == per[1][0] + per[2][0]
    assert overflow["faulted"] == per[1][1] == per[1][0]
    assert all(x["calls"] == 0 for x in rows)


@pytest.mark.parametrize("compact", [False, True])
def test_radius_without_caller_counts_every_site(h64, compact):
    patches, p, params = plan64([], 1, compact=compact)
    per, r = run_paths(h64, patches, params, [1, 2, 3])
    rows, _ = read_radius(r.counters, p.layout)
    assert sorted(x["calls"] for x in rows) == sorted(c for c, _ in per.values())
    assert all(x["faulted"] == x["calls"] for x in rows)


# --------------------------------------------------------------------------- 386: depth 1

@pytest.fixture(scope="module")
def h32(tmp_path_factory):
    exe, why = H.build(tmp_path_factory.mktemp("k32"), "386")
    if not exe:
        from tests.support.toolchains import missing
        missing(f"gcc -m32 unavailable (install gcc-multilib): {why.strip()[:200]}")
    return exe


def _symbol(exe, name) -> int:
    import subprocess
    out = subprocess.run(["nm", str(exe)], capture_output=True, text=True).stdout
    return next(int(ln.split()[0], 16) for ln in out.splitlines() if ln.endswith(" " + name))


@pytest.mark.parametrize("inside", [True, False])
def test_caller_depth1_and_radius_386(h32, inside):
    """F is called straight from the harness's trampoline call_f: --caller with a range over
    call_f faults every call, a range elsewhere none; the table has call_f's one site."""
    tramp = _symbol(h32, "call_f")
    rng = (tramp, tramp + 0x200) if inside else (tramp + 0x1000, tramp + 0x1100)
    sig = sig_of(4, SIMPLE)
    params, results = ABI0_386.param_locations(sig), ABI0_386.result_locations(sig)
    conds = Conditions(callers=(rng,), caller_depth=1, caller_names=("X",), radius=True)
    code = FunctionCode.decode(f_386(16), H.ENTRY, "386", name="F")
    p = plan_conditional_return(results, parse_values(str(FAULT), results), conds, "386", 4,
                                None, lambda n: H.CAVE, lambda n, a: H.DATA, code,
                                lambda a, n: b"\xcc" * n)
    a = Args(params, 4)
    slot = (results[0].pieces[0].sp_offset - 4) // 4
    r = H.run(h32, [Patch(H.ENTRY, b"", f_386(16))] + p.patches, [a.call(id=7, name="abc")],
              4, 2000, slot=slot, keep_regs=("ebx", "edx", "esi", "edi"),
              keep_stack=[k for k in range(H.NSTACK) if k != slot], memory=a.mem, ptrsize=4)
    assert sum(r.clobbered) == 0
    got = r.all("slot")
    assert all(v == (FAULT if inside else 10) for v in got)
    rows, overflow = read_radius(r.counters, p.layout)
    assert overflow is None and len(rows) == 1
    assert tramp < rows[0]["return_address"] < tramp + 0x200
    assert rows[0]["calls"] == 8000
    assert rows[0]["faulted"] == (8000 if inside else 0)
    assert rows[0]["excluded_by_caller"] == (0 if inside else 8000)


def test_depth_beyond_one_is_refused_on_386():
    from blade_go.stubs.conditions import emit_prefix
    from blade_go.stubs.conditions_x86 import Asm
    conds = Conditions(callers=((0x1000, 0x2000),), caller_depth=2, caller_names=("X",))
    with pytest.raises(ValueError):
        emit_prefix(Asm("386"), conds)
