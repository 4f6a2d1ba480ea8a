"""Where a patch may go in a function, and how the instructions it displaces run elsewhere.

Every fault that keeps F running (delay, args) overwrites a few of F's instructions with a jump
or a call into a cave and runs the overwritten ("displaced") instructions from the cave. This
module owns both decisions, for every action:

    code = FunctionCode.decode(binary.read(fn.entry, fn.end - fn.entry), fn.entry + bias,
                               binary.goarch, name=fn.name)
    site = code.entry_site(5)               # F's first bytes (args: `jmp cave` at the entry)
    site = code.after_frame_setup_site(10)  # right after the frame setup (delay/panic:
                                            # `call H; jmp H2`)
    code.frame                              # FrameSetup: SP delta at that site, scratch bytes
    code.return_sites()                     # address of every RET
    code.reads_context_register(site.addr)  # a closure reading RDX/EDX after that point
    tail = relocate(site, new_addr)         # displaced instructions re-encoded at new_addr
    len(tail) == site.relocated_len         # known before the cave is placed
    jump(src, dst, arch) / call(src, dst, arch)   # rel32 branches

Addresses are runtime addresses (the caller adds the load bias). A `Site` is refused
(BladeError PARAMETER_INVALID, with the reason) unless its displaced instructions are whole,
inside F, free of calls (a relocated call would leave a cave address on a goroutine's stack, where
traceback and the GC would meet a PC outside every function), and no branch of F lands strictly
inside them (a goroutine looping back there would land mid-instruction once they are replaced).
A branch of F to the site's first byte is allowed only at the entry (the morestack block jumps
back to the entry by design); after the frame setup it would make the fault fire on every pass
of a loop, so it is refused.

Relocation re-encodes each displaced instruction with iced-x86 at its new address: short
branches become their rel32 forms (Go's prologue has a short `jbe` to the morestack block at the
end of F), RIP-relative operands keep pointing at the same absolute address. Every encoding then
has a fixed length, so the cave can be sized before it is placed. Go functions contain no data
between instructions (jump tables live in .rodata), so a linear decode of F is exact.

Architecture specifics (the prologue shapes, the context register) live in placement_amd64.py
and placement_386.py behind the small `ArchCode` interface below.
"""
import copy
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import iced_x86 as x86

from ..errors import BladeError, Code

JMP_LEN = 5   # jmp rel32
CALL_LEN = 5  # call rel32


@dataclass(frozen=True)
class Insn:
    """One decoded instruction of F."""
    addr: int
    code: bytes
    text: str
    flow: str                    # "next", "branch", "cond", "call", "ret", "indirect", "other"
    target: Optional[int] = None  # near branch/call target
    raw: object = field(default=None, repr=False, compare=False)  # the iced Instruction

    @property
    def end(self) -> int:
        return self.addr + len(self.code)


@dataclass(frozen=True)
class FrameSetup:
    """F's prologue, as far as a call from inside F needs to know it.

    end:       address of the first instruction after the frame setup
    sp_delta:  SP at entry (pointing at the return address) minus SP at `end`
    scratch:   bytes at [SP, SP+scratch) at `end` that are F's own (locals/outgoing arguments)
               and hold nothing yet: a callee may spill its register arguments there. The saved
               frame pointer, when there is one, lies right above them (saved_bp).
    """
    end: int
    sp_delta: int
    scratch: int
    saved_bp: bool = False
    sets_bp: bool = False  # RBP points at the saved frame pointer from `end` on (the caller's
    #                        frame pointer is then [RBP]: the --caller walk, issue 19)


@dataclass(frozen=True)
class Site:
    """Whole instructions of F that a patch of at least `need` bytes replaces."""
    addr: int
    need: int
    instructions: Tuple[Insn, ...]
    arch: "ArchCode"

    @property
    def length(self) -> int:
        return sum(len(i.code) for i in self.instructions)

    @property
    def end(self) -> int:
        return self.addr + self.length

    @property
    def original(self) -> bytes:
        return b"".join(i.code for i in self.instructions)

    @property
    def relocated_len(self) -> int:
        # any address in reach of F's targets sizes it: every encoding has a fixed length
        return len(relocate(self, self.addr + 0x1000))

    def listing(self) -> str:
        return "\n".join(f"{i.addr:#010x}  {i.code.hex(' '):<30} {i.text}" for i in self.instructions)


