"""arm64 (A64) encodings for stubs: each function returns one instruction as 4 little-endian bytes.

Every A64 instruction is one 32-bit word of fixed fields, so an encoder is an OR of shifted
fields. Only what stubs and relocation need is here, each checked by decoding it back with
capstone in tests/test_encoder_arm64.py. Worked example, `movz x3, #0x1234, lsl #16`:

    0xD2800000 (MOVZ, 64-bit) | hw=1 << 21 | imm16=0x1234 << 5 | Rd=3
      = 0xD2A24683  ->  b"\\x83\\x46\\xa2\\xd2"

>>> movz(3, 0x1234, shift=16).hex()
'8346a2d2'
>>> [w.hex() for w in mov_imm(0, 0xffffffffffff1234)]   # one MOVN: the other halves are 0xffff
['60b99d92']
>>> b(0x401000, 0x401010).hex()                          # B +16
'04000014'

Registers are numbers 0..31; `reg("R3")`, `reg("x3")`, `reg("F3")`, `reg("sp")`, `reg("lr")` map
names. Register 31 is SP or XZR depending on the instruction (the functions' docstrings say
which; A64 decides it by the field, not by the number). Nothing here refuses a register: which
ones a stub may write (never R18, R26-R29, SP except its own frame) is the planner's rule, and
relocation must re-encode whatever F used (Go's linker uses R27 in its own sequences).

Branch and PC-relative functions take the instruction's own address `pc` and the absolute
`target`; an immediate, offset or distance that does not fit raises `EncodeError` (a ValueError)
naming the instruction and the range.
"""
from typing import List, Sequence

SP = ZR = 31
LR = 30
FP = 29
IP0, IP1 = 16, 17   # intra-procedure scratch: dead at a Go function's entry (see ARM64.md)
MASK64 = (1 << 64) - 1


class EncodeError(ValueError):
    """An operand does not fit the instruction's field."""


# --------------------------------------------------------------------------- helpers

def reg(name) -> int:
    """'R3', 'x3', 'w3', 'F3', 'D3', 'S3', 'V3' -> 3; 'sp'/'xzr'/'wzr' -> 31; 'lr' -> 30;
    'fp' -> 29. An int is returned as is (checked)."""
    if isinstance(name, int):
        n = name
    else:
        s = name.strip().lower()
        special = {"sp": 31, "wsp": 31, "xzr": 31, "wzr": 31, "lr": 30, "fp": 29}
        if s in special:
            return special[s]
        if s[:1] not in "rxwfdsvbhq" or not s[1:].isdigit():
            raise EncodeError(f"not an arm64 register: {name!r}")
        n = int(s[1:])
    if not 0 <= n <= 31:
        raise EncodeError(f"not an arm64 register: {name!r}")
    return n


def word(v: int) -> bytes:
    return (v & 0xFFFFFFFF).to_bytes(4, "little")


def _r(n) -> int:
    return reg(n)


def _uimm(what: str, v: int, bits: int, scale: int = 1) -> int:
    if v % scale:
        raise EncodeError(f"{what}: {v:#x} is not a multiple of {scale}")
    q = v // scale
    if not 0 <= q < (1 << bits):
        raise EncodeError(f"{what}: {v:#x} does not fit (0..{((1 << bits) - 1) * scale:#x}"
                          f"{f', step {scale}' if scale > 1 else ''})")
    return q


def _simm(what: str, v: int, bits: int, scale: int = 1) -> int:
    """Signed field of `bits` bits holding v/scale, two's complement."""
    if v % scale:
        raise EncodeError(f"{what}: {v:#x} is not a multiple of {scale}")
    q = v // scale
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if not lo <= q <= hi:
        raise EncodeError(f"{what}: {v:+#x} is out of range ({lo * scale:+#x}..{hi * scale:+#x})")
    return q & ((1 << bits) - 1)


def _sf(size: int) -> int:
    if size not in (4, 8):
        raise EncodeError(f"register width must be 4 or 8 bytes, not {size}")
    return 1 if size == 8 else 0


