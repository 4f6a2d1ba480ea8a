"""Every arm64 encoding decoded back with capstone: mnemonic and operands must be what was asked.

No GNU assembler for aarch64 is installed in CI, so the reference is capstone (a decoder built
from the Arm specification tables). Immediates are formatted the way capstone prints them.
"""
import random

import pytest

capstone = pytest.importorskip("capstone")
from capstone import arm64 as A  # noqa: E402

from blade_go.stubs import encoder_arm64 as E  # noqa: E402

MD = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
MD.detail = True
PC = 0x10401000


def dis(code: bytes, pc: int = PC):
    assert len(code) == 4, code
    got = list(MD.disasm(code, pc))
    assert len(got) == 1, f"{code.hex()} does not decode"
    return got[0]


def text(code: bytes, pc: int = PC) -> str:
    i = dis(code, pc)
    return f"{i.mnemonic} {i.op_str}".strip()


def imm(v: int) -> str:
    """capstone's immediate format: decimal up to 9, hex above."""
    s = "-" if v < 0 else ""
    return f"#{s}{abs(v)}" if abs(v) <= 9 else f"#{s}{abs(v):#x}"


def x(n):
    return "sp" if n == 31 else f"x{n}"


CASES = [
    # move wide
    (E.movz(3, 0x1234, 16), "mov x3, #0x12340000"),
    (E.movz(0, 0x1234), "mov x0, #0x1234"),
    (E.movz(5, 7, 0, size=4), "mov w5, #7"),
    (E.movk(3, 0xbeef, 48), "movk x3, #0xbeef, lsl #48"),
    (E.movk(3, 0xbeef, 16, size=4), "movk w3, #0xbeef, lsl #16"),
    (E.movn(2, 0), "mov x2, #-1"),
    (E.movn(2, 0xf, size=4), "mov w2, #-0x10"),
    # add / sub
    (E.add_imm(31, 31, 16), "add sp, sp, #0x10"),
    (E.add_imm(1, 2, 0x5000), "add x1, x2, #5, lsl #12"),
    (E.add_imm(1, 2, -8), "sub x1, x2, #8"),
    (E.sub_imm(29, 31, 8), "sub x29, sp, #8"),
    (E.sub_imm(31, 31, 0xfff), "sub sp, sp, #0xfff"),
    (E.add_imm(3, 4, 1, size=4), "add w3, w4, #1"),
    (E.adds_imm(3, 4, 1), "adds x3, x4, #1"),
    (E.subs_imm(3, 4, 1), "subs x3, x4, #1"),
    (E.mov_sp(16, 31), "mov x16, sp"),
    (E.mov_sp(31, 16), "mov sp, x16"),
    (E.add_reg(1, 2, 3), "add x1, x2, x3"),
    (E.add_reg(1, 2, 3, shift=3), "add x1, x2, x3, lsl #3"),
    (E.sub_reg(1, 2, 3, size=4), "sub w1, w2, w3"),
    (E.subs_reg(1, 2, 3), "subs x1, x2, x3"),
    (E.add_sp_reg(31, 31, 16), "add sp, sp, x16"),
    (E.sub_sp_reg(31, 31, 16), "sub sp, sp, x16"),
    (E.cmp_imm(0, 42), "cmp x0, #0x2a"),
    (E.cmp_imm(0, -1), "cmn x0, #1"),
    (E.cmp_imm(0, 5, size=4), "cmp w0, #5"),
    (E.cmp_imm(31, 0), "cmp sp, #0"),
    (E.cmp_reg(1, 2), "cmp x1, x2"),
    (E.cmp_reg(31, 16), "cmp sp, x16"),
    (E.cmp_reg(1, 2, size=4), "cmp w1, w2"),
    (E.mov_reg(1, 2), "mov x1, x2"),
    (E.mov_reg(1, 2, size=4), "mov w1, w2"),
    (E.and_reg(1, 2, 3), "and x1, x2, x3"),
    (E.orr_reg(1, 2, 3), "orr x1, x2, x3"),
    (E.eor_reg(1, 2, 3), "eor x1, x2, x3"),
    (E.tst_reg(1, 2), "tst x1, x2"),
    (E.lsl_imm(1, 2, 3), "lsl x1, x2, #3"),
    (E.lsl_imm(1, 2, 31, size=4), "lsl w1, w2, #0x1f"),
    (E.lsr_imm(1, 2, 60), "lsr x1, x2, #0x3c"),
    (E.lsr_imm(1, 2, 30, size=4), "lsr w1, w2, #0x1e"),
    (E.mul(1, 2, 3), "mul x1, x2, x3"),
    (E.madd(1, 2, 3, 4), "madd x1, x2, x3, x4"),
    (E.msub(1, 2, 3, 4), "msub x1, x2, x3, x4"),
    (E.udiv(1, 2, 3), "udiv x1, x2, x3"),
    (E.udiv(1, 2, 3, size=4), "udiv w1, w2, w3"),
    (E.csel(1, 2, 3, "lt"), "csel x1, x2, x3, lt"),
    (E.cset(1, "eq"), "cset x1, eq"),
    (E.cset(1, "hi", size=4), "cset w1, hi"),
    # loads and stores: every size, FP, modes
    (E.ldr(0, 1), "ldr x0, [x1]"),
    (E.ldr(0, 1, 8), "ldr x0, [x1, #8]"),
    (E.ldr(0, 1, 8 * 4095), "ldr x0, [x1, #0x7ff8]"),
    (E.ldr(0, 1, 4, size=4), "ldr w0, [x1, #4]"),
    (E.ldr(0, 1, 6, size=2), "ldrh w0, [x1, #6]"),
    (E.ldr(0, 1, 4095, size=1), "ldrb w0, [x1, #0xfff]"),
    (E.ldr(0, 31, 16), "ldr x0, [sp, #0x10]"),
    (E.ldr(0, 1, -8), "ldur x0, [x1, #-8]"),
    (E.ldr(0, 1, 3), "ldur x0, [x1, #3]"),
    (E.ldr(3, 1, 8, size=4, fp=True), "ldr s3, [x1, #8]"),
    (E.ldr(3, 1, 16, size=8, fp=True), "ldr d3, [x1, #0x10]"),
    (E.ldr(3, 1, -4, size=8, fp=True), "ldur d3, [x1, #-4]"),
    (E.ldr(3, 1, 32, size=16, fp=True), "ldr q3, [x1, #0x20]"),
    (E.str_(3, 31, 16, size=16, fp=True), "str q3, [sp, #0x10]"),
    (E.ldrsw(3, 1, 8), "ldrsw x3, [x1, #8]"),
    (E.str_(0, 31, 8), "str x0, [sp, #8]"),
    (E.str_(0, 31, 8, size=4), "str w0, [sp, #8]"),
    (E.str_(0, 31, 8, size=2), "strh w0, [sp, #8]"),
    (E.str_(0, 31, 9, size=1), "strb w0, [sp, #9]"),
    (E.str_(29, 31, -8), "stur x29, [sp, #-8]"),
    (E.str_(2, 31, 24, size=8, fp=True), "str d2, [sp, #0x18]"),
    (E.str_(2, 31, 4, size=4, fp=True), "str s2, [sp, #4]"),
    (E.str_pre(30, 31, -32), "str x30, [sp, #-0x20]!"),
    (E.str_pre(30, 31, -256), "str x30, [sp, #-0x100]!"),
    (E.ldr_pre(1, 2, 8, size=4), "ldr w1, [x2, #8]!"),
    (E.ldr_post(30, 31, 32), "ldr x30, [sp], #0x20"),
    (E.str_post(1, 2, 8, size=1), "strb w1, [x2], #8"),
    (E.ldr_post(1, 2, 8, fp=True), "ldr d1, [x2], #8"),
    (E.stp(0, 1, 31, -16, "pre"), "stp x0, x1, [sp, #-0x10]!"),
    (E.stp(29, 30, 31, 16), "stp x29, x30, [sp, #0x10]"),
    (E.stp(29, 30, 31, 504), "stp x29, x30, [sp, #0x1f8]"),
    (E.ldp(0, 1, 31, 16, "post"), "ldp x0, x1, [sp], #0x10"),
    (E.ldp(0, 1, 2, -512), "ldp x0, x1, [x2, #-0x200]"),
    (E.ldp(3, 4, 31, 16, "post", fp=True), "ldp d3, d4, [sp], #0x10"),
    (E.stp(3, 4, 31, -16, "pre", fp=True), "stp d3, d4, [sp, #-0x10]!"),
    # PC-relative
    (E.ldr_literal(2, PC, PC + 0x1000), f"ldr x2, {imm(PC + 0x1000)}"),
    (E.ldr_literal(2, PC, PC - 4, size=4), f"ldr w2, {imm(PC - 4)}"),
    (E.ldr_literal(2, PC, PC + 8, size=8, fp=True), f"ldr d2, {imm(PC + 8)}"),
    (E.ldr_literal(2, PC, PC + 8, size=4, fp=True), f"ldr s2, {imm(PC + 8)}"),
    (E.ldr_literal(2, PC, PC + 8, size=16, fp=True), f"ldr q2, {imm(PC + 8)}"),
    (E.ldr_literal(2, PC, PC + 8, size="sw"), f"ldrsw x2, {imm(PC + 8)}"),
    (E.adr(1, PC, PC + 3), f"adr x1, {imm(PC + 3)}"),
    (E.adr(1, PC, PC - 0x100000), f"adr x1, {imm(PC - 0x100000)}"),
    (E.adr(1, PC, PC + 0xfffff), f"adr x1, {imm(PC + 0xfffff)}"),
    (E.adrp(27, PC, 0x123456), "adrp x27, #0x123000"),
    (E.adrp(1, PC, PC + 0xfffff000), f"adrp x1, {imm(PC + 0xfffff000)}"),
    # branches
    (E.b(PC, PC + 16), f"b {imm(PC + 16)}"),
    (E.b(PC, PC - 0x8000000), f"b {imm(PC - 0x8000000)}"),
    (E.b(PC, PC + 0x7fffffc), f"b {imm(PC + 0x7fffffc)}"),
    (E.bl(PC, PC + 0x1234), f"bl {imm(PC + 0x1234)}"),
    (E.b_cond("ls", PC, PC - 0x100), f"b.ls {imm(PC - 0x100)}"),
    (E.b_cond("ne", PC, PC + 0xffffc), f"b.ne {imm(PC + 0xffffc)}"),
    (E.b_cond(0, PC, PC + 8), f"b.eq {imm(PC + 8)}"),
    (E.cbz(3, PC, PC + 16, size=4), f"cbz w3, {imm(PC + 16)}"),
    (E.cbz(3, PC, PC - 16), f"cbz x3, {imm(PC - 16)}"),
    (E.cbnz(3, PC, PC + 16), f"cbnz x3, {imm(PC + 16)}"),
    (E.cbnz(3, PC, PC + 16, size=4), f"cbnz w3, {imm(PC + 16)}"),
    (E.tbz(5, 3, PC, PC + 0x7ffc), f"tbz w5, #3, {imm(PC + 0x7ffc)}"),
    (E.tbnz(5, 40, PC, PC - 0x8000), f"tbnz x5, #0x28, {imm(PC - 0x8000)}"),
    (E.br(16), "br x16"),
    (E.blr(17), "blr x17"),
    (E.ret(), "ret"),
    (E.ret(3), "ret x3"),
    # FP moves
    (E.fmov_to_fp(0, 1), "fmov d0, x1"),
    (E.fmov_to_fp(15, 16, size=4), "fmov s15, w16"),
    (E.fmov_from_fp(2, 3), "fmov x2, d3"),
    (E.fmov_from_fp(2, 3, size=4), "fmov w2, s3"),
    (E.fmov_fp(1, 2), "fmov d1, d2"),
    (E.fmov_fp(1, 2, size=4), "fmov s1, s2"),
    # atomics and system
    (E.ldaxr(1, 2), "ldaxr x1, [x2]"),
    (E.ldaxr(1, 2, size=4), "ldaxr w1, [x2]"),
    (E.stlxr(3, 1, 2), "stlxr w3, x1, [x2]"),
    (E.stlxr(3, 1, 2, size=4), "stlxr w3, w1, [x2]"),
    (E.ldxr(1, 2), "ldxr x1, [x2]"),
    (E.stxr(3, 1, 2, size=4), "stxr w3, w1, [x2]"),
    (E.dmb(), "dmb ish"),
    (E.dmb("sy"), "dmb sy"),
    (E.isb(), "isb"),
    (E.nop(), "nop"),
    (E.brk(0), "brk #0"),
    (E.brk(0xf000), "brk #0xf000"),
    (E.svc(0), "svc #0"),
    (E.mrs_cntvct(17), "mrs x17, cntvct_el0"),
]


