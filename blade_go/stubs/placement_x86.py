"""The x86 family's placement (amd64 and 386 share it): decoding, relocation and rel32 branches
over iced-x86, behind placement.ArchCode. placement_amd64.py / placement_386.py add the
prologue shapes, the context register and how a return address is pushed.

Relocation re-encodes each displaced instruction with iced-x86 at its new address: short
branches become their rel32 forms (Go's prologue has a short `jbe` to the morestack block at the
end of F), RIP-relative operands keep pointing at the same absolute address. Every encoding then
has a fixed length, so the cave can be sized before it is placed.
"""
import copy
from typing import List, Optional

import iced_x86 as x86

from ..errors import BladeError, Code
from .placement import ArchCode, FunctionCode, Insn, Site

JMP_LEN = 5   # jmp rel32
CALL_LEN = 5  # call rel32
SCAN = 16  # the frame setup is always among the first instructions

_FLOW = {x86.FlowControl.NEXT: "next", x86.FlowControl.UNCONDITIONAL_BRANCH: "branch",
         x86.FlowControl.CONDITIONAL_BRANCH: "cond", x86.FlowControl.CALL: "call",
         x86.FlowControl.RETURN: "ret", x86.FlowControl.INDIRECT_BRANCH: "indirect",
         x86.FlowControl.INDIRECT_CALL: "call"}

_READS = (x86.OpAccess.READ, x86.OpAccess.COND_READ, x86.OpAccess.READ_WRITE,
          x86.OpAccess.READ_COND_WRITE)

_FORMATTER = None


def _text(ins) -> str:
    global _FORMATTER
    if _FORMATTER is None:
        _FORMATTER = x86.Formatter(x86.FormatterSyntax.INTEL)
    return _FORMATTER.format(ins)


def harmless(ins) -> bool:
    """May precede the frame setup: the stack check reads memory and branches, never writes."""
    if ins.flow_control not in (x86.FlowControl.NEXT, x86.FlowControl.CONDITIONAL_BRANCH):
        return False
    info = x86.InstructionInfoFactory().info(ins)
    return not any(m.access in (x86.OpAccess.WRITE, x86.OpAccess.READ_WRITE,
                                x86.OpAccess.COND_WRITE, x86.OpAccess.READ_COND_WRITE)
                   for m in info.used_memory()) and ins.mnemonic != x86.Mnemonic.PUSH


class X86Code(ArchCode):
    """amd64 and 386: iced-x86 decoding and encoding; subclasses give the prologue shapes."""
    route_len = JMP_LEN
    call_len = CALL_LEN
    context_registers = ()   # iced Registers aliasing the closure context
    context_full_writes = ()  # writes of these define all of it

    def jmp_code(self) -> int:
        raise NotImplementedError

    def call_code(self) -> int:
        raise NotImplementedError

    def push_return_address(self, addr: int) -> list:
        """Instructions (iced) that push `addr` without touching registers or flags."""
        raise NotImplementedError

    def decode(self, code: bytes, addr: int) -> List[Insn]:
        out = []
        for ins in x86.Decoder(self.bitness, code, ip=addr):
            if ins.code == x86.Code.INVALID:
                raise BladeError(Code.PARAMETER_INVALID,
                                 f"undecodable bytes at {ins.ip:#x}: not machine code of a Go function")
            flow = _FLOW.get(ins.flow_control, "other")
            target = None
            if flow in ("branch", "cond", "call") and ins.op0_kind in (
                    x86.OpKind.NEAR_BRANCH16, x86.OpKind.NEAR_BRANCH32, x86.OpKind.NEAR_BRANCH64):
                target = ins.near_branch_target
            off = ins.ip - addr
            out.append(Insn(ins.ip, bytes(code[off:off + ins.len]), _text(ins), flow, target, ins))
        return out

    def reads_context_register(self, fc: FunctionCode, start: int) -> bool:
        regs = set(self.context_registers)
        full = set(self.context_full_writes)
        info = x86.InstructionInfoFactory()
        index = {i.addr: k for k, i in enumerate(fc.insns)}
        todo, seen = [index.get(start)], set()
        while todo:
            k = todo.pop()
            if k is None or k in seen or k >= len(fc.insns):
                continue
            seen.add(k)
            i = fc.insns[k]
            used = [u for u in info.info(i.raw).used_registers() if u.register in regs]
            if any(u.access in _READS for u in used):
                return True
            if i.flow == "call" or any(u.register in full and u.access == x86.OpAccess.WRITE
                                       for u in used):
                continue
            if i.flow in ("next", "cond"):
                todo.append(k + 1)
            if i.flow in ("branch", "cond") and i.target is not None:
                todo.append(index.get(i.target))
        return False

    def displace_problem(self, i: Insn) -> Optional[str]:
        if i.flow == "call" and i.raw.op0_kind == x86.OpKind.MEMORY and \
                i.raw.memory_base in (x86.Register.RSP, x86.Register.ESP):
            return f"the call at {i.addr:#x} ({i.text}) reads its target from the stack"
        return None

    def relocate(self, site: Site, new_addr: int) -> bytes:
        """Near branches are always emitted in their rel32 form and RIP-relative operands keep
        their absolute targets. A call becomes "push the return address it had in F; jmp
        target". Raises BladeError when a target is out of rel32 reach from the cave."""
        enc = x86.Encoder(self.bitness)
        out, at = bytearray(), new_addr
        for i in site.instructions:
            if i.flow == "call":
                insns = self.push_return_address(i.end) + [self._as_jump(i)]
            else:
                ins = copy.copy(i.raw)
                if i.flow in ("branch", "cond") and i.target is not None:
                    ins.as_near_branch()
                insns = [ins]
            for ins in insns:
                try:
                    n = enc.encode(ins, at)
                except ValueError as e:
                    raise BladeError(Code.UNEXPECTED_STATUS, f"cannot relocate {i.text} from "
                                     f"{i.addr:#x} to {at:#x}: {e}") from None
                out += enc.take_buffer()
                at += n
        return bytes(out)

    def _as_jump(self, i: Insn):
        """The jump to the target of call `i`."""
        if i.target is not None:
            return x86.Instruction.create_branch(self.jmp_code(), i.target)
        ins = copy.copy(i.raw)
        ins.code = {x86.Code.CALL_RM64: x86.Code.JMP_RM64,
                    x86.Code.CALL_RM32: x86.Code.JMP_RM32}[ins.code]
        return ins

    def _branch(self, code: int, src: int, dst: int) -> bytes:
        enc = x86.Encoder(self.bitness)
        try:
            enc.encode(x86.Instruction.create_branch(code, dst), src)
        except ValueError as e:
            raise BladeError(Code.UNEXPECTED_STATUS, f"no rel32 branch from {src:#x} to {dst:#x}: "
                                                     f"{e}") from None
        return bytes(enc.take_buffer())

    def jump(self, src: int, dst: int) -> bytes:
        """`jmp rel32` at src to dst (5 bytes)."""
        return self._branch(self.jmp_code(), src, dst)

    def call(self, src: int, dst: int) -> bytes:
        """`call rel32` at src to dst (5 bytes)."""
        return self._branch(self.call_code(), src, dst)
