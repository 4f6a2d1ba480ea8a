"""386 prologue shapes for placement (ABI0; Go keeps no frame pointer on 386).

After the stack check (`mov ecx,gs:[0]; mov ecx,[ecx-4]; cmp esp,[ecx+8]; jbe morestack`) the
frame setup is a single `sub esp,N`: SP delta N, and all N bytes are F's own.
"""
from typing import List, Optional

import iced_x86 as x86

from .placement import FrameSetup, Insn
from .placement_x86 import SCAN, X86Code, harmless

R = x86.Register


def _sub_esp(ins) -> Optional[int]:
    if ins.op_count != 2 or ins.op0_kind != x86.OpKind.REGISTER or ins.op0_register != R.ESP:
        return None
    if ins.op1_kind not in (x86.OpKind.IMMEDIATE8TO32, x86.OpKind.IMMEDIATE32):
        return None
    imm = ins.immediate(1)
    if imm >= 1 << 31:
        imm -= 1 << 32
    if ins.mnemonic == x86.Mnemonic.SUB and imm > 0:
        return imm
    if ins.mnemonic == x86.Mnemonic.ADD and imm < 0:
        return -imm
    return None


class I386Code(X86Code):
    name = "386"
    bitness = 32
    ptrsize = 4
    context_registers = (R.EDX, R.DX, R.DL, R.DH)
    context_full_writes = (R.EDX,)

    def jmp_code(self):
        return x86.Code.JMP_REL32_32

    def call_code(self):
        return x86.Code.CALL_REL32_32

    def push_return_address(self, addr):
        return [x86.Instruction.create_u32(x86.Code.PUSHD_IMM32, addr)]

    def frame_setup(self, insns: List[Insn]) -> Optional[FrameSetup]:
        for k, i in enumerate(insns[:SCAN]):
            n = _sub_esp(i.raw)
            if n is not None:
                return FrameSetup(insns[k + 1].addr, n, n)
            if not harmless(i.raw):
                return None
        return None


I386 = I386Code()
