"""Does anything still reach a function's out-of-line copy?

A function inlined at some call sites may keep an out-of-line copy that nothing calls any more
(the linker keeps it for its symbol, a method table or a wrapper). A `return` experiment on it
then succeeds and changes nothing. This module counts what could reach the copy:
- direct branches in .text whose target is the entry, from outside the function itself (its
  own morestack block jumps back to its entry), and the address taken in code: amd64 `call/jmp
  rel32` and `lea reg, [rip+disp32]` (closures, method values), 386 rel32 and the absolute
  address as an immediate, arm64 `B`/`BL` and `ADRP; ADD #lo12` (the arch's
  code_references, stubs/route_x86.py / route_arm64.py);
- the entry's absolute address (pointer-sized) in the data sections: function values
  (funcval), static itabs, method values;
- the entry as a 4-byte offset from the start of the text section ("textOff") in .rodata and
  .typelink: method tables of types (reflection, interface conversions at run time).
On x86 every E8/E9 byte is tried as an opcode, so a hit may be a false positive (then we merely do not
warn); a miss means no instruction or table can reach the copy. Cost: one pass over .text
(about 0.13 s per 10 MB) and a byte search of the data sections.
"""
from __future__ import annotations

from dataclasses import dataclass

from .inltree import sites_source

DATA_SECTIONS = (".rodata", ".data", ".noptrdata", ".data.rel.ro", ".go.func")
TEXTOFF_SECTIONS = (".rodata", ".typelink")


@dataclass(frozen=True)
class References:
    branches: int  # call/jmp rel32 from other code
    pointers: int  # absolute addresses in data
    text_offsets: int  # method-table offsets

    @property
    def total(self) -> int:
        return self.branches + self.pointers + self.text_offsets

    def to_json(self) -> dict:
        return {"branches": self.branches, "pointers": self.pointers,
                "text_offsets": self.text_offsets}


def references_to(binary, fn) -> References:
    image = binary.image
    order = "little" if image.little_endian else "big"
    text = image.section(".text")
    branches = 0
    if text is not None:
        from ..stubs.select import stub_arch  # the arch's direct branches (x86 rel32, arm64 B/BL)
        data = image.read_file(text.offset, text.size)
        branches = stub_arch(binary.goarch).code_references(data, text.addr, fn.entry,
                                                            fn.entry, fn.end)
    pointers = _count(image, DATA_SECTIONS, fn.entry.to_bytes(binary.ptrsize, order))
    text_offsets = 0
    if text is not None:
        segment_start = next((s.vaddr for s in image.segments
                              if s.vaddr <= text.addr < s.vaddr + s.memsz), text.addr)
        for start in {text.addr, segment_start}:  # runtime.text is one of them per version
            off = fn.entry - start
            if 0 < off < 1 << 32:
                text_offsets += _count(image, TEXTOFF_SECTIONS, off.to_bytes(4, order))
    return References(branches, pointers, text_offsets)


def _count(image, names, needle: bytes) -> int:
    n = 0
    for name in names:
        sec = image.section(name)
        if sec is None or sec.type == "SHT_NOBITS" or not sec.size:
            continue
        data = image.read_file(sec.offset, sec.size)
        n += data.count(needle)
    return n


LISTED = 100  # sites listed in a create result; the count says how many there are


def inlined_report(binary, fn, sites) -> tuple:
    """(result fields, warning) for a function inlined at `sites` (InlinedSite list).

    The warning says plainly what the experiment will and will not change: the inlined sites
    keep the original behaviour; when no direct call of the out-of-line copy is left, only
    indirect calls reach it; when nothing at all references it, the experiment has no
    effect."""
    listed = [f"{s.caller} at {s.file}:{s.line}" for s in sites]
    refs = references_to(binary, fn)
    callers = len({s.caller for s in sites})
    fields = {"not_covered_inlined_sites": listed[:LISTED], "inlined_sites_count": len(listed),
              "out_of_line_references": refs.to_json(), "inlined_sites_from": sites_source(binary)}
    head = (f"{len(listed)} call site(s) in {callers} function(s) where the compiler inlined "
            f"{fn.name} keep the original behaviour: " + "; ".join(listed[:10])
            + (f"; ... ({len(listed) - 10} more in the result)" if len(listed) > 10 else ""))
    if refs.total == 0:
        head = (f"NO EFFECT EXPECTED: nothing in {binary.path} calls or references the "
                f"out-of-line copy of {fn.name} (every call was inlined). " + head)
    elif refs.branches == 0:
        head = (f"every direct call of {fn.name} was inlined: only calls through a function "
                "value, an interface or reflection run the replaced copy. " + head)
    return fields, head