@pytest.mark.parametrize("code,want", CASES, ids=[w for _, w in CASES])
def test_decodes_back(code, want):
    assert text(code) == want


def test_every_register_number_round_trips():
    for n in range(31):
        assert text(E.ldr(n, n, 8)) == f"ldr x{n}, [x{n}, #8]"
        assert text(E.str_(n, 31, 16, size=8, fp=True)) == f"str d{n}, [sp, #0x10]"
        assert text(E.mov_reg(n, 30 - n)) == f"mov x{n}, x{30 - n}"
        assert text(E.adr(n, PC, PC + 12)) == f"adr x{n}, {imm(PC + 12)}"
        assert text(E.fmov_to_fp(n, 30 - n)) == f"fmov d{n}, x{30 - n}"
    assert E.reg("R3") == E.reg("x3") == E.reg("w3") == E.reg("F3") == E.reg("d3") == 3
    assert (E.reg("sp"), E.reg("xzr"), E.reg("lr"), E.reg("fp")) == (31, 31, 30, 29)
    with pytest.raises(E.EncodeError):
        E.reg("r32")
    with pytest.raises(E.EncodeError):
        E.reg("rax")


def _run_moves(insns, size=8):
    """The value the MOVZ/MOVN/MOVK sequence leaves in the register, read from capstone's
    operands (capstone shows MOVZ/MOVN as `mov` with the final value)."""
    value, rd = 0, None
    mask = (1 << (size * 8)) - 1
    for code in insns:
        i = dis(code)
        r, v = i.operands[0].reg, i.operands[1]
        assert rd in (None, r)
        rd = r
        if MD.reg_name(r).startswith("w"):
            mask = 0xFFFFFFFF  # a W write zeroes the upper half
        if i.mnemonic == "mov":
            assert v.shift.value == 0
            value = v.imm & mask
        else:
            assert i.mnemonic == "movk", i.mnemonic
            s = v.shift.value
            value = (value & ~(0xFFFF << s)) | (v.imm << s)
    return value, MD.reg_name(rd)


