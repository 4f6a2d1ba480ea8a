"""A two-pass label assembler for arm64 stubs (conditions, delay, panic, args).

Every A64 instruction is 4 bytes, so a stub's length never depends on where it lands: the
first pass lays out the labels, the second encodes with them (encoder_arm64 does the
encoding). Items that refer to an address use forms of a fixed size: branches are B/BL
(+-128 MB) or B.cond/CBZ/CBNZ (+-1 MB, labels of one stub), a data address is ADRP+ADD
(+-4 GB), a 64-bit constant is MOVZ + 3 MOVK whatever its value.

    a = Asm64()
    a.adr_sym(17, "counters", 8)                  # adrp x17, ...; add x17, x17, #lo12
    a.op(E.ldr(16, 17), "ldr x16, [x17]")
    a.bcond("ne", "skip"); ...; a.label("skip"); a.op(E.ret(), "ret")
    code, listing = a.assemble(0x400800, {"counters": 0x5c18e0})

The few encodings encoder_arm64 does not have (sign-extending loads and moves, TST #7) are at
the end; tests/test_arm64_stubs.py decodes them back with capstone.
"""
from typing import Callable, Dict, List, Tuple, Union

from ..errors import BladeError, Code
from . import encoder_arm64 as E

Bytes = Union[bytes, List[bytes]]
Make = Callable[[int, Dict[str, int]], Bytes]