class ArchCode:
    """What placement needs from an architecture (see placement_amd64 / placement_386)."""
    name = ""
    bitness = 64
    ptrsize = 8
    context_registers: Tuple[int, ...] = ()   # iced Registers aliasing the closure context
    context_full_writes: Tuple[int, ...] = ()  # writes of these define all of it

    def frame_setup(self, insns: List[Insn]) -> Optional[FrameSetup]:
        raise NotImplementedError

    def jmp_code(self) -> int:
        raise NotImplementedError

    def call_code(self) -> int:
        raise NotImplementedError

    def push_return_address(self, addr: int) -> list:
        """Instructions (iced) that push `addr` without touching registers or flags."""
        raise NotImplementedError


def arch_code(goarch: str) -> ArchCode:
    if goarch == "amd64":
        from .placement_amd64 import AMD64
        return AMD64
    if goarch == "386":
        from .placement_386 import I386
        return I386
    raise BladeError(Code.ACTION_NOT_SUPPORT, f"code placement is implemented for amd64 and 386, "
                                              f"not {goarch}")


_FLOW = {x86.FlowControl.NEXT: "next", x86.FlowControl.UNCONDITIONAL_BRANCH: "branch",
         x86.FlowControl.CONDITIONAL_BRANCH: "cond", x86.FlowControl.CALL: "call",
         x86.FlowControl.RETURN: "ret", x86.FlowControl.INDIRECT_BRANCH: "indirect",
         x86.FlowControl.INDIRECT_CALL: "call"}

_FORMATTER = None


def _text(ins) -> str:
    global _FORMATTER
    if _FORMATTER is None:
        _FORMATTER = x86.Formatter(x86.FormatterSyntax.INTEL)
    return _FORMATTER.format(ins)


def decode(code: bytes, addr: int, arch: ArchCode) -> List[Insn]:
    """Every instruction of `code` (F's bytes at runtime address `addr`), in order."""
    out = []
    for ins in x86.Decoder(arch.bitness, code, ip=addr):
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


class FunctionCode:
    """F's decoded instructions and the facts placement needs."""

    def __init__(self, insns: List[Insn], addr: int, size: int, arch: ArchCode, name: str):
        self.insns, self.addr, self.size, self.arch, self.name = insns, addr, size, arch, name
        self.branch_targets = {}  # target -> [source addr]
        for i in insns:
            if i.target is not None and i.flow != "call" and addr <= i.target < addr + size:
                self.branch_targets.setdefault(i.target, []).append(i.addr)
        self._frame = None
        self._frame_done = False

    @classmethod
    def decode(cls, code: bytes, addr: int, goarch: str, name: str = "the function"):
        arch = arch_code(goarch)
        return cls(decode(code, addr, arch), addr, len(code), arch, name)

    # -- facts ----------------------------------------------------------------------------
    @property
    def frame(self) -> Optional[FrameSetup]:
        """The frame setup, None when F has no frame (a leaf the compiler gave none)."""
        if not self._frame_done:
            self._frame, self._frame_done = self.arch.frame_setup(self.insns), True
        return self._frame

    def return_sites(self) -> List[int]:
        """Address of every RET in F."""
        return [i.addr for i in self.insns if i.flow == "ret"]

    def reads_context_register(self, start: int) -> bool:
        """Whether some path of F from `start` reads the closure context register (RDX/EDX)
        before defining it. A full write or a call (calls clobber every register) ends a path."""
        regs = set(self.arch.context_registers)
        full = set(self.arch.context_full_writes)
        info = x86.InstructionInfoFactory()
        index = {i.addr: k for k, i in enumerate(self.insns)}
        todo, seen = [index.get(start)], set()
        while todo:
            k = todo.pop()
            if k is None or k in seen or k >= len(self.insns):
                continue
            seen.add(k)
            i = self.insns[k]
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

    # -- sites ----------------------------------------------------------------------------
    def entry_site(self, need: int = JMP_LEN) -> Site:
        """The first instructions of F covering `need` bytes (a branch back to the entry, such
        as the morestack block's, is expected and fine)."""
        return self._site(self.addr, need, start_target_ok=True, where="at its entry")

    def after_frame_setup_site(self, need: int = CALL_LEN + JMP_LEN) -> Site:
        """The instructions right after F's frame setup covering `need` bytes."""
        fr = self.frame
        if fr is None:
            raise BladeError(Code.PARAMETER_INVALID,
                             f"{self.name} has no stack frame (the compiler made it a frameless "
                             "leaf): a call from inside it has no frame to return into")
        return self._site(fr.end, need, start_target_ok=False, where="after its frame setup")

    def _site(self, addr: int, need: int, start_target_ok: bool, where: str) -> Site:
        picked, length = [], 0
        for i in self.insns:
            if i.addr < addr:
                continue
            if not picked and i.addr != addr:
                break
            picked.append(i)
            length += len(i.code)
            if length >= need:
                break
        if not picked or picked[0].addr != addr:
            raise BladeError(Code.PARAMETER_INVALID,
                             f"{self.name}: no instruction starts at {addr:#x}")
        if length < need:
            raise BladeError(Code.PARAMETER_INVALID,
                             f"{self.name} is too short {where}: {length} bytes of instructions, "
                             f"the patch needs {need}")
        site = Site(addr, need, tuple(picked), self.arch)
        problems = []
        for i in picked:
            if i.flow == "call" and i is not picked[-1]:
                problems.append(f"the call at {i.addr:#x} ({i.text}) is not the last instruction "
                                "to displace")
            if i.flow == "call" and i.raw.op0_kind == x86.OpKind.MEMORY and \
                    i.raw.memory_base in (x86.Register.RSP, x86.Register.ESP):
                problems.append(f"the call at {i.addr:#x} ({i.text}) reads its target from the stack")
            if i.flow in ("ret", "indirect") and i is not picked[-1]:
                problems.append(f"control leaves F at {i.addr:#x} ({i.text}) inside the patch")
        for target, sources in self.branch_targets.items():
            if addr < target < site.end:
                problems.append(f"the branch at {sources[0]:#x} lands at {target:#x}, inside the "
                                "bytes to replace")
            elif target == addr and not start_target_ok:
                problems.append(f"the branch at {sources[0]:#x} comes back to {addr:#x} (a loop "
                                "head): the fault would repeat on every pass")
        if problems:
            raise BladeError(Code.PARAMETER_INVALID,
                             f"cannot patch {self.name} {where} safely: " + "; ".join(problems[:3]))
        return site