def _fewest(v: int) -> int:
    """A lower bound computed independently: MOVZ/MOVN + a MOVK per remaining 16-bit chunk,
    with the 32-bit W forms for values below 2**32."""
    def count(v, n):
        h = [(v >> (16 * k)) & 0xFFFF for k in range(n)]
        return max(1, n - max(h.count(0), h.count(0xFFFF)))
    c = count(v, 4)
    if v >> 32 == 0:
        c = min(c, count(v, 2))
    return c


def test_mov_imm_loads_every_value_in_the_fewest_moves():
    rnd = random.Random(20)
    values = [0, 1, 0xFFFF, 0x10000, 0xFFFFFFFF, 0xFFFFFFF0, 0x80000000, 1 << 63, (1 << 64) - 1,
              0xFFFF0000FFFF1234, 0x0000FFFF00000000, 0x123456789ABCDEF0, 0x401000, 0x7FFF0000]
    for _ in range(400):
        halves = [rnd.choice([0, 0xFFFF, rnd.randrange(1 << 16)]) for _ in range(4)]
        values.append(sum(h << (16 * k) for k, h in enumerate(halves)))
    for v in values:
        seq = E.mov_imm(9, v)
        got, name = _run_moves(seq)
        assert got == v, (hex(v), [text(c) for c in seq])
        assert name in ("x9", "w9")
        assert len(seq) == _fewest(v), (hex(v), [text(c) for c in seq])
    assert _run_moves(E.mov_imm(4, -2))[0] == (1 << 64) - 2
    assert _run_moves(E.mov_imm(4, 0x89ABCDEF, size=4), 4)[0] == 0x89ABCDEF
    for v in (0, 0x401000, (1 << 64) - 1, 0x123456789ABCDEF0):
        seq = E.mov_imm_fixed(2, v)
        assert len(seq) == 4 and _run_moves(seq)[0] == v


