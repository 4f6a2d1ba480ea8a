"""amd64 prologue shapes for placement (register ABI and ABI0 alike); decoding, relocation and
rel32 branches are the x86 family's (placement_x86.py).

Go emits, after the stack-bound check (`cmp rsp,[r14+0x10]; jbe morestack`, or its large-frame
and pre-1.17 TLS variants), one of:

    Go >= 1.21:  push rbp; mov rbp,rsp; sub rsp,N        SP delta 8+N, scratch N
    Go <= 1.20:  sub rsp,N; mov [rsp+N-8],rbp; lea rbp,[rsp+N-8]   SP delta N, scratch N-8

A frameless leaf has neither. Only instructions that neither write memory nor call may come
before the frame setup (the stack check): otherwise the shape is not recognised and callers
refuse, rather than guess.
"""
from typing import List, Optional

import iced_x86 as x86

from .placement import FrameSetup, Insn
from .placement_x86 import SCAN, X86Code, harmless

R = x86.Register


def _sub_rsp(ins) -> Optional[int]:
    """N for `sub rsp,N` / `add rsp,-N`, else None."""
    if ins.op_count != 2 or ins.op0_kind != x86.OpKind.REGISTER or ins.op0_register != R.RSP:
        return None
    if ins.op1_kind not in (x86.OpKind.IMMEDIATE8TO64, x86.OpKind.IMMEDIATE32TO64):
        return None
    imm = ins.immediate(1)
    if imm >= 1 << 63:
        imm -= 1 << 64
    if ins.mnemonic == x86.Mnemonic.SUB and imm > 0:
        return imm
    if ins.mnemonic == x86.Mnemonic.ADD and imm < 0:
        return -imm
    return None


def _is(ins, mnemonic, op0=None, op1=None) -> bool:
    if ins.mnemonic != mnemonic:
        return False
    if op0 is not None and not (ins.op0_kind == x86.OpKind.REGISTER and ins.op0_register == op0):
        return False
    if op1 is not None and not (ins.op1_kind == x86.OpKind.REGISTER and ins.op1_register == op1):
        return False
    return True


class Amd64Code(X86Code):
    name = "amd64"
    bitness = 64
    ptrsize = 8
    context_registers = (R.RDX, R.EDX, R.DX, R.DL, R.DH)
    context_full_writes = (R.RDX, R.EDX)

    def jmp_code(self):
        return x86.Code.JMP_REL32_64

    def call_code(self):
        return x86.Code.CALL_REL32_64

    def push_return_address(self, addr):
        # `push imm32` sign-extends: a PIE address does not fit. lea keeps the flags.
        rsp = x86.MemoryOperand(R.RSP)
        return [x86.Instruction.create_reg_mem(x86.Code.LEA_R64_M, R.RSP,
                                               x86.MemoryOperand(R.RSP, displ=-8, displ_size=1)),
                x86.Instruction.create_mem_u32(x86.Code.MOV_RM32_IMM32, rsp, addr & 0xFFFFFFFF),
                x86.Instruction.create_mem_u32(x86.Code.MOV_RM32_IMM32,
                                               x86.MemoryOperand(R.RSP, displ=4, displ_size=1),
                                               addr >> 32)]

    def frame_setup(self, insns: List[Insn]) -> Optional[FrameSetup]:
        raw = [i.raw for i in insns[:SCAN]]
        for k, ins in enumerate(raw):
            nxt = raw[k + 1:k + 4]
            # Go >= 1.21
            if _is(ins, x86.Mnemonic.PUSH, R.RBP) and nxt and _is(nxt[0], x86.Mnemonic.MOV, R.RBP, R.RSP):
                n = _sub_rsp(nxt[1]) if len(nxt) > 1 else None
                end = insns[k + 3] if n else insns[k + 2]
                return FrameSetup(end.addr, 8 + (n or 0), n or 0, saved_bp=True, sets_bp=True)
            n = _sub_rsp(ins)
            if n is not None:
                # Go <= 1.20: the frame pointer is saved at the top of the new frame
                if (len(nxt) >= 2 and _is(nxt[0], x86.Mnemonic.MOV) and nxt[0].op1_kind == x86.OpKind.REGISTER
                        and nxt[0].op1_register == R.RBP and nxt[0].memory_base == R.RSP
                        and _is(nxt[1], x86.Mnemonic.LEA, R.RBP)):
                    saved = nxt[0].memory_displacement
                    return FrameSetup(insns[k + 3].addr, n, min(n - 8, saved), saved_bp=saved == n - 8,
                                      sets_bp=True)
                return FrameSetup(insns[k + 1].addr, n, n)  # no frame pointer kept
            if not harmless(ins):
                return None
        return None


AMD64 = Amd64Code()