# --------------------------------------------------------------------------- move wide

def _movw(base: int, rd, imm16: int, shift: int, size: int) -> bytes:
    sf = _sf(size)
    if shift not in ((0, 16, 32, 48) if sf else (0, 16)):
        raise EncodeError(f"move-wide shift must be 0/16{'/32/48' if sf else ''}, not {shift}")
    _uimm("move-wide immediate", imm16, 16)
    return word(base | sf << 31 | (shift // 16) << 21 | imm16 << 5 | _r(rd))


def movz(rd, imm16: int, shift: int = 0, size: int = 8) -> bytes:
    """MOVZ Xd/Wd, #imm16, LSL #shift: the other bits become zero."""
    return _movw(0x52800000, rd, imm16, shift, size)


def movk(rd, imm16: int, shift: int = 0, size: int = 8) -> bytes:
    """MOVK: replace 16 bits, keep the rest."""
    return _movw(0x72800000, rd, imm16, shift, size)


def movn(rd, imm16: int, shift: int = 0, size: int = 8) -> bytes:
    """MOVN: the register becomes NOT(imm16 << shift)."""
    return _movw(0x12800000, rd, imm16, shift, size)


def mov_imm(rd, value: int, size: int = 8) -> List[bytes]:
    """The fewest MOVZ/MOVN(+MOVK) loading `value` (any 64-bit pattern, signed or unsigned)
    into Xd (size 8) or Wd (size 4; the upper 32 bits of Xd become zero).

    A 64-bit value whose upper half is zero is loaded through Wd when that is shorter (e.g.
    0xfffffff0 is one `movn wd, #0xf`). The count depends on the value only, never on where
    the code lives.

    >>> len(mov_imm(1, 0x123456789abcdef0)), len(mov_imm(1, 0)), len(mov_imm(1, -2))
    (4, 1, 1)
    """
    bits = size * 8
    v = value & ((1 << bits) - 1)
    if size == 8 and v >> 32 == 0:
        return _mov_imm_halves(rd, v, 4)  # W form: never longer, writes zeros above
    return _mov_imm_halves(rd, v, size)


def _mov_imm_halves(rd, v: int, size: int) -> List[bytes]:
    n = size // 2
    halves = [(v >> (16 * k)) & 0xFFFF for k in range(n)]
    zeros, ones = halves.count(0), halves.count(0xFFFF)
    if ones > zeros:  # MOVN first, then MOVK whatever is not 0xffff
        first = next((k for k, h in enumerate(halves) if h != 0xFFFF), 0)
        out = [movn(rd, (~halves[first]) & 0xFFFF, 16 * first, size)]
        keep = 0xFFFF
    else:
        first = next((k for k, h in enumerate(halves) if h != 0), 0)
        out = [movz(rd, halves[first], 16 * first, size)]
        keep = 0
    out += [movk(rd, h, 16 * k, size) for k, h in enumerate(halves) if k != first and h != keep]
    return out


def mov_imm_fixed(rd, value: int) -> List[bytes]:
    """Always 4 instructions (MOVZ + 3 MOVK) for a 64-bit value: the length never depends on
    the value (for code sized before an address is known)."""
    v = value & MASK64
    return [movz(rd, v & 0xFFFF)] + [movk(rd, (v >> s) & 0xFFFF, s) for s in (16, 32, 48)]


# --------------------------------------------------------------------------- arithmetic

def _addsub_imm(op: int, s: int, rd, rn, imm: int, size: int) -> bytes:
    sf = _sf(size)
    if imm < 0:
        op, imm = op ^ 1, -imm
    if imm < (1 << 12):
        sh = 0
    elif imm & 0xFFF == 0 and imm >> 12 < (1 << 12):
        sh, imm = 1, imm >> 12
    else:
        raise EncodeError(f"add/sub immediate {imm:#x} does not fit (12 bits, optionally << 12)")
    return word(sf << 31 | op << 30 | s << 29 | 0x11000000 | sh << 22 | imm << 10
                | _r(rn) << 5 | _r(rd))


def add_imm(rd, rn, imm: int, size: int = 8) -> bytes:
    """ADD Xd|SP, Xn|SP, #imm (a negative imm becomes SUB). `add_imm(SP, SP, 16)`."""
    return _addsub_imm(0, 0, rd, rn, imm, size)


def sub_imm(rd, rn, imm: int, size: int = 8) -> bytes:
    """SUB Xd|SP, Xn|SP, #imm."""
    return _addsub_imm(1, 0, rd, rn, imm, size)


def adds_imm(rd, rn, imm: int, size: int = 8) -> bytes:
    """ADDS Xd|ZR, Xn|SP, #imm (sets flags)."""
    return _addsub_imm(0, 1, rd, rn, imm, size)


def subs_imm(rd, rn, imm: int, size: int = 8) -> bytes:
    """SUBS Xd|ZR, Xn|SP, #imm (sets flags)."""
    return _addsub_imm(1, 1, rd, rn, imm, size)


def cmp_imm(rn, imm: int, size: int = 8) -> bytes:
    """CMP Xn|SP, #imm (= SUBS XZR, Xn, #imm; a negative imm becomes CMN)."""
    return _addsub_imm(1, 1, ZR, rn, imm, size)


def _addsub_reg(op: int, s: int, rd, rn, rm, size: int, shift: int = 0) -> bytes:
    sf = _sf(size)
    _uimm("shift amount", shift, 6 if sf else 5)
    return word(sf << 31 | op << 30 | s << 29 | 0x0B000000 | _r(rm) << 16 | shift << 10
                | _r(rn) << 5 | _r(rd))


def _addsub_ext(op: int, s: int, rd, rn, rm, size: int) -> bytes:
    """Extended-register form with UXTX/UXTW #0: the one whose Rn (and Rd unless S) is SP."""
    sf = _sf(size)
    option = 0b011 if sf else 0b010
    return word(sf << 31 | op << 30 | s << 29 | 0x0B200000 | _r(rm) << 16 | option << 13
                | _r(rn) << 5 | _r(rd))


def add_reg(rd, rn, rm, size: int = 8, shift: int = 0) -> bytes:
    """ADD Xd, Xn, Xm{, LSL #shift} (register 31 is XZR)."""
    return _addsub_reg(0, 0, rd, rn, rm, size, shift)


def sub_reg(rd, rn, rm, size: int = 8, shift: int = 0) -> bytes:
    """SUB Xd, Xn, Xm{, LSL #shift} (register 31 is XZR)."""
    return _addsub_reg(1, 0, rd, rn, rm, size, shift)


def subs_reg(rd, rn, rm, size: int = 8) -> bytes:
    return _addsub_reg(1, 1, rd, rn, rm, size)


def add_sp_reg(rd, rn, rm, size: int = 8) -> bytes:
    """ADD Xd|SP, Xn|SP, Xm (extended form: register 31 in Rd/Rn is SP)."""
    return _addsub_ext(0, 0, rd, rn, rm, size)


def sub_sp_reg(rd, rn, rm, size: int = 8) -> bytes:
    """SUB Xd|SP, Xn|SP, Xm (extended form)."""
    return _addsub_ext(1, 0, rd, rn, rm, size)


def cmp_reg(rn, rm, size: int = 8) -> bytes:
    """CMP Xn, Xm; with rn == SP the extended form `cmp sp, xm` (Go's stack check)."""
    if _r(rn) == SP:
        return _addsub_ext(1, 1, ZR, SP, rm, size)
    return _addsub_reg(1, 1, ZR, rn, rm, size)


def mov_reg(rd, rm, size: int = 8) -> bytes:
    """MOV Xd, Xm (ORR Xd, XZR, Xm); use mov_sp for SP."""
    return word(_sf(size) << 31 | 0x2A000000 | _r(rm) << 16 | ZR << 5 | _r(rd))


def mov_sp(rd, rn) -> bytes:
    """MOV Xd|SP, Xn|SP (ADD #0)."""
    return add_imm(rd, rn, 0)


def _logical_reg(opc: int, rd, rn, rm, size: int) -> bytes:
    return word(_sf(size) << 31 | opc << 29 | 0x0A000000 | _r(rm) << 16 | _r(rn) << 5 | _r(rd))


def and_reg(rd, rn, rm, size: int = 8) -> bytes:
    return _logical_reg(0, rd, rn, rm, size)


def orr_reg(rd, rn, rm, size: int = 8) -> bytes:
    return _logical_reg(1, rd, rn, rm, size)


def eor_reg(rd, rn, rm, size: int = 8) -> bytes:
    return _logical_reg(2, rd, rn, rm, size)


def tst_reg(rn, rm, size: int = 8) -> bytes:
    """TST Xn, Xm (ANDS XZR, Xn, Xm)."""
    return _logical_reg(3, ZR, rn, rm, size)


def lsl_imm(rd, rn, shift: int, size: int = 8) -> bytes:
    """LSL Xd, Xn, #shift (UBFM)."""
    bits = size * 8
    _uimm("shift", shift, 6 if size == 8 else 5)
    sf = _sf(size)
    return word(sf << 31 | 0x53000000 | sf << 22 | ((-shift) % bits) << 16
                | (bits - 1 - shift) << 10 | _r(rn) << 5 | _r(rd))


def lsr_imm(rd, rn, shift: int, size: int = 8) -> bytes:
    """LSR Xd, Xn, #shift (UBFM)."""
    bits = size * 8
    _uimm("shift", shift, 6 if size == 8 else 5)
    sf = _sf(size)
    return word(sf << 31 | 0x53000000 | sf << 22 | shift << 16 | (bits - 1) << 10
                | _r(rn) << 5 | _r(rd))


def madd(rd, rn, rm, ra, size: int = 8) -> bytes:
    """MADD Xd, Xn, Xm, Xa: Xd = Xa + Xn*Xm (MUL when ra is ZR)."""
    return word(_sf(size) << 31 | 0x1B000000 | _r(rm) << 16 | _r(ra) << 10 | _r(rn) << 5 | _r(rd))


def msub(rd, rn, rm, ra, size: int = 8) -> bytes:
    """MSUB Xd, Xn, Xm, Xa: Xd = Xa - Xn*Xm (with UDIV: a remainder)."""
    return word(_sf(size) << 31 | 0x1B008000 | _r(rm) << 16 | _r(ra) << 10 | _r(rn) << 5 | _r(rd))


def mul(rd, rn, rm, size: int = 8) -> bytes:
    return madd(rd, rn, rm, ZR, size)


def udiv(rd, rn, rm, size: int = 8) -> bytes:
    """UDIV Xd, Xn, Xm (a zero divisor gives 0, no trap)."""
    return word(_sf(size) << 31 | 0x1AC00800 | _r(rm) << 16 | _r(rn) << 5 | _r(rd))


COND = {"eq": 0, "ne": 1, "cs": 2, "hs": 2, "cc": 3, "lo": 3, "mi": 4, "pl": 5, "vs": 6, "vc": 7,
        "hi": 8, "ls": 9, "ge": 10, "lt": 11, "gt": 12, "le": 13, "al": 14}


def _cond(c) -> int:
    if isinstance(c, int):
        if not 0 <= c <= 15:
            raise EncodeError(f"condition {c} out of range")
        return c
    try:
        return COND[c.lower()]
    except KeyError:
        raise EncodeError(f"unknown condition {c!r}") from None


def csel(rd, rn, rm, cond, size: int = 8) -> bytes:
    """CSEL Xd, Xn, Xm, cond."""
    return word(_sf(size) << 31 | 0x1A800000 | _r(rm) << 16 | _cond(cond) << 12 | _r(rn) << 5
                | _r(rd))


def cset(rd, cond, size: int = 8) -> bytes:
    """CSET Xd, cond (CSINC Xd, XZR, XZR, invert(cond))."""
    return word(_sf(size) << 31 | 0x1A800400 | ZR << 16 | (_cond(cond) ^ 1) << 12 | ZR << 5
                | _r(rd))


# --------------------------------------------------------------------------- loads and stores

_SIZE_BITS = {1: 0, 2: 1, 4: 2, 8: 3}


def _ls_fields(size: int, fp: bool):
    """(size field, V bit, opc high bit) for a GP access of `size` bytes or an FP S (4),
    D (8) or Q (16) register."""
    if fp:
        if size not in (4, 8, 16):
            raise EncodeError(f"FP loads/stores here are S (4), D (8) or Q (16), not {size} bytes")
        if size == 16:
            return 0, 1, 2
    elif size not in _SIZE_BITS:
        raise EncodeError(f"access size must be 1/2/4/8, not {size}")
    return _SIZE_BITS[size], 1 if fp else 0, 0


def _ldst(load: bool, rt, rn, offset: int, size: int, fp: bool, mode: str) -> bytes:
    sz, v, opc = _ls_fields(size, fp)
    opc |= 1 if load else 0
    base = sz << 30 | 0x38000000 | v << 26 | opc << 22 | _r(rn) << 5 | _r(rt)
    if mode == "offset":
        if offset >= 0 and offset % size == 0 and offset // size < 4096:
            return word(base | 0x01000000 | (offset // size) << 10)
        # LDUR/STUR: unscaled signed 9-bit offset
        return word(base | _simm(f"{'ldur' if load else 'stur'} offset", offset, 9) << 12)
    idx = {"pre": 0b11, "post": 0b01}[mode]
    return word(base | _simm(f"{mode}-index offset", offset, 9) << 12 | idx << 10)


def ldr(rt, rn, offset: int = 0, size: int = 8, fp: bool = False) -> bytes:
    """LDR/LDRH/LDRB (zero-extending) Rt, [Xn|SP, #offset]; fp=True: LDR St/Dt.

    Offsets that are a non-negative multiple of `size` below 4096*size use the scaled form,
    others within -256..255 the unscaled LDUR form; anything else raises EncodeError."""
    return _ldst(True, rt, rn, offset, size, fp, "offset")


def ldrsw(rt, rn, offset: int = 0) -> bytes:
    """LDRSW Xt, [Xn|SP, #offset] (sign-extending 32-bit load; offset 0..16380 step 4)."""
    return word(0xB9800000 | _uimm("ldrsw offset", offset, 12, 4) << 10 | _r(rn) << 5 | _r(rt))


def str_(rt, rn, offset: int = 0, size: int = 8, fp: bool = False) -> bytes:
    """STR/STRH/STRB Rt, [Xn|SP, #offset] (STUR for small negative/unaligned offsets)."""
    return _ldst(False, rt, rn, offset, size, fp, "offset")


def ldr_pre(rt, rn, offset: int, size: int = 8, fp: bool = False) -> bytes:
    """LDR Rt, [Xn|SP, #offset]! (offset -256..255)."""
    return _ldst(True, rt, rn, offset, size, fp, "pre")


def str_pre(rt, rn, offset: int, size: int = 8, fp: bool = False) -> bytes:
    """STR Rt, [Xn|SP, #offset]! -- Go's `str x30, [sp, #-N]!` frame setup."""
    return _ldst(False, rt, rn, offset, size, fp, "pre")


def ldr_post(rt, rn, offset: int, size: int = 8, fp: bool = False) -> bytes:
    """LDR Rt, [Xn|SP], #offset."""
    return _ldst(True, rt, rn, offset, size, fp, "post")


def str_post(rt, rn, offset: int, size: int = 8, fp: bool = False) -> bytes:
    """STR Rt, [Xn|SP], #offset."""
    return _ldst(False, rt, rn, offset, size, fp, "post")


def _ldstp(load: bool, rt, rt2, rn, offset: int, mode: str, fp: bool) -> bytes:
    opc = 0b01 if fp else 0b10  # 64-bit X pair / D pair
    idx = {"post": 0b001, "offset": 0b010, "pre": 0b011}[mode]
    imm7 = _simm(f"{'ldp' if load else 'stp'} offset", offset, 7, 8)
    return word(opc << 30 | 0x28000000 | (1 if fp else 0) << 26 | idx << 23 | (1 if load else 0) << 22
                | imm7 << 15 | _r(rt2) << 10 | _r(rn) << 5 | _r(rt))


def ldp(rt, rt2, rn, offset: int = 0, mode: str = "offset", fp: bool = False) -> bytes:
    """LDP Xt, Xt2, [Xn|SP, #offset] (mode "offset", "pre" or "post"; offset -512..504 step 8)."""
    return _ldstp(True, rt, rt2, rn, offset, mode, fp)


def stp(rt, rt2, rn, offset: int = 0, mode: str = "offset", fp: bool = False) -> bytes:
    """STP Xt, Xt2, [Xn|SP, #offset]; `stp(0, 1, SP, -16, "pre")` pushes x0, x1."""
    return _ldstp(False, rt, rt2, rn, offset, mode, fp)


# LDR (literal) opcodes by (size, fp); 'sw' is LDRSW.
_LITERAL = {(4, False): 0x18000000, (8, False): 0x58000000, (4, True): 0x1C000000,
            (8, True): 0x5C000000, ("sw", False): 0x98000000, (16, True): 0x9C000000}


def ldr_literal(rt, pc: int, target: int, size=8, fp: bool = False) -> bytes:
    """LDR Wt/Xt/St/Dt/Qt (size 4/8/16, or 'sw' for LDRSW), label: PC-relative, +-1 MB."""
    try:
        op = _LITERAL[(size, fp)]
    except KeyError:
        raise EncodeError(f"no LDR literal of size {size} fp={fp}") from None
    return word(op | _simm("ldr literal", target - pc, 19, 4) << 5 | _r(rt))


def prfm_literal(prfop: int, pc: int, target: int) -> bytes:
    """PRFM prfop, label (relocation keeps prefetches Go's compiler never emits, for safety)."""
    return word(0xD8000000 | _simm("prfm literal", target - pc, 19, 4) << 5 | (prfop & 31))


def adr(rd, pc: int, target: int) -> bytes:
    """ADR Xd, target (+-1 MB from pc)."""
    imm = _simm("adr", target - pc, 21)
    return word(0x10000000 | (imm & 3) << 29 | (imm >> 2) << 5 | _r(rd))


def adrp(rd, pc: int, target: int) -> bytes:
    """ADRP Xd, target: Xd = target's 4 KB page (+-4 GB from pc's page)."""
    imm = _simm("adrp", (target >> 12) - (pc >> 12), 21)
    return word(0x90000000 | (imm & 3) << 29 | (imm >> 2) << 5 | _r(rd))


# --------------------------------------------------------------------------- branches

B_RANGE = 1 << 27  # B/BL reach +-128 MB


def b(pc: int, target: int) -> bytes:
    """B target (+-128 MB)."""
    return word(0x14000000 | _simm("b", target - pc, 26, 4))


def bl(pc: int, target: int) -> bytes:
    """BL target (+-128 MB); LR = pc + 4."""
    return word(0x94000000 | _simm("bl", target - pc, 26, 4))


def b_cond(cond, pc: int, target: int) -> bytes:
    """B.cond target (+-1 MB)."""
    return word(0x54000000 | _simm("b.cond", target - pc, 19, 4) << 5 | _cond(cond))


def cbz(rt, pc: int, target: int, size: int = 8) -> bytes:
    """CBZ Xt/Wt, target (+-1 MB)."""
    return word(_sf(size) << 31 | 0x34000000 | _simm("cbz", target - pc, 19, 4) << 5 | _r(rt))


def cbnz(rt, pc: int, target: int, size: int = 8) -> bytes:
    """CBNZ Xt/Wt, target (+-1 MB)."""
    return word(_sf(size) << 31 | 0x35000000 | _simm("cbnz", target - pc, 19, 4) << 5 | _r(rt))


def _tb(op: int, rt, bit: int, pc: int, target: int) -> bytes:
    _uimm("test bit", bit, 6)
    return word((bit >> 5) << 31 | op | (bit & 31) << 19
                | _simm("tbz/tbnz", target - pc, 14, 4) << 5 | _r(rt))


def tbz(rt, bit: int, pc: int, target: int) -> bytes:
    """TBZ Rt, #bit, target (+-32 KB); bit >= 32 tests an X register."""
    return _tb(0x36000000, rt, bit, pc, target)


def tbnz(rt, bit: int, pc: int, target: int) -> bytes:
    """TBNZ Rt, #bit, target (+-32 KB)."""
    return _tb(0x37000000, rt, bit, pc, target)


def br(rn) -> bytes:
    return word(0xD61F0000 | _r(rn) << 5)


def blr(rn) -> bytes:
    return word(0xD63F0000 | _r(rn) << 5)


def ret(rn=LR) -> bytes:
    return word(0xD65F0000 | _r(rn) << 5)


# --------------------------------------------------------------------------- FP moves

def fmov_to_fp(fd, rn, size: int = 8) -> bytes:
    """FMOV Dd, Xn (size 8) / FMOV Sd, Wn (size 4)."""
    return word((0x9E670000 if _sf(size) else 0x1E270000) | _r(rn) << 5 | _r(fd))


def fmov_from_fp(rd, fn, size: int = 8) -> bytes:
    """FMOV Xd, Dn (size 8) / FMOV Wd, Sn (size 4)."""
    return word((0x9E660000 if _sf(size) else 0x1E260000) | _r(fn) << 5 | _r(rd))


def fmov_fp(fd, fn, size: int = 8) -> bytes:
    """FMOV Dd, Dn / Sd, Sn."""
    return word((0x1E604000 if _sf(size) else 0x1E204000) | _r(fn) << 5 | _r(fd))


# --------------------------------------------------------------------------- atomics, system

def ldaxr(rt, rn, size: int = 8) -> bytes:
    """LDAXR Xt/Wt, [Xn|SP] (load-acquire exclusive; ARMv8.0, no LSE needed)."""
    return word((0xC85FFC00 if _sf(size) else 0x885FFC00) | _r(rn) << 5 | _r(rt))


def stlxr(rs, rt, rn, size: int = 8) -> bytes:
    """STLXR Ws, Xt/Wt, [Xn|SP]: Ws = 0 when the store-release exclusive succeeded."""
    return word((0xC800FC00 if _sf(size) else 0x8800FC00) | _r(rs) << 16 | _r(rn) << 5 | _r(rt))


def ldxr(rt, rn, size: int = 8) -> bytes:
    return word((0xC85F7C00 if _sf(size) else 0x885F7C00) | _r(rn) << 5 | _r(rt))


def stxr(rs, rt, rn, size: int = 8) -> bytes:
    return word((0xC8007C00 if _sf(size) else 0x88007C00) | _r(rs) << 16 | _r(rn) << 5 | _r(rt))


_BARRIER = {"sy": 0b1111, "ish": 0b1011, "ishld": 0b1001, "ishst": 0b1010, "ld": 0b1101,
            "st": 0b1110}


def dmb(option: str = "ish") -> bytes:
    return word(0xD50330BF | _BARRIER[option] << 8)


def isb() -> bytes:
    return word(0xD5033FDF)


def nop() -> bytes:
    return word(0xD503201F)


def brk(imm16: int = 0) -> bytes:
    return word(0xD4200000 | _uimm("brk", imm16, 16) << 5)


def svc(imm16: int = 0) -> bytes:
    """SVC #imm16 (Linux: `svc #0`, number in X8, arguments X0-X5, result X0)."""
    return word(0xD4000001 | _uimm("svc", imm16, 16) << 5)


def mrs_cntvct(rt) -> bytes:
    """MRS Xt, CNTVCT_EL0: the virtual counter, readable from EL0 on Linux (a cheap changing
    value, like rdtsc on amd64)."""
    return word(0xD53BE040 | _r(rt))


def join(insns: Sequence[bytes]) -> bytes:
    return b"".join(insns)
