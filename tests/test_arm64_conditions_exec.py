"""arm64 conditional return stubs executed on an arm64 CPU model (qemu-aarch64 -cpu neoverse-n1),
called from racing goroutines of a Go program (tests/support/arm64_harness.py; no delve).

F, written at the harness's ENTRY, has Go's shape (register ABI: id in R0, name in R1/R2):

    ldr x16,[x28,#16]; cmp sp,x16; b.ls ms     ; the stack check (relocated into the stub)
    tbnz x0,#63,neg; add x0,x0,x2; ret         ; id + len(name)
    neg: movn x0,#0; ret                       ; -1
    ms:  mov x20,x30; bl morestack; mov x30,x20; b F ; taken when Go asks for a preemption
                                               ; (Go's own block spills and reloads the
                                               ; arguments around it; this one keeps them)

and LEAF the same without the check (a frameless leaf: the prefix runs first, then the
relocated `tbnz`). A faulted call returns 4242; any other F's own result, with R1-R15 and the
8 stack words above SP intact (the harness counts differences).
"""
import pytest

from blade_go.abi.regabi_arm64 import REGABI_ARM64
from blade_go.stubs import encoder_arm64 as E
from blade_go.stubs import parse_values
from blade_go.stubs.conditions import Conditions, caller_table, read_counters, read_radius
from blade_go.stubs.conditions_match import parse_match
from blade_go.stubs.conditions_return_arm64 import plan_conditional_return
from blade_go.stubs.placement_arm64 import FunctionCodeARM64
from tests.support import arm64_harness as H
from tests.test_conditions_exec import CALLS, MANY, MATCHERS, SIMPLE, Args, binom_bounds, \
    expected_f, sig_of

FAULT = 4242
KEEP = 0xFFFE | 0xFF << 16  # R1-R15 and the stack words
ABI = REGABI_ARM64


def f_go(at=H.ENTRY) -> bytes:
    return b"".join([
        E.ldr(16, 28, 16), E.cmp_reg(E.SP, 16), E.b_cond("ls", at + 8, at + 0x20),
        E.tbnz(0, 63, at + 0xC, at + 0x18), E.add_reg(0, 0, 2), E.ret(),
        E.movn(0, 0), E.ret(),
        E.mov_reg(20, 30), E.bl(at + 0x24, at + 0x100), E.mov_reg(30, 20), E.b(at + 0x2C, at)])


def fake_morestack() -> bytes:
    """What runtime.morestack does for F here: Go poisons g.stackguard0 (stackPreempt) to ask
    a long-running goroutine to yield, and F's check then fails; "handling" it resets the
    guard to g.stack.lo + the linux/arm64 StackGuard (928) and returns, so F re-enters with a
    passing check (the stub must then decide and count that call once)."""
    return b"".join([E.ldr(16, 28, 0), E.add_imm(16, 16, 928), E.str_(16, 28, 16), E.ret()])


def f_leaf(at=H.ENTRY) -> bytes:
    return b"".join([E.tbnz(0, 63, at, at + 0xC), E.add_reg(0, 0, 2), E.ret(),
                     E.movn(0, 0), E.ret()])


def plan(sig, conds_kw=None, match=None, after=False, fcode=None, counters=H.DATA):
    fcode = fcode or f_go()
    params = ABI.param_locations(sig)
    results = ABI.result_locations(sig)
    values = parse_values(str(FAULT), results)
    conds = Conditions(matches=parse_match(match, params, 8, "F"), **(conds_kw or {}))
    code = FunctionCodeARM64.decode(fcode, H.ENTRY, name="F")
    p = plan_conditional_return(results, values, conds, "arm64", 8, None, lambda n: H.CAVE,
                                lambda n, a: counters, code, lambda a, n: bytes(n), after=after)
    writes = {H.ENTRY: fcode, H.ENTRY + 0x100: fake_morestack()}
    for patch in p.patches:
        if patch.addr == H.ENTRY:  # the route over F's first word
            writes[H.ENTRY] = patch.replacement + fcode[len(patch.replacement):]
        elif H.ENTRY < patch.addr < H.ENTRY + len(fcode):
            off = patch.addr - H.ENTRY
            f = writes[H.ENTRY]
            writes[H.ENTRY] = f[:off] + patch.replacement + f[off + len(patch.replacement):]
        else:
            writes[patch.addr] = patch.replacement
    return writes, p, params


def run(writes, p, sets, calls, goroutines=1, mem=(), extra=None):
    w = dict(writes)
    for addr, data in mem:
        w[addr] = data
    w.update(extra or {})
    r = H.run_harness(w, sets, calls=calls, goroutines=goroutines, keep=KEEP,
                      dumps=[(p.counters_addr, p.layout.get("size", 32))])
    r.counters = r.dumps[p.counters_addr]
    return r


def call_set(a: Args, target=H.ENTRY, **vals) -> H.Call:
    regs, words = a.call(**vals)
    return H.Call(target, [regs.get(f"r{i}", 0x5A5A0000 + i) for i in range(16)], words[:8])