@pytest.mark.parametrize("call,what", [
    (lambda: E.movz(0, 0x10000), "move-wide"),
    (lambda: E.movz(0, 1, 32, size=4), "shift"),
    (lambda: E.add_imm(0, 1, 0x1001000), "add/sub immediate"),
    (lambda: E.add_imm(0, 1, 0x1001), "add/sub immediate"),
    (lambda: E.ldr(0, 1, -257), "ldur offset"),
    (lambda: E.ldr(0, 1, 8 * 4096), "ldur offset"),
    (lambda: E.str_(0, 1, 301, size=2), "stur offset"),
    (lambda: E.str_pre(0, 31, -264), "pre-index"),
    (lambda: E.ldr_post(0, 31, 256), "post-index"),
    (lambda: E.ldr(0, 1, 0, size=3), "access size"),
    (lambda: E.ldr(0, 1, 0, size=2, fp=True), "FP loads"),
    (lambda: E.stp(0, 1, 31, -520), "stp offset"),
    (lambda: E.ldrsw(0, 1, 2), "multiple of 4"),
    (lambda: E.ldp(0, 1, 31, 12), "multiple of 8"),
    (lambda: E.ldr_literal(0, PC, PC + (1 << 20)), "ldr literal"),
    (lambda: E.ldr_literal(0, PC, PC + 2), "multiple of 4"),
    (lambda: E.adr(0, PC, PC + (1 << 20)), "adr"),
    (lambda: E.adrp(0, PC, PC + (1 << 32)), "adrp"),
    (lambda: E.b(PC, PC + (1 << 27)), "b:"),
    (lambda: E.b(PC, PC - (1 << 27) - 4), "b:"),
    (lambda: E.bl(PC, PC + 2), "multiple of 4"),
    (lambda: E.b_cond("eq", PC, PC + (1 << 20)), "b.cond"),
    (lambda: E.b_cond("xx", PC, PC), "condition"),
    (lambda: E.cbz(0, PC, PC - (1 << 20) - 4), "cbz"),
    (lambda: E.cbnz(0, PC, PC + (1 << 20)), "cbnz"),
    (lambda: E.tbz(0, 1, PC, PC + (1 << 15)), "tbz"),
    (lambda: E.tbnz(0, 64, PC, PC), "test bit"),
    (lambda: E.lsl_imm(0, 1, 32, size=4), "shift"),
    (lambda: E.brk(1 << 16), "brk"),
])
def test_out_of_range_operands_are_refused_clearly(call, what):
    with pytest.raises(E.EncodeError, match=what.replace(".", r"\.")):
        call()