_READS = (x86.OpAccess.READ, x86.OpAccess.COND_READ, x86.OpAccess.READ_WRITE,
          x86.OpAccess.READ_COND_WRITE)


# --------------------------------------------------------------------------- relocation

def relocate(site: Site, new_addr: int) -> bytes:
    """The displaced instructions re-encoded to run at `new_addr`, with the same effect.

    Near branches are always emitted in their rel32 form and RIP-relative operands keep their
    absolute targets, so the length does not depend on `new_addr`. A call (only ever the last
    displaced instruction) becomes "push the return address it had in F; jmp target": the callee
    returns straight into F, so no cave address is ever on a goroutine's stack. Raises BladeError
    when a target is out of rel32 reach from the cave.
    """
    enc = x86.Encoder(site.arch.bitness)
    out, at = bytearray(), new_addr
    for i in site.instructions:
        if i.flow == "call":
            insns = site.arch.push_return_address(i.end) + [_as_jump(i, site.arch)]
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


def falls_through(site: Site) -> bool:
    """Whether the relocated instructions continue at site.end (then the cave jumps back)."""
    return site.instructions[-1].flow in ("next", "cond")


def _as_jump(i: Insn, arch: "ArchCode"):
    """The jump to the target of call `i`."""
    if i.target is not None:
        return x86.Instruction.create_branch(arch.jmp_code(), i.target)
    ins = copy.copy(i.raw)
    ins.code = {x86.Code.CALL_RM64: x86.Code.JMP_RM64, x86.Code.CALL_RM32: x86.Code.JMP_RM32}[ins.code]
    return ins


def _branch(code: int, src: int, dst: int, bitness: int) -> bytes:
    enc = x86.Encoder(bitness)
    try:
        enc.encode(x86.Instruction.create_branch(code, dst), src)
    except ValueError as e:
        raise BladeError(Code.UNEXPECTED_STATUS, f"no rel32 branch from {src:#x} to {dst:#x}: "
                                                 f"{e}") from None
    return bytes(enc.take_buffer())


def jump(src: int, dst: int, arch: ArchCode) -> bytes:
    """`jmp rel32` at src to dst (5 bytes)."""
    return _branch(arch.jmp_code(), src, dst, arch.bitness)


def call(src: int, dst: int, arch: ArchCode) -> bytes:
    """`call rel32` at src to dst (5 bytes)."""
    return _branch(arch.call_code(), src, dst, arch.bitness)
