"""x86-64 encodings for return stubs (register ABI and ABI0).

Only the handful of instructions a stub needs, each with one fixed encoding whose length does not
depend on addresses (imm64 for every nonzero constant, disp32 for every memory operand), so the
planner can size a stub before it knows where it will live.

Registers a stub may use: the result registers RAX..R11 and X0..X14, and the scratch registers
R12 (constants/copies) and R13 (var: base address). Never R14 (g), R15 (GOT under dynlink),
RSP, RBP (frame pointer) or X15 (must stay zero in ABIInternal code).

Every encoding here is checked byte for byte against the GNU assembler in tests/test_stubs.py.
"""
from dataclasses import dataclass
from typing import List

GPR64 = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
         "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
_LEGACY32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
_LEGACY16 = ("ax", "cx", "dx", "bx", "sp", "bp", "si", "di")
_LEGACY8 = ("al", "cl", "dl", "bl")
FORBIDDEN = frozenset({"rsp", "rbp", "r14", "r15"})
SCRATCH = "r12"
VAR_BASE = "r13"
RSP, R13 = 4, 13


@dataclass(frozen=True)
class Insn:
    code: bytes
    text: str   # GNU as Intel syntax (noprefix)


def gpr(name: str) -> int:
    return GPR64.index(name.lower())


def reg_name(n: int, size: int) -> str:
    if n >= 8:
        return GPR64[n] + {8: "", 4: "d", 2: "w", 1: "b"}[size]
    return {8: GPR64, 4: _LEGACY32, 2: _LEGACY16, 1: _LEGACY8}[size][n]


def xmm(name: str) -> int:
    n = int(name.lower().lstrip("x").lstrip("m"))
    if not 0 <= n <= 14:
        raise ValueError(f"stubs never write {name}: X15 must stay zero")
    return n


def _writable(n: int) -> int:
    if GPR64[n] in FORBIDDEN:
        raise ValueError(f"stubs never write {GPR64[n]}")
    return n


def _rex(w=0, r=0, x=0, b=0, force=False) -> bytes:
    v = 0x40 | (w << 3) | ((r >> 3) << 2) | ((x >> 3) << 1) | (b >> 3)
    return bytes([v]) if v != 0x40 or force else b""


def _modrm(mod: int, reg: int, rm: int) -> int:
    return (mod << 6) | ((reg & 7) << 3) | (rm & 7)


def _d32(v: int) -> bytes:
    return v.to_bytes(4, "little", signed=True)


def _sp(disp: int) -> bytes:
    """ModRM tail for [rsp+disp32] with `reg` filled in by the caller: SIB 0x24 is mandatory."""
    return b"\x24" + _d32(disp)


def _mem(base: str, disp: int) -> str:
    return f"[{base}+{disp:#x}]"


_PTR = {8: "QWORD PTR", 4: "DWORD PTR", 2: "WORD PTR", 1: "BYTE PTR"}


# --------------------------------------------------------------------------- instructions

def mov_imm64(r: int, imm: int) -> Insn:
    _writable(r)
    return Insn(_rex(1, b=r) + bytes([0xB8 + (r & 7)]) + imm.to_bytes(8, "little"),
                f"movabs {GPR64[r]}, {imm:#x}")


def xor_self32(r: int) -> Insn:
    _writable(r)
    return Insn(_rex(r=r, b=r) + bytes([0x31, _modrm(3, r, r)]),
                f"xor {reg_name(r, 4)}, {reg_name(r, 4)}")


def movq_xmm_gpr(x: int, r: int) -> Insn:
    return Insn(b"\x66" + _rex(1, r=x, b=r) + bytes([0x0F, 0x6E, _modrm(3, x, r)]),
                f"movq xmm{x}, {GPR64[r]}")


def movd_xmm_gpr(x: int, r: int) -> Insn:
    return Insn(b"\x66" + _rex(r=x, b=r) + bytes([0x0F, 0x6E, _modrm(3, x, r)]),
                f"movd xmm{x}, {reg_name(r, 4)}")


def xorps_self(x: int) -> Insn:
    return Insn(_rex(r=x, b=x) + bytes([0x0F, 0x57, _modrm(3, x, x)]), f"xorps xmm{x}, xmm{x}")


def store_rsp_gpr(disp: int, r: int, size: int) -> Insn:
    """mov [rsp+disp32], r (size 8/4/2/1)."""
    pre = b"\x66" if size == 2 else b""
    op = 0x88 if size == 1 else 0x89
    # a byte register above bl (spl..dil) would need an empty REX; we only store r12b / al..bl
    code = pre + _rex(1 if size == 8 else 0, r=r) + bytes([op, _modrm(2, r, RSP)]) + _sp(disp)
    return Insn(code, f"mov {_PTR[size]} {_mem('rsp', disp)}, {reg_name(r, size)}")


