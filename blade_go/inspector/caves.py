"""Caves: executable bytes no code uses, and an allocator that hands them out.

Kinds (see docs in go-abi.md):
- header:   zeros after the ELF and program headers in the first executable page, up to the
            first section with content;
- text-end: zeros from the end of the last section of the executable segment to the end of
            its page (the kernel maps that whole page executable, past p_memsz);
- int3-pad: runs of the linker's padding between functions (0xCC on amd64/386: the arch's
            pad_byte, stubs/select.py). The runtime attributes such a PC to the preceding
            function, so the allocator uses them only when asked (allow_int3=True). arm64
            pads with zero words (`udf #0`) counted inside each function's symbol size, so
            there none are found and caves are header and text-end only.
All addresses are file virtual addresses; callers add the load bias.
"""
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

from ..errors import BladeError, Code
from .elf import PAGE, ElfImage

HEADER, TEXT_END, INT3_PAD = "header", "text-end", "int3-pad"
PREFERENCE = (HEADER, TEXT_END, INT3_PAD)
REL32 = 1 << 31
MIN_CAVE = 16  # smaller runs are useless for stubs and only clutter reports
TEXT_WINDOW = 1 << 20  # bytes of .text read at a time when looking for INT3 runs


@dataclass(frozen=True)
class Cave:
    start: int
    end: int
    kind: str

    @property
    def size(self) -> int:
        return self.end - self.start

    def to_json(self) -> dict:
        return {"start": self.start, "end": self.end, "size": self.size, "kind": self.kind}


def _zero_runs(data: bytes, base: int, kind: str, byte: int = 0) -> List[Cave]:
    """Maximal runs of `byte` in data (placed at vaddr base), at least MIN_CAVE long."""
    out, i, n = [], 0, len(data)
    while i < n:
        if data[i] != byte:
            i += 1
            continue
        j = i
        while j < n and data[j] == byte:
            j += 1
        if j - i >= MIN_CAVE:
            out.append(Cave(base + i, base + j, kind))
        i = j
    return out


def _alloc_sections(image: ElfImage):
    return [s for s in image.sections.values()
            if s.flags & 0x2 and s.size and s.type != "SHT_NOBITS"]  # SHF_ALLOC with content


def header_caves(image: ElfImage) -> List[Cave]:
    seg = next((s for s in image.segments if s.executable), None)
    if seg is None or seg.offset != 0:
        return []
    e = image.elf.header
    headers_end = max(e["e_ehsize"], e["e_phoff"] + e["e_phnum"] * e["e_phentsize"])
    if e["e_shoff"] and e["e_shoff"] < PAGE:  # section headers at the front: stay clear
        headers_end = max(headers_end, e["e_shoff"] + e["e_shnum"] * e["e_shentsize"])
    limit = min(PAGE, seg.filesz)
    for s in _alloc_sections(image):
        if s.offset >= headers_end:
            limit = min(limit, s.offset)
        elif s.offset + s.size > headers_end:  # a section overlapping the headers' tail
            headers_end = s.offset + s.size
    if limit <= headers_end:
        return []
    data = image.read_file(headers_end, limit - headers_end)
    return _zero_runs(data, seg.vaddr + headers_end, HEADER)


def text_end_caves(image: ElfImage) -> List[Cave]:
    """Zeros from the end of the last section of each executable segment to the end of what
    the process maps of it (its last page, ElfImage.slack_end): past p_memsz for every Go and
    C linker seen, so the bytes are read as the process maps them, not only from p_filesz."""
    out = []
    sections = _alloc_sections(image)
    for seg in (s for s in image.segments if s.executable):
        mem_end = seg.vaddr + seg.memsz
        inside = [s for s in sections if seg.vaddr <= s.addr and s.addr + s.size <= mem_end]
        if not inside:
            continue
        end = max(max(s.addr + s.size for s in inside), seg.vaddr + seg.filesz)
        limit = image.slack_end(seg)
        for s in sections:  # no other section may live in those bytes
            if s not in inside and s.addr < limit and s.addr + s.size > end:
                limit = min(limit, max(s.addr, end))
        if limit - end < MIN_CAVE:
            continue
        data = image.read(end, limit - end)
        zeros = len(data) - len(data.lstrip(b"\0"))  # from `end` on, stop at the first non-zero
        if zeros >= MIN_CAVE:
            out.append(Cave(end, end + zeros, TEXT_END))
    return out


def clip_to(caves: Iterable[Cave], ranges: Sequence[Tuple[int, int]]) -> List[Cave]:
    """The parts of caves inside the given [lo, hi) ranges (what a process maps executable)."""
    out = []
    for c in caves:
        for lo, hi in ranges:
            a, b = max(c.start, lo), min(c.end, hi)
            if b - a >= MIN_CAVE:
                out.append(Cave(a, b, c.kind))
    return out


