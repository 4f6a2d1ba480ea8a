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
    jump(src, dst, arch) / call(src, dst, arch)   # the arch's direct branch (x86: rel32)

Addresses are runtime addresses (the caller adds the load bias). A `Site` is refused
(BladeError PARAMETER_INVALID, with the reason) unless its displaced instructions are whole,
inside F, free of calls (a relocated call would leave a cave address on a goroutine's stack, where
traceback and the GC would meet a PC outside every function), and no branch of F lands strictly
inside them (a goroutine looping back there would land mid-instruction once they are replaced).
A branch of F to the site's first byte is allowed only at the entry (the morestack block jumps
back to the entry by design); after the frame setup it would make the fault fire on every pass
of a loop, so it is refused.

Relocation re-encodes each displaced instruction at its new address with the same effect and
a length that does not depend on that address (x86: short branches become rel32, RIP-relative
operands keep their absolute targets), so the cave can be sized before it is placed. Go
functions contain no data between instructions (jump tables live in .rodata), so a linear
decode of F is exact.

This module is the architecture-neutral core: it never imports an architecture's file.
Decoding, the prologue shapes, the context register, relocation and branch encodings are the
`ArchCode` interface below, implemented by placement_x86.py (shared by placement_amd64.py and
placement_386.py, over iced-x86) and placement_arm64.py; stubs/select.py maps a GOARCH to its
ArchCode (`FunctionCode.decode(..., goarch)` asks it).
"""
from dataclasses import dataclass, field
from typing import List, Optional, Tuple, Union

from ..errors import BladeError, Code


@dataclass(frozen=True)
class Insn:
    """One decoded instruction of F."""
    addr: int
    code: bytes
    text: str
    flow: str                    # "next", "branch", "cond", "call", "ret", "indirect", "other"
    target: Optional[int] = None  # near branch/call target
    raw: object = field(default=None, repr=False, compare=False)  # the decoder's instruction

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
    """What placement needs from an architecture (placement_x86: amd64 / 386; placement_arm64).

    Lengths: route_len is the entry route's branch (x86 `jmp rel32`: 5; arm64 `B`: 4),
    call_len the call a call-out site starts with (x86 `call rel32`: 5; arm64 `BL`: 4)."""
    name = ""
    bitness = 64
    ptrsize = 8
    route_len = 0
    call_len = 0

    def decode(self, code: bytes, addr: int) -> List[Insn]:
        """Every instruction of `code` (F's bytes at runtime address `addr`), in order; flow
        one of Insn.flow's kinds, target the direct branch/call target."""
        raise NotImplementedError

    def frame_setup(self, insns: List[Insn]) -> Optional[FrameSetup]:
        raise NotImplementedError

    def reads_context_register(self, code: "FunctionCode", start: int) -> bool:
        """Whether some path of F from `start` reads the closure context register before
        defining it."""
        raise NotImplementedError

    def displace_problem(self, insn: Insn) -> Optional[str]:
        """Why `insn` may not be displaced beyond the generic rules (None: it may)."""
        return None

    def relocate(self, site: "Site", new_addr: int) -> bytes:
        """site's instructions re-encoded to run at new_addr (see placement.relocate)."""
        raise NotImplementedError

    def jump(self, src: int, dst: int) -> bytes:
        """The route: a direct jump at src to dst (route_len bytes); BladeError out of reach."""
        raise NotImplementedError

    def call(self, src: int, dst: int) -> bytes:
        """A direct call at src to dst (call_len bytes); BladeError out of reach."""
        raise NotImplementedError


def _arch(goarch: Union[str, ArchCode]) -> ArchCode:
    if isinstance(goarch, ArchCode):
        return goarch
    from .select import arch_code  # the one place a GOARCH picks its implementation
    return arch_code(goarch)


def decode(code: bytes, addr: int, arch: Union[str, ArchCode]) -> List[Insn]:
    """Every instruction of `code` (F's bytes at runtime address `addr`), in order."""
    return _arch(arch).decode(code, addr)


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
    def decode(cls, code: bytes, addr: int, goarch: Union[str, ArchCode],
               name: str = "the function"):
        """goarch: "amd64", "386", "arm64" (stubs/select.py picks the ArchCode) or an ArchCode."""
        arch = _arch(goarch)
        return cls(arch.decode(code, addr), addr, len(code), arch, name)

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
        """Whether some path of F from `start` reads the closure context register (amd64 RDX,
        386 EDX, arm64 R26) before defining it. A full write or a call (calls clobber every
        register) ends a path."""
        return self.arch.reads_context_register(self, start)

    # -- sites ----------------------------------------------------------------------------
    def entry_site(self, need: Optional[int] = None) -> Site:
        """The first instructions of F covering `need` bytes (default: the route's length; a
        branch back to the entry, such as the morestack block's, is expected and fine)."""
        need = self.arch.route_len if need is None else need
        return self._site(self.addr, need, start_target_ok=True, where="at its entry")

    def after_frame_setup_site(self, need: Optional[int] = None) -> Site:
        """The instructions right after F's frame setup covering `need` bytes (default: a call
        and a jump)."""
        need = self.arch.call_len + self.arch.route_len if need is None else need
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
            problem = self.arch.displace_problem(i)
            if problem:
                problems.append(problem)
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


# --------------------------------------------------------------------------- relocation

def relocate(site: Site, new_addr: int) -> bytes:
    """The displaced instructions re-encoded to run at `new_addr`, with the same effect.

    The length does not depend on `new_addr`. A call (only ever the last displaced instruction)
    becomes "set up the return address it had in F; jump to its target": the callee returns
    straight into F, so no cave address is ever on a goroutine's stack. Raises BladeError when
    a target is out of reach from the cave."""
    return site.arch.relocate(site, new_addr)


def falls_through(site: Site) -> bool:
    """Whether the relocated instructions continue at site.end (then the cave jumps back)."""
    return site.instructions[-1].flow in ("next", "cond")


def jump(src: int, dst: int, arch: ArchCode) -> bytes:
    """The arch's direct jump at src to dst (x86 `jmp rel32`, 5 bytes)."""
    return arch.jump(src, dst)


def call(src: int, dst: int, arch: ArchCode) -> bytes:
    """The arch's direct call at src to dst (x86 `call rel32`, 5 bytes)."""
    return arch.call(src, dst)