def store_rsp_imm(disp: int, imm: int, size: int) -> Insn:
    """mov dword/word/byte [rsp+disp32], imm (no 8-byte form: imm64 stores go through R12)."""
    pre = b"\x66" if size == 2 else b""
    op = 0xC6 if size == 1 else 0xC7
    code = pre + bytes([op, _modrm(2, 0, RSP)]) + _sp(disp) + imm.to_bytes(size, "little")
    return Insn(code, f"mov {_PTR[size]} {_mem('rsp', disp)}, {imm:#x}")


def load_r13(r: int, disp: int, size: int) -> Insn:
    """Load `size` bytes at [r13+disp32] into r, zero-extended to 64 bits."""
    _writable(r)
    tail = bytes([_modrm(2, r, R13)]) + _d32(disp)
    src = f"{_PTR[size]} {_mem('r13', disp)}"
    if size == 8:
        return Insn(_rex(1, r=r, b=R13) + b"\x8B" + tail, f"mov {GPR64[r]}, {src}")
    if size == 4:
        return Insn(_rex(r=r, b=R13) + b"\x8B" + tail, f"mov {reg_name(r, 4)}, {src}")
    op = 0xB7 if size == 2 else 0xB6
    return Insn(_rex(r=r, b=R13) + bytes([0x0F, op]) + tail, f"movzx {reg_name(r, 4)}, {src}")


def movq_xmm_r13(x: int, disp: int) -> Insn:
    return Insn(b"\xF3" + _rex(r=x, b=R13) + bytes([0x0F, 0x7E, _modrm(2, x, R13)]) + _d32(disp),
                f"movq xmm{x}, QWORD PTR {_mem('r13', disp)}")


def movd_xmm_r13(x: int, disp: int) -> Insn:
    return Insn(b"\x66" + _rex(r=x, b=R13) + bytes([0x0F, 0x6E, _modrm(2, x, R13)]) + _d32(disp),
                f"movd xmm{x}, DWORD PTR {_mem('r13', disp)}")


def ret() -> Insn:
    return Insn(b"\xC3", "ret")


def jmp_rel32(src: int, dst: int) -> Insn:
    rel = dst - (src + 5)
    if not -(1 << 31) <= rel < (1 << 31):
        raise ValueError(f"jmp from {src:#x} cannot reach {dst:#x}")
    return Insn(b"\xE9" + _d32(rel), f"jmp {dst:#x}")


def chunks(size: int, widths=(8, 4, 2, 1)):
    """Split `size` bytes into (offset, width) chunks, widest first."""
    off = 0
    for w in widths:
        while size - off >= w:
            yield off, w
            off += w


# --------------------------------------------------------------------------- the stub interface

class Amd64Encoder:
    """What the planner asks of an architecture (see encoder_386.Encoder386 for the twin)."""
    name = "amd64"
    ptrsize = 8
    has_registers = True
    route_len = 5        # jmp rel32 at F's entry
    fill = b"\xCC"       # pads the code up to its data (int3: never executed)

    @staticmethod
    def is_float(reg: str) -> bool:
        return reg.upper().startswith("X")

    def reg_const(self, reg: str, value: int) -> List[Insn]:
        r = gpr(reg)
        return [xor_self32(r) if value == 0 else mov_imm64(r, value)]

    def xmm_const(self, reg: str, bits: int, size: int) -> List[Insn]:
        x, s = xmm(reg), gpr(SCRATCH)
        if bits == 0:
            return [xorps_self(x)]
        mov = movq_xmm_gpr if size == 8 else movd_xmm_gpr
        return [mov_imm64(s, bits), mov(x, s)]

    def stack_const(self, sp_offset: int, data: bytes) -> List[Insn]:
        out, s = [], gpr(SCRATCH)
        for off, w in chunks(len(data)):
            v = int.from_bytes(data[off:off + w], "little")
            if w == 8:
                out += [xor_self32(s) if v == 0 else mov_imm64(s, v),
                        store_rsp_gpr(sp_offset + off, s, 8)]
            else:
                out.append(store_rsp_imm(sp_offset + off, v, w))
        return out

    def var_base(self, addr: int) -> List[Insn]:
        return [mov_imm64(R13, addr)]

    def reg_from_var(self, reg: str, offset: int, size: int) -> List[Insn]:
        return [load_r13(gpr(reg), offset, size)]

    def xmm_from_var(self, reg: str, offset: int, size: int) -> List[Insn]:
        return [(movq_xmm_r13 if size == 8 else movd_xmm_r13)(xmm(reg), offset)]

    def stack_from_var(self, sp_offset: int, offset: int, size: int) -> List[Insn]:
        out, s = [], gpr(SCRATCH)
        for off, w in chunks(size):
            out += [load_r13(s, offset + off, w), store_rsp_gpr(sp_offset + off, s, w)]
        return out

    def ret(self) -> List[Insn]:
        return [ret()]

    def jmp(self, src: int, dst: int) -> Insn:
        return jmp_rel32(src, dst)