# --------------------------------------------------------------------------- count

@pytest.mark.parametrize("shape", ["go", "leaf"])
def test_effect_count_exact_under_racing_goroutines(shape):
    sig = sig_of(8, SIMPLE)
    writes, p, params = plan(sig, {"count": 3000}, fcode=f_go() if shape == "go" else f_leaf())
    a = Args(params, 8)
    sets = [call_set(a, id=7, name="abc"), call_set(a, id=-3, name="x")]
    r = run(writes, p, sets, 2000, goroutines=4, mem=a.mem)
    assert r.clobbered == 0
    got = r.all
    assert sum(v == FAULT for v in got) == 3000
    assert all(v in (FAULT, 10, (1 << 64) - 1) for v in got)
    assert read_counters(r.counters, p.layout) == {"calls_seen": 8000, "calls_faulted": 3000}


# --------------------------------------------------------------------------- percent

def _percent(percent, goroutines, calls):
    sig = sig_of(8, SIMPLE)
    writes, p, params = plan(sig, {"percent": percent})
    a = Args(params, 8)
    r = run(writes, p, [call_set(a, id=7, name="abc")], calls, goroutines, mem=a.mem)
    assert r.clobbered == 0
    assert all(v in (FAULT, 10) for v in r.all)
    return [v == FAULT for v in r.all], r, p