def int3_caves(image: ElfImage, functions: Iterable[Tuple[int, int]],
               pad: int = 0xCC) -> List[Cave]:
    """Runs of `pad` (INT3 on x86) between consecutive functions given as (entry, end) spans
    with exact sizes."""
    text = image.section(".text")
    if text is None:
        return []
    spans = sorted(set(functions))
    # .text is read a window at a time, in order: a 100 MB binary's 40 MB of code never sits
    # in memory at once (it was the peak of a create's memory on large binaries).
    lo = hi = text.addr
    data = b""
    out = []
    for (_, end), (nxt, _) in zip(spans, spans[1:]):
        if not (text.addr <= end < nxt <= text.addr + text.size) or nxt - end < MIN_CAVE:
            continue
        if not lo <= end <= nxt <= hi:
            lo = end
            hi = min(text.addr + text.size, max(nxt, end + TEXT_WINDOW))
            data = image.read_file(text.offset + lo - text.addr, hi - lo)
        gap = data[end - lo:nxt - lo]
        if gap.count(pad) == len(gap):
            out.append(Cave(end, nxt, INT3_PAD))
    return out


def _overlaps(lo: int, hi: int, taken: Sequence[Tuple[int, int]]) -> Optional[int]:
    """End of the first taken range overlapping [lo, hi), else None."""
    for tlo, thi in taken:
        if lo < thi and tlo < hi:
            return thi
    return None


def route_reach(goarch: str) -> dict:
    """CaveAllocator's reach arguments for an arch: its route branch's range and name (the
    StubArch's branch_reach and route_kind, stubs/select.py).

    >>> route_reach("amd64"), route_reach("arm64")
    ({'reach': 2147483648, 'reach_name': 'rel32'}, {'reach': 134217728, 'reach_name': 'B (imm26)'})
    """
    from ..stubs.select import stub_arch  # the one module that knows the arches
    impl = stub_arch(goarch)
    name = impl.route_kind.replace(" jump", "").replace(" branch", "")
    return {"reach": impl.branch_reach, "reach_name": name}


class CaveAllocator:
    """Hands out cave bytes, never overlapping `taken` ranges [lo, hi) nor earlier allocations,
    only where the route from `near` and the stub's way back both reach (`reach`: pass
    route_reach(goarch); the default is x86's rel32)."""

    def __init__(self, caves: Iterable[Cave], taken: Iterable[Tuple[int, int]] = (),
                 reach: int = REL32, reach_name: str = "rel32"):
        """reach: the route's branch range, +-reach bytes (the arch's branch_reach in
        stubs/select.py: x86 rel32 2 GB, arm64 B 128 MB)."""
        self.reach, self.reach_name = reach, reach_name
        self.caves = sorted(caves, key=lambda c: (PREFERENCE.index(c.kind), c.start))
        self.taken = [(int(lo), int(hi)) for lo, hi in taken]
        self.taken_by_others = bool(self.taken)  # before this allocator's own allocations

    def allocate(self, n: int, near: int, align: int = 16, allow_int3: bool = False,
                 also: Sequence[int] = ()) -> int:
        """also: code the stub branches to besides `near` (a delay's time.Sleep, a panic's
        runtime.gopanic: arm64 reaches them with one B, so in a > 128 MB text a cave next to
        F may be out of their reach); the stub's whole range must reach each of them too."""
        if n <= 0:
            raise ValueError("allocation size must be positive")
        for cave in self.caves:
            if cave.kind == INT3_PAD and not allow_int3:
                continue
            addr = self._fit(cave, n, near, align)
            while addr is not None and not all(self._reaches(addr, n, t) for t in also):
                nxt = self._fit(Cave(addr + align, cave.end, cave.kind), n, near, align)
                addr = nxt if nxt is not None and nxt > addr else None
            if addr is not None:
                self.taken.append((addr, addr + n))
                return addr
        kinds = "header, text-end" + (", int3-pad" if allow_int3 else "")
        total = sum(c.size for c in self.caves if allow_int3 or c.kind != INT3_PAD)
        # Advise destroying experiments only when some exist: otherwise the caves are simply
        # too small for this stub.
        advice = ("; destroy other experiments on this process first; bytes of values that "
                  "destroyed experiments handed to the program stay taken while the program may "
                  "hold them (`blade-go status --pid P` lists them; a later command reclaims them "
                  "once nothing points at them)" if self.taken_by_others
                  else f"; the binary has {total} cave bytes in all and no other experiment "
                       "holds any: a smaller value (shorter strings) may fit")
        raise BladeError(Code.UNEXPECTED_STATUS,
                         f"no room for a {n}-byte stub within {self.reach_name} reach of {near:#x} in the "
                         f"caves ({kinds}){advice}")

    def in_reach(self, addr: int, n: int, near: int) -> bool:
        """The route from near to addr, and back from inside the stub to near (16 bytes of
        slack: x86 measures from the end of its 5-byte jmp, arm64 from the B itself)."""
        return abs(addr - (near + 5)) < self.reach - 16 and abs(addr + n - near) < self.reach - 16

    def _reaches(self, addr: int, n: int, target: int) -> bool:
        """Every branch from inside [addr, addr + n) to target is in reach."""
        return abs(target - addr) < self.reach - 16 and abs(target - (addr + n)) < self.reach - 16

    def _fit(self, cave: Cave, n: int, near: int, align: int) -> Optional[int]:
        # first in-reach address of the cave: a cave below `near` that straddles the reach's
        # edge (arm64's 128 MB in a large binary) still offers its upper part
        lowest = max(near + 5, near - n) - (self.reach - 16) + 1
        addr = max(cave.start, lowest)
        addr = (addr + align - 1) // align * align
        while addr + n <= cave.end:
            blocker = _overlaps(addr, addr + n, self.taken)
            if blocker is None:
                return addr if self.in_reach(addr, n, near) else None
            addr = (blocker + align - 1) // align * align
        return None
