"""ABI0, Go's stack calling convention: amd64 before Go 1.17 and 386 in every Go version.

Receiver and arguments, then results, all live in the caller's frame starting right above the
return address ([SP + ptrsize] at entry). Each value is aligned to its type's alignment; the
results start after the arguments rounded up to the pointer size (Go's funarg layout, and the
register algorithm of abi-internal.md run with zero registers, agree on this).
Zero-sized values take no space but still align the offset.
"""
from typing import List, Tuple

from . import ABI, STACK, ParamLocation, Piece, ResultLocation
from ..inspector.gotypes import GoType, Signature
from .layout import align_up


class StackFrame:
    """The stack sequence S of abi-internal.md, counted from the first slot above the return
    address."""

    def __init__(self, ptrsize: int):
        self.ptrsize = ptrsize
        self.offset = 0

    def place(self, t: GoType) -> int:
        """Allocate t's slot; returns its offset from SP at entry."""
        off = align_up(self.offset, max(t.align, 1))
        self.offset = off + t.size
        return self.ptrsize + off  # SP points at the return address

    def pointer_align(self):
        self.offset = align_up(self.offset, self.ptrsize)


def stack_location(index: int, name: str, t: GoType, sp_offset: int) -> ResultLocation:
    """A stack-assigned result: one piece for the whole value (none when zero-sized)."""
    pieces = (Piece(0, t.size, STACK, sp_offset=sp_offset),) if t.size else ()
    return ResultLocation(index, name, t, pieces)


class StackABI(ABI):
    def __init__(self, goarch: str, ptrsize: int):
        self.goarch = goarch
        self.ptrsize = ptrsize
        self.name = f"abi0-{goarch}"

    def result_locations(self, sig: Signature) -> Tuple[ResultLocation, ...]:
        frame = StackFrame(self.ptrsize)
        for p in sig.params:
            frame.place(p.type)
        frame.pointer_align()
        out: List[ResultLocation] = []
        for i, r in enumerate(sig.results):
            out.append(stack_location(i, r.name, r.type, frame.place(r.type)))
        return tuple(out)

    def param_locations(self, sig: Signature) -> Tuple[ParamLocation, ...]:
        frame = StackFrame(self.ptrsize)
        out: List[ParamLocation] = []
        for i, p in enumerate(sig.params):
            loc = stack_location(i, p.name, p.type, frame.place(p.type))
            out.append(ParamLocation(loc.index, loc.name, loc.type, loc.pieces))
        return tuple(out)

    def __repr__(self):
        return f"StackABI({self.goarch!r}, ptrsize={self.ptrsize})"


ABI0_AMD64 = StackABI("amd64", 8)
ABI0_386 = StackABI("386", 4)
