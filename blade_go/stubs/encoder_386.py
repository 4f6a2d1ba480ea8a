"""i386 encodings for return stubs (ABI0: every result lives on the stack above the return
address).

Constants are stored with `mov dword/word/byte [esp+disp32], imm`; var: copies go through EAX
(`mov eax, ds:addr` then `mov [esp+disp32], eax`), which ABI0 lets a function clobber. Fixed
encodings (disp32, moffs32) keep the stub's length independent of addresses. Checked against the
GNU assembler (`as --32`) in tests/test_stubs.py.
"""
from typing import List

from .encoder_amd64 import Insn, chunks

_PTR = {4: "DWORD PTR", 2: "WORD PTR", 1: "BYTE PTR"}
_EAX = {4: "eax", 2: "ax", 1: "al"}


def _d32(v: int) -> bytes:
    return v.to_bytes(4, "little", signed=v < 0)


def store_esp_imm(disp: int, imm: int, size: int) -> Insn:
    pre = b"\x66" if size == 2 else b""
    op = 0xC6 if size == 1 else 0xC7
    return Insn(pre + bytes([op, 0x84, 0x24]) + _d32(disp) + imm.to_bytes(size, "little"),
                f"mov {_PTR[size]} [esp+{disp:#x}], {imm:#x}")


def load_eax_abs(addr: int, size: int) -> Insn:
    """mov eax/ax/al, [addr] in its moffs form (A1/66 A1/A0)."""
    pre = b"\x66" if size == 2 else b""
    op = 0xA0 if size == 1 else 0xA1
    return Insn(pre + bytes([op]) + addr.to_bytes(4, "little"),
                f"mov {_EAX[size]}, {_PTR[size]} ds:{addr:#x}")


def store_esp_eax(disp: int, size: int) -> Insn:
    pre = b"\x66" if size == 2 else b""
    op = 0x88 if size == 1 else 0x89
    return Insn(pre + bytes([op, 0x84, 0x24]) + _d32(disp),
                f"mov {_PTR[size]} [esp+{disp:#x}], {_EAX[size]}")


def ret() -> Insn:
    return Insn(b"\xC3", "ret")


def jmp_rel32(src: int, dst: int) -> Insn:
    rel = (dst - (src + 5)) & 0xFFFFFFFF  # wraps around the 4 GiB address space
    return Insn(b"\xE9" + rel.to_bytes(4, "little"), f"jmp {dst:#x}")


class Encoder386:
    """Same interface as encoder_amd64.Amd64Encoder; there are no register results."""
    name = "386"
    ptrsize = 4
    has_registers = False
    route_len = 5
    fill = b"\xCC"

    @staticmethod
    def is_float(reg: str) -> bool:
        return False

    def __init__(self):
        self._base = 0

    def _no_regs(self, *_a):
        raise ValueError("386 ABI0 returns every result on the stack")

    reg_const = xmm_const = reg_from_var = xmm_from_var = _no_regs

    def stack_const(self, sp_offset: int, data: bytes) -> List[Insn]:
        return [store_esp_imm(sp_offset + off, int.from_bytes(data[off:off + w], "little"), w)
                for off, w in chunks(len(data), (4, 2, 1))]

    def var_base(self, addr: int) -> List[Insn]:
        self._base = addr  # no base register: every load uses an absolute address
        return []

    def stack_from_var(self, sp_offset: int, offset: int, size: int) -> List[Insn]:
        out = []
        for off, w in chunks(size, (4, 2, 1)):
            out += [load_eax_abs(self._base + offset + off, w), store_esp_eax(sp_offset + off, w)]
        return out

    def ret(self) -> List[Insn]:
        return [ret()]

    def jmp(self, src: int, dst: int) -> Insn:
        return jmp_rel32(src, dst)
