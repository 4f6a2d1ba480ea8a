"""Writable bytes for a stub's counters, and the condition flags of an experiment.

The stub's code and constants live in an executable cave, which the target cannot write. The
counters go where the target can: the tail of the page holding the end of the writable
PT_LOAD segment (.noptrbss's end up to the page end). The kernel maps that whole page
read-write and zero-filled; Go's runtime never uses it (its heap lives in its own mappings, and
the GC scans .data/.bss by their exact bounds), so, as for text-end caves, those bytes are
free. None (a refusal) when the segment ends on a page boundary.

The stub code (conditions.py, iced-x86) is imported only when an experiment has conditions:
an unconditional create does not pay for it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Optional, Tuple

from ..errors import BladeError, Code
from ..inspector.elf import PAGE

if TYPE_CHECKING:
    from .conditions import Conditions

PF_W = 2
REL32 = 1 << 31


def data_cave(image) -> Optional[Tuple[int, int]]:
    """[start, end) file addresses of unused writable bytes, None when there are none."""
    writable = [s for s in image.segments if s.flags & PF_W and s.memsz]
    if not writable:
        return None
    seg = max(writable, key=lambda s: s.vaddr + s.memsz)
    end = seg.vaddr + seg.memsz
    page_end = (end + PAGE - 1) & ~(PAGE - 1)
    return (end, page_end) if page_end > end else None


class DataAllocator:
    """First fit in the data cave, never over `taken` [lo, hi) ranges (file addresses)."""

    def __init__(self, cave: Optional[Tuple[int, int]], taken: Iterable[Tuple[int, int]] = ()):
        self.cave = cave
        self.taken = [(int(lo), int(hi)) for lo, hi in taken]

    def allocate(self, n: int, align: int, near: int) -> int:
        if self.cave is not None:
            addr = (self.cave[0] + align - 1) // align * align
            while addr + n <= self.cave[1]:
                clash = next((hi for lo, hi in self.taken if addr < hi and lo < addr + n), None)
                if clash is None:
                    if abs(addr - near) >= REL32 - PAGE:
                        break  # RIP-relative operands of the stub could not reach it
                    self.taken.append((addr, addr + n))
                    return addr
                addr = (clash + align - 1) // align * align
        raise BladeError(Code.UNEXPECTED_STATUS,
                         f"no room for the {n} bytes of condition counters: the binary's writable "
                         "segment leaves no free bytes in its last page"
                         + (" that other experiments on this process do not already hold"
                            if self.cave else ""))


def wants_conditions(flags: dict) -> bool:
    """Whether the experiment's flags ask for any condition."""
    return not (flags.get("effect-count") is None and flags.get("effect-percent") is None
                and not flags.get("match") and not flags.get("after")
                and not flags.get("caller"))


def conditions_from_flags(flags: dict, params, ptrsize: int, func: str, callers=None,
                          bias: int = 0, radius: bool = False) -> Optional[Conditions]:
    """Conditions for the experiment's flags; None when none of them is given and no
    blast-radius table is asked for (no counters, no prefix). `callers`:
    inspector.callers.CallerCode for --caller (file addresses; `bias` makes them runtime
    ones); `params` is only read for --match."""
    if not wants_conditions(flags) and not radius:
        return None
    from .conditions import Conditions
    from .conditions_match import parse_match
    count, percent, match = flags.get("effect-count"), flags.get("effect-percent"), \
        flags.get("match")
    extra = {}
    if callers is not None:
        extra = dict(callers=tuple((lo + bias, hi + bias) for lo, hi in callers.ranges),
                     caller_depth=int(flags.get("caller-depth") or 1),
                     caller_names=callers.names)
    return Conditions(count=count, percent=percent,
                      matches=parse_match(match, params, ptrsize, func) if match else (),
                      radius=radius, **extra)
