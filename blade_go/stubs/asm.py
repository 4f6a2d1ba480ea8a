"""A tiny two-pass assembler over iced-x86 for fault stubs (delay, panic, args).

Stub instructions are iced `Instruction`s (the library encodes them; nothing is hand-encoded
here). Branches to labels are always rel32 and memory displacements never depend on where the
stub lands, except RIP-relative ones, which are always disp32: a stub's length is known before
its cave is allocated, and `assemble` checks that it did not change.

    a = Asm(AMD64)
    a.add(I.create_reg_u64(C.MOV_R64_IMM64, R.RAX, 5))
    a.branch("jne", "out"); ...; a.label("out"); a.add(ret)
    a.raw(lambda at: relocate(site, at), site.relocated_len)   # position-dependent bytes
    code, labels = a.assemble(base)
"""
from typing import Callable, Dict, List, Tuple

import iced_x86 as x86

from ..errors import BladeError, Code

C, R, I = x86.Code, x86.Register, x86.Instruction

_GPR = {  # register ABI name -> iced registers by size
    "RAX": (R.RAX, R.EAX, R.AX, R.AL), "RBX": (R.RBX, R.EBX, R.BX, R.BL),
    "RCX": (R.RCX, R.ECX, R.CX, R.CL), "RDX": (R.RDX, R.EDX, R.DX, R.DL),
    "RDI": (R.RDI, R.EDI, R.DI, R.DIL), "RSI": (R.RSI, R.ESI, R.SI, R.SIL),
    **{f"R{n}": tuple(getattr(R, f"R{n}{s}") for s in ("", "D", "W", "L")) for n in range(8, 16)},
}
_SIZE_INDEX = {8: 0, 4: 1, 2: 2, 1: 3}
_JCC = {"jne": (C.JNE_REL32_64, C.JNE_REL32_32), "je": (C.JE_REL32_64, C.JE_REL32_32),
        "jmp": (C.JMP_REL32_64, C.JMP_REL32_32)}


def gpr(name: str, size: int):
    return _GPR[name.upper()][_SIZE_INDEX[size]]


def xmm(name: str):
    n = int(name.upper().lstrip("X"))
    if not 0 <= n <= 14:
        raise ValueError("stubs never write X15 (it must stay zero)")
    return getattr(R, f"XMM{n}")


def mem(base, disp: int = 0):
    return x86.MemoryOperand(base, displ=disp)


def absolute(addr: int, bitness: int):
    """[addr]: RIP-relative on amd64 (disp32 always), disp32 absolute on 386."""
    if bitness == 64:
        return x86.MemoryOperand(R.RIP, displ=addr, displ_size=8)
    return x86.MemoryOperand(displ=addr, displ_size=4)


def store(base, disp: int, reg_name: str, size: int, bitness: int = 64) -> I:
    """mov [base+disp], reg (size 1/2/4/8) or movsd/movss for X registers."""
    if reg_name.upper().startswith("X"):
        code = C.MOVSD_XMMM64_XMM if size == 8 else C.MOVSS_XMMM32_XMM
        return I.create_mem_reg(code, mem(base, disp), xmm(reg_name))
    code = {8: C.MOV_RM64_R64, 4: C.MOV_RM32_R32, 2: C.MOV_RM16_R16, 1: C.MOV_RM8_R8}[size]
    return I.create_mem_reg(code, mem(base, disp), gpr(reg_name, size))


def load(reg_name: str, size: int, base, disp: int) -> I:
    if reg_name.upper().startswith("X"):
        code = C.MOVSD_XMM_XMMM64 if size == 8 else C.MOVSS_XMM_XMMM32
        return I.create_reg_mem(code, xmm(reg_name), mem(base, disp))
    code = {8: C.MOV_R64_RM64, 4: C.MOV_R32_RM32, 2: C.MOV_R16_RM16, 1: C.MOV_R8_RM8}[size]
    return I.create_reg_mem(code, gpr(reg_name, size), mem(base, disp))


class Asm:
    def __init__(self, arch):
        self.arch = arch
        self.bitness = arch.bitness
        self.items: List[Tuple[str, object]] = []

    def add(self, *insns: I):
        for ins in insns:
            self.items.append(("ins", ins))
        return self

    def label(self, name: str):
        self.items.append(("label", name))
        return self

    def branch(self, kind: str, target):
        """kind "jne"/"je"/"jmp" to a label (str) or an absolute address (int)."""
        self.items.append(("branch", (_JCC[kind][0 if self.bitness == 64 else 1], target)))
        return self

    def call(self, target: int):
        code = C.CALL_REL32_64 if self.bitness == 64 else C.CALL_REL32_32
        self.items.append(("branch", (code, target)))
        return self

    def raw(self, emit: Callable[[int], bytes], length: int):
        """Position-dependent bytes of a known length (relocated instructions)."""
        self.items.append(("raw", (emit, length)))
        return self

    def ret(self):
        return self.add(I.create(C.RETNQ if self.bitness == 64 else C.RETND))

    def _pass(self, base: int, labels: Dict[str, int]):
        enc = x86.Encoder(self.bitness)
        out, at, found, listing = bytearray(), base, {}, []
        for kind, item in self.items:
            if kind == "label":
                found[item] = at
                continue
            if kind == "raw":
                emit, length = item
                data = emit(at)
                if len(data) != length:
                    raise BladeError(Code.UNEXPECTED_STATUS, "relocated code changed length")
                listing.append((at, data, "(displaced instructions, relocated)"))
                out += data
                at += length
                continue
            if kind == "branch":
                code, target = item
                dst = labels.get(target, base) if isinstance(target, str) else target
                ins = I.create_branch(code, dst)
            else:
                ins = item
            try:
                n = enc.encode(ins, at)
            except ValueError as e:
                raise BladeError(Code.UNEXPECTED_STATUS, f"cannot encode {ins} at {at:#x}: {e}"
                                 ) from None
            data = bytes(enc.take_buffer())
            listing.append((at, data, str(ins)))
            out += data
            at += n
        return bytes(out), found, listing

    def size(self, near: int) -> int:
        """The length at any address near `near` (in rel32 reach of the stub's targets)."""
        return len(self._pass(near, {})[0])

    def assemble(self, base: int):
        """(code bytes at `base`, {label: address}, listing lines)."""
        first, labels, _ = self._pass(base, {})
        code, labels2, listing = self._pass(base, labels)
        if len(code) != len(first) or labels2 != labels:
            raise BladeError(Code.UNEXPECTED_STATUS, "stub length depends on its address")
        text = "\n".join(f"{a:#010x}  {d.hex(' '):<36} {t}" for a, d, t in listing)
        return code, labels, text