@pytest.mark.parametrize("percent", [30, 1, 97])
def test_effect_percent_binomial(percent):
    n, q = 20000, percent / 100
    fired, r, p = _percent(percent, 1, n)
    lo, hi = binom_bounds(n, q)
    assert lo <= sum(fired) <= hi, (sum(fired), lo, hi)
    both = sum(fired[k] and fired[k + 1] for k in range(0, n, 2))
    lo2, hi2 = binom_bounds(n // 2, q * q)
    assert lo2 <= both <= hi2, (both, lo2, hi2)
    assert read_counters(r.counters, p.layout) == {"calls_seen": n, "calls_faulted": sum(fired)}


def test_effect_percent_racing_goroutines_and_edges():
    fired, r, p = _percent(50, 4, 5000)
    lo, hi = binom_bounds(20000, 0.5)
    assert lo <= sum(fired) <= hi
    # the draw's state counts the calls: no update lost between racing exclusive loops
    assert read_counters(r.counters, p.layout)["calls_seen"] == 20000
    assert not any(_percent(0, 2, 2000)[0])
    assert all(_percent(100, 2, 2000)[0])


# --------------------------------------------------------------------------- matchers

@pytest.mark.parametrize("expr,pred", MATCHERS, ids=[m[0] for m in MATCHERS])
def test_matchers(expr, pred):
    sig = sig_of(8, MANY)
    writes, p, params = plan(sig, match=expr)
    a = Args(params, 8)
    sets = [call_set(a, **c) for c in CALLS]
    r = run(writes, p, sets, len(sets), mem=a.mem)
    assert r.clobbered == 0
    got = r.results[0]
    for c, v in zip(CALLS, got):
        assert v in (FAULT, expected_f(c) & ((1 << 64) - 1))
    assert [v == FAULT for v in got] == [bool(pred(c)) for c in CALLS], expr
    n = sum(bool(pred(c)) for c in CALLS)
    assert read_counters(r.counters, p.layout) == {"calls_seen": len(CALLS), "calls_faulted": n}


def test_match_on_a_stack_assigned_argument():
    """The 17th integer argument is on the stack ([SP+8] at F's entry on arm64)."""
    many = [(f"a{i}", "int") for i in range(16)] + [("id", "int"), ("name", "string")]
    sig = sig_of(8, many)
    params = ABI.param_locations(sig)
    assert params[16].pieces[0].where != "reg"
    writes, p, params = plan(sig, match="id==5 && a3==3")
    a = Args(params, 8)
    base = {f"a{i}": i for i in range(16)}
    sets = [call_set(a, **base, id=5, name="x"), call_set(a, **base, id=6, name="x"),
            call_set(a, **dict(base, a3=4), id=5, name="x")]
    r = run(writes, p, sets, 3, mem=a.mem)
    assert r.clobbered == 0
    assert [v == FAULT for v in r.results[0]] == [True, False, False]


def test_matchers_compose_with_count_and_percent():
    sig = sig_of(8, SIMPLE)
    writes, p, params = plan(sig, {"count": 500, "percent": 50}, match='name^="ten"')
    a = Args(params, 8)
    sets = [call_set(a, id=1, name="tenant"), call_set(a, id=2, name="bob")]
    r = run(writes, p, sets, 2000, goroutines=2, mem=a.mem)
    fired = [v == FAULT for v in r.all]
    assert sum(fired) == 500
    assert all(v in (FAULT, 7, 5) for v in r.all)
    # only tenant calls fault
    for g in r.results:
        for k, v in enumerate(g):
            if v == FAULT:
                pass
    assert read_counters(r.counters, p.layout)["calls_faulted"] == 500


# --------------------------------------------------------------------------- --after

def test_after_replaces_results_on_every_return_path():
    sig = sig_of(8, SIMPLE)
    writes, p, params = plan(sig, {"count": 3}, after=True)
    assert len(p.sites) == 2
    a = Args(params, 8)
    sets = [call_set(a, id=7, name="abc"), call_set(a, id=-3, name="x")]
    r = run(writes, p, sets, 10, mem=a.mem)
    assert r.clobbered == 0
    assert r.results[0] == [FAULT] * 3 + [(1 << 64) - 1 if k % 2 else 10 for k in range(3, 10)]


def test_after_refuses_match():
    from blade_go.errors import BladeError
    with pytest.raises(BladeError, match="--after"):
        plan(sig_of(8, SIMPLE), match="id==1", after=True)


# --------------------------------------------------------------------------- --caller

def go_caller(at: int, callee: int) -> bytes:
    """A Go-shaped caller: frame setup, bl callee, epilogue (R29 chain like Go's)."""
    return b"".join([E.str_pre(30, E.SP, -32), E.str_(29, E.SP, -8), E.sub_imm(29, E.SP, 8),
                     E.bl(at + 12, callee), E.ldr(29, E.SP, -8), E.ldr_post(30, E.SP, 32),
                     E.ret()])


CA, CB, MID = H.CALLERS, H.CALLERS + 0x100, H.CALLERS + 0x200
OUTER_A, OUTER_B = H.CALLERS + 0x300, H.CALLERS + 0x400


def _callers():
    return {CA: go_caller(CA, H.ENTRY), CB: go_caller(CB, H.ENTRY), MID: go_caller(MID, H.ENTRY),
            OUTER_A: go_caller(OUTER_A, MID), OUTER_B: go_caller(OUTER_B, MID)}


@pytest.mark.parametrize("radius,compact", [(False, False), (True, False), (True, True)])
def test_caller_depth_1_via_lr(radius, compact):
    sig = sig_of(8, SIMPLE)
    conds = {"callers": ((CA, CA + 28),), "caller_names": ("main.A",), "radius": radius,
             "compact": compact}
    writes, p, params = plan(sig, conds)
    a = Args(params, 8)
    sets = [call_set(a, CA, id=7, name="abc"), call_set(a, CB, id=7, name="abc"),
            call_set(a, H.ENTRY, id=7, name="abc")]
    r = run(writes, p, sets, 300, goroutines=2, mem=a.mem, extra=_callers())
    assert r.clobbered == 0
    for g, res in enumerate(r.results):
        for k, v in enumerate(res):
            target = sets[(g + k) % 3].target
            assert v == (FAULT if target == CA else 10), (g, k, hex(target))
    assert read_counters(r.counters, p.layout) == {"calls_seen": 600, "calls_faulted": 200}
    if radius:
        rows, overflow = read_radius(r.counters, p.layout)
        by_ra = {row["return_address"]: row for row in rows}
        assert by_ra[CA + 16]["faulted"] == 200 and by_ra[CA + 16]["calls"] == 200
        assert by_ra[CB + 16]["excluded_by_caller"] == 200
        assert sum(row["calls"] for row in rows) == 600 and overflow is None


@pytest.mark.parametrize("compact", [False, True])
def test_caller_depth_2_via_the_frame_pointer_chain(compact):
    sig = sig_of(8, SIMPLE)
    conds = {"callers": ((OUTER_A, OUTER_A + 28),), "caller_names": ("main.OuterA",),
             "caller_depth": 2, "compact": compact}
    writes, p, params = plan(sig, conds)
    a = Args(params, 8)
    sets = [call_set(a, OUTER_A, id=7, name="abc"), call_set(a, OUTER_B, id=7, name="abc"),
            call_set(a, CA, id=7, name="abc")]
    r = run(writes, p, sets, 300, goroutines=2, mem=a.mem, extra=_callers())
    assert r.clobbered == 0
    for g, res in enumerate(r.results):
        for k, v in enumerate(res):
            target = sets[(g + k) % 3].target
            assert v == (FAULT if target == OUTER_A else 10)
    assert read_counters(r.counters, p.layout)["calls_faulted"] == 200


def test_the_compact_form_is_smaller():
    sig = sig_of(8, SIMPLE)
    conds = {"callers": ((CA, CA + 28), (CB, CB + 28)), "caller_names": ("main.A", "main.B"),
             "caller_depth": 4, "radius": True}
    _, big, _ = plan(sig, conds)
    _, small, _ = plan(sig, dict(conds, compact=True))
    assert small.stub_size < big.stub_size * 0.7, (small.stub_size, big.stub_size)


def test_caller_table_layout_matches_the_loop():
    assert caller_table([(0x30, 0x40), (0x10, 0x20)])[:8] == (0x41).to_bytes(8, "little")


def test_the_stack_check_runs_first_in_the_stub():
    from blade_go.stubs.conditions_return_arm64 import check_run
    assert check_run(FunctionCodeARM64.decode(f_go(), H.ENTRY, name="F")) == 3
    assert check_run(FunctionCodeARM64.decode(f_leaf(), H.ENTRY, name="F")) == 0