def test_negative_post_index_offset():
    """capstone prints a negative post-index offset as unsigned 64-bit: compare the number."""
    i = dis(E.str_post(1, 2, -8, size=1))
    assert i.mnemonic == "strb" and i.op_str.startswith("w1, [x2], #")
    assert int(i.op_str.rsplit("#", 1)[1], 16) - (1 << 64) == -8
    assert int.from_bytes(E.ldr_post(30, 31, -256), "little") >> 12 & 0x1FF == 0x100


def test_branch_targets_through_capstone_operands():
    """Branch immediates are absolute targets in capstone's detail: check them as numbers."""
    rnd = random.Random(7)
    for _ in range(200):
        pc = rnd.randrange(0x400000, 0x4000000) & ~3
        for enc, span in ((lambda t: E.b(pc, t), 1 << 27), (lambda t: E.bl(pc, t), 1 << 27),
                          (lambda t: E.b_cond("ge", pc, t), 1 << 20),
                          (lambda t: E.cbz(7, pc, t), 1 << 20),
                          (lambda t: E.tbnz(7, 33, pc, t), 1 << 15),
                          (lambda t: E.ldr_literal(7, pc, t), 1 << 20)):
            t = pc + (rnd.randrange(-span, span) & ~3)
            i = dis(enc(t), pc)
            ops = [o for o in i.operands if o.type == A.ARM64_OP_IMM]
            assert ops[-1].imm == t, (i.mnemonic, hex(pc), hex(t))
        t = pc + rnd.randrange(-(1 << 20), 1 << 20)
        assert dis(E.adr(3, pc, t), pc).operands[1].imm == t
        t = pc + rnd.randrange(-(1 << 31), 1 << 31)
        assert dis(E.adrp(3, pc, t), pc).operands[1].imm == t & ~0xFFF