class Asm64:
    """Items are (make(at, symbols) -> instruction bytes, word count, text) or label names.

    The attributes the condition prefix reads (conditions.emit_prefix): `sp_bias` (SP here is
    SP at F's entry minus this), `bp_saved` (R29 is F's own frame pointer: the caller's is at
    [R29]), `lr_saved` (F's frame setup ran and then LR was reused: the return address into
    the caller is F's saved LR at [SP])."""

    arch = "arm64"

    def __init__(self):
        self.items: List[Union[str, Tuple[Make, int, str]]] = []
        self._n = 0
        self.sp_bias = 0
        self.bp_saved = False
        self.lr_saved = False
        self.symbols: Dict[str, int] = {}

    def fresh(self, stem: str) -> str:
        self._n += 1
        return f".{stem}{self._n}"

    def label(self, name: str):
        self.items.append(name)
        return self

    def op(self, w: Bytes, text: str):
        """Instruction(s) that do not depend on addresses."""
        ws = w if isinstance(w, list) else [w]
        self.items.append((lambda at, s, ws=ws: ws, sum(len(x) for x in ws) // 4, text))
        return self

    def ins(self, make: Make, n: int, text: str):
        """n instruction words built from (their address, symbols and labels)."""
        self.items.append((make, n, text))
        return self

    def raw(self, make: Callable[[int], bytes], n_bytes: int, text: str):
        """Position-dependent bytes of a known length (relocated instructions)."""
        if n_bytes % 4:
            raise ValueError("arm64 code is whole 4-byte words")
        self.items.append((lambda at, s: make(at), n_bytes // 4, text))
        return self

    # -- address-dependent helpers ----------------------------------------------------
    def b(self, target: Union[str, int], link: bool = False):
        """B/BL to a label or an absolute address."""
        f = E.bl if link else E.b
        return self.ins(lambda at, s: f(at, _addr(s, target)), 1,
                        f"{'bl' if link else 'b'} {_show(target)}")

    def bl(self, target):
        return self.b(target, link=True)

    def bcond(self, cond: str, target):
        return self.ins(lambda at, s: E.b_cond(cond, at, _addr(s, target)), 1,
                        f"b.{cond} {_show(target)}")

    def cbz(self, rt, target, size: int = 8):
        return self.ins(lambda at, s: E.cbz(rt, at, _addr(s, target), size), 1,
                        f"cbz {_r(rt, size)}, {_show(target)}")

    def cbnz(self, rt, target, size: int = 8):
        return self.ins(lambda at, s: E.cbnz(rt, at, _addr(s, target), size), 1,
                        f"cbnz {_r(rt, size)}, {_show(target)}")

    def adr_sym(self, rd, sym: Union[str, int], off: int = 0):
        """rd = the address of `sym` + off: ADRP + ADD (+-4 GB, always 2 words)."""
        def make(at, s):
            dst = _addr(s, sym) + off
            return [E.adrp(rd, at, dst), E.add_imm(rd, rd, dst & 0xFFF)]
        return self.ins(make, 2, f"adrp+add x{rd}, {_show(sym)}{'+%#x' % off if off else ''}")

    def mov64(self, rd, value: int, text: str = ""):
        """rd = value, always 4 words (MOVZ + 3 MOVK)."""
        return self.op(E.mov_imm_fixed(rd, value),
                       text or f"mov x{rd}, #{value & ((1 << 64) - 1):#x}")

    # -- output ----------------------------------------------------------------------
    def size(self) -> int:
        return 4 * sum(it[1] for it in self.items if not isinstance(it, str))

    def labels(self, base: int) -> Dict[str, int]:
        out, at = {}, base
        for it in self.items:
            if isinstance(it, str):
                out[it] = at
            else:
                at += 4 * it[1]
        return out

    def assemble(self, base: int, symbols: Dict[str, int] = None
                 ) -> Tuple[bytes, List[Tuple[int, bytes, str]]]:
        """(code, [(addr, bytes, text)]) at runtime address `base`; `symbols` (and
        self.symbols) give data addresses, labels are added."""
        if base % 4:
            raise ValueError(f"arm64 code must be 4-byte aligned, not at {base:#x}")
        sym = {**self.symbols, **(symbols or {})}
        sym.update(self.labels(base))
        out, listing, at = bytearray(), [], base
        for it in self.items:
            if isinstance(it, str):
                listing.append((at, b"", it + ":"))
                continue
            make, n, text = it
            try:
                w = make(at, sym)
            except (ValueError, KeyError) as e:
                raise BladeError(Code.UNEXPECTED_STATUS, f"cannot encode {text} at {at:#x}: {e}"
                                 ) from None
            data = b"".join(w) if isinstance(w, list) else bytes(w)
            if len(data) != 4 * n:
                raise BladeError(Code.UNEXPECTED_STATUS,
                                 f"{text}: {len(data)} bytes where {4 * n} were announced")
            listing.append((at, data, text))
            out += data
            at += len(data)
        return bytes(out), listing


def _addr(sym: Dict[str, int], target) -> int:
    if isinstance(target, int):
        return target
    if target not in sym:
        raise ValueError(f"unknown symbol {target!r}")
    return sym[target]


def _show(target) -> str:
    return target if isinstance(target, str) else hex(target)


def _r(rt, size) -> str:
    return f"{'x' if size == 8 else 'w'}{rt}"


def listing_text(listing) -> str:
    return "\n".join(f"{a:#010x}  {c.hex(' '):<36} {t}" if c else f"{a:#010x}  {t}"
                     for a, c, t in listing)


# ----------------------------------------------------------------------------- extra encodings

def ldrs(rt, rn, offset: int = 0, size: int = 4) -> bytes:
    """LDRSB/LDRSH/LDRSW Xt, [Xn|SP, #offset]: a `size`-byte value sign-extended to 64 bits
    (LDURS* for unaligned or small negative offsets)."""
    sz = {1: 0, 2: 1, 4: 2}[size]
    base = sz << 30 | 0x38800000 | E.reg(rn) << 5 | E.reg(rt)  # opc=10: signed to X
    if offset >= 0 and offset % size == 0 and offset // size < 4096:
        return E.word(base | 0x01000000 | (offset // size) << 10)
    if -256 <= offset < 256:
        return E.word(base | (offset & 0x1FF) << 12)
    raise E.EncodeError(f"ldrs offset {offset} out of range")


def extend(rd, rn, size: int, signed: bool) -> bytes:
    """Xd = the low `size` bytes of Xn, sign- or zero-extended (SXTB/SXTH/SXTW: SBFM;
    UXTB/UXTH and the 32-bit zero-extension: UBFM)."""
    imms = 8 * size - 1
    op = 0x93400000 if signed else 0xD3400000
    return E.word(op | imms << 10 | E.reg(rn) << 5 | E.reg(rd))


def tst_low3(rn) -> bytes:
    """TST Xn, #7 (ANDS XZR, Xn, #7): Z clear when Xn is not 8-byte aligned."""
    return E.word(0xF2400000 | 2 << 10 | E.reg(rn) << 5 | 31)


def eor_lsr(rd, rn, rm, shift: int) -> bytes:
    """EOR Xd, Xn, Xm, LSR #shift (SplitMix64's xorshift in one instruction)."""
    return E.word(0xCA400000 | E.reg(rm) << 16 | shift << 10 | E.reg(rn) << 5 | E.reg(rd))
