"""Inlined call sites from `.gopclntab` alone: what a `-ldflags="-s -w"` binary still says.

The Go runtime needs to print inlined frames in tracebacks, so every function with inlined
calls keeps, without any DWARF:
- FUNCDATA_InlTree (funcdata index 3): an array of `runtime.inlinedCall` records at
  `moduledata.gofunc + funcdata[3]` (a uint32 offset since Go 1.18; ^0 = none), and
- PCDATA_InlTreeIndex (pcdata index 2): pc -> index of the innermost inlined call (-1 = the
  function's own code). A parent is added to the tree before its children, so the table's
  largest value is the tree's last record: that is its length.

Records (runtime/symtabinl.go since Go 1.20, runtime/symtab.go in 1.12-1.19):

    Go 1.20+ (16 bytes)          Go 1.18-1.19 (20 bytes)
    0  funcID u8, pad [3]        0  parent i16, funcID u8, pad u8
    4  nameOff i32               4  file i32   (index in the function's CU file table)
    8  parentPc i32              8  line i32   (the call site's line)
    12 startLine i32             12 func_ i32  (nameOff)
                                 16 parentPc i32

nameOff is an offset into funcnametab, so the target's name is located there once (a byte
search: no other name is decoded) and its 4-byte offset is searched for in the funcdata area;
a hit counts only when it falls on a record's name field inside a tree (tree starts from the
_func headers, tree length from the pcdata table). Since Go 1.20 the call site's file and line
are those of the caller's instruction at parentPc (its pcfile and pcln tables); before, the
record holds them. The file table of a function is `cutab[cuOffset + fileno]` -> offset in
filetab.

_func (runtime2.go): entryOff u32, nameOff i32, args, deferreturn, pcsp, pcfile, pcln,
npcdata, cuOffset (u32 each), [startLine i32 since 1.20], funcID u8, flag u8, pad u8,
nfuncdata u8, then pcdata [npcdata]u32, funcdata [nfuncdata]u32.

A pc-value table is a run of (value delta: zigzag uvarint, pc delta: uvarint x quantum)
pairs, starting at value -1 and the function's entry, ended by a 0 value delta (except first).

Go before 1.18 (funcdata as absolute pointers) is not read here: the caller says the sites are
unknown. Moduledata (for `gofunc`) comes from moduledata.py.
"""
import bisect
import struct
from typing import Dict, Iterator, List, Optional, Tuple

from ..errors import BladeError, Code
from .binary import InlinedSite
from .buildinfo import uvarint
from .pclntab import GO118, GO120, SECTION_NAMES

PCDATA_INL_TREE_INDEX = 2
FUNCDATA_INL_TREE = 3
NO_FUNCDATA = 0xFFFFFFFF
# moduledata layout (moduledata.py) -> index of `gofunc` in the words after enoptrbss
GOFUNC_WORD = {"go1.18-1.19": 6, "go1.20-1.25": 8, "go1.26+": 8, "go1.27+": 11}


# -- pc-value tables ------------------------------------------------------------------------
def pcvalue_runs(data: bytes, off: int, entry: int,
                 quantum: int) -> Iterator[Tuple[int, int, int]]:
    """(start pc, end pc, value) runs of the pc-value table at `off` (module doc). Only pc
    differences are stored, so an entry of 0 gives pcs relative to the function's entry."""
    pc, value, first = entry, -1, True
    while True:
        uv = data[off]  # one byte in the common case: no call
        off += 1
        if uv & 0x80:
            uv, off = uvarint(data, off - 1)
        if uv == 0 and not first:
            return
        first = False
        value += -(uv & 1) ^ (uv >> 1)
        delta = data[off]
        off += 1
        if delta & 0x80:
            delta, off = uvarint(data, off - 1)
        start, pc = pc, pc + delta * quantum
        yield start, pc, value


def pcvalue_at(data: bytes, off: int, entry: int, quantum: int, target: int) -> int:
    """The table's value at pc `target` (-1 when the table does not cover it)."""
    for start, end, value in pcvalue_runs(data, off, entry, quantum):
        if start <= target < end:
            return value
    return -1


# -- the inline trees of one binary -------------------------------------------------------------
class InlineTrees:
    def __init__(self, image, go_version: str, moduledata=None):
        sec = image.section(*SECTION_NAMES)
        if sec is None:
            raise BladeError(Code.PARAMETER_INVALID, f"{image.path} has no .gopclntab")
        self.image, self.go_version = image, go_version
        d = self.data = image.section_data(sec.name)
        self.end = "<" if image.little_endian else ">"
        magic = struct.unpack_from(self.end + "I", d, 0)[0]
        if magic not in (GO118, GO120):
            raise BladeError(Code.PARAMETER_INVALID,
                             f"{image.path}: inline trees are read from Go 1.18+ pclntabs only "
                             f"(magic {magic:#x})")
        self.new_records = magic == GO120
        self.rec_size, self.name_field = (16, 4) if self.new_records else (20, 12)
        self.head_size = 44 if self.new_records else 40
        self.quantum, ptr = d[6], d[7]
        words = struct.unpack_from(self.end + ("8Q" if ptr == 8 else "8I"), d, 8)
        self.nfunc = words[0]
        self.names, self.cutab, self.filetab, self.pctab, self.ftab = words[3:8]
        self._gofunc: Optional[int] = None
        self._moduledata = moduledata  # a callable giving the ModuleData, when one is kept
        self._trees: Optional[List[Tuple[int, int]]] = None  # (tree offset, _func offset)
        self._region: Optional[Tuple[int, bytes]] = None   # (first tree offset, bytes)

    # -- lazily built ---------------------------------------------------------------------------
    @property
    def gofunc(self) -> int:
        if self._gofunc is None:
            from .moduledata import FIXED_WORDS, find_moduledata
            md = (self._moduledata or (lambda: find_moduledata(self.image, self.go_version)))()
            index = GOFUNC_WORD.get(md.layout)
            if index is None:
                raise BladeError(Code.PARAMETER_INVALID,
                                 f"{self.image.path}: module data layout {md.layout} has no "
                                 "gofunc (inline trees need Go 1.18+)")
            self._gofunc = md.word(md.addr + (FIXED_WORDS + index) * md.w)
            if not self._gofunc or self.image.segment_for(self._gofunc) is None:
                raise BladeError(Code.PARAMETER_INVALID,
                                 f"{self.image.path}: module data gofunc "
                                 f"{self._gofunc:#x} is not in the image")
        return self._gofunc

    def _func_head(self, funcoff: int) -> tuple:
        """(nameOff, pcfile, pcln, npcdata, cuOffset, nfuncdata) of the _func at `funcoff`."""
        p = self.ftab + funcoff
        name_off, = struct.unpack_from(self.end + "i", self.data, p + 4)
        pcfile, pcln, npcdata, cu = struct.unpack_from(self.end + "4I", self.data, p + 20)
        return name_off, pcfile, pcln, npcdata, cu, self.data[p + self.head_size - 1]

    def trees(self) -> List[Tuple[int, int]]:
        """(inline tree offset from gofunc, _func offset) of every function with a tree."""
        if self._trees is None:
            d, end, ftab, hs = self.data, self.end, self.ftab, self.head_size
            u32 = struct.Struct(end + "I").unpack_from
            funcoffs = struct.unpack_from(f"{end}{2 * self.nfunc}I", d, ftab)[1::2]
            out = []
            for fo in funcoffs:
                p = ftab + fo
                if d[p + hs - 1] <= FUNCDATA_INL_TREE:
                    continue
                npcdata = u32(d, p + 28)[0]
                off = u32(d, p + hs + 4 * (npcdata + FUNCDATA_INL_TREE))[0]
                if off != NO_FUNCDATA:
                    out.append((off, fo))
            out.sort()
            self._trees = out
        return self._trees

    def tree_length(self, funcoff: int) -> int:
        """Records in the function's tree: the largest PCDATA_InlTreeIndex value + 1."""
        _, _, _, npcdata, _, _ = self._func_head(funcoff)
        if npcdata <= PCDATA_INL_TREE_INDEX:
            return 0
        p = self.ftab + funcoff + self.head_size + 4 * PCDATA_INL_TREE_INDEX
        off, = struct.unpack_from(self.end + "I", self.data, p)
        if not off:
            return 0
        runs = pcvalue_runs(self.data, self.pctab + off, 0, self.quantum)
        return 1 + max((v for _, _, v in runs), default=-1)

    def _region_bytes(self) -> Tuple[int, bytes]:
        """The bytes from the first inline tree to the end of the last one."""
        if self._region is None:
            trees = self.trees()
            if not trees:
                self._region = (0, b"")
            else:
                first, (last, last_fo) = trees[0][0], trees[-1]
                stop = last + self.rec_size * self.tree_length(last_fo)
                self._region = (first, self.image.read(self.gofunc + first, stop - first))
        return self._region

    # -- names and files ------------------------------------------------------------------------
    def name_offsets(self, name: str) -> List[int]:
        """Offsets of `name` in funcnametab (byte search: no other name is decoded)."""
        d, want = self.data, b"\0" + name.encode() + b"\0"
        out = [0] if d.startswith(want[1:], self.names) else []
        pos = d.find(want, self.names, self.cutab)  # funcnametab ends where cutab starts
        while pos != -1:
            out.append(pos + 1 - self.names)
            pos = d.find(want, pos + 1, self.cutab)
        return out

    def _cstring(self, off: int) -> str:
        return self.data[off:self.data.index(b"\0", off)].decode("utf-8", "replace")

    def file_name(self, cu: int, fileno: int) -> str:
        if fileno < 0:
            return "?"
        off, = struct.unpack_from(self.end + "I", self.data, self.cutab + 4 * (cu + fileno))
        return "?" if off == NO_FUNCDATA else self._cstring(self.filetab + off)

    # -- the sites ------------------------------------------------------------------------------
    def sites(self, name: str) -> List[InlinedSite]:
        """Every place `name` was inlined: (outermost caller, call file, call line)."""
        offsets = self.name_offsets(name)
        if not offsets:
            return []
        trees = self.trees()
        starts = [t for t, _ in trees]
        first, region = self._region_bytes()
        order = "little" if self.end == "<" else "big"
        lengths: Dict[int, int] = {}
        out = set()
        for name_off in offsets:
            needle = name_off.to_bytes(4, order, signed=True)
            pos = region.find(needle)
            while pos != -1:
                at = first + pos - self.name_field  # the record's start, if it is one
                i = bisect.bisect_right(starts, at) - 1
                tree = starts[i] if i >= 0 else None
                while i >= 0 and starts[i] == tree and (at - tree) % self.rec_size == 0:
                    fo = trees[i][1]  # every function with this tree (not shared in practice)
                    if fo not in lengths:
                        lengths[fo] = self.tree_length(fo)
                    if (at - tree) // self.rec_size < lengths[fo]:
                        out.add(self._site(fo, region, at - first))
                    i -= 1
                pos = region.find(needle, pos + 1)
        return sorted(out, key=lambda s: (s.caller, s.file, s.line))

    def ranges(self, name: str) -> List[Tuple[int, int]]:
        """[lo, hi) file addresses where `name` runs inlined: the pcs of each function holding
        a record of `name` whose PCDATA_InlTreeIndex is that record or one nested in it (a
        record's parent is the tree index at its parentPc since Go 1.20, its `parent` field
        before)."""
        offsets = self.name_offsets(name)
        if not offsets:
            return []
        want = set(offsets)
        trees = self.trees()
        first, region = self._region_bytes()
        d, end = self.data, self.end
        text_start = self._text_start()
        entries = self._entries()
        out = []
        for tree, fo in trees:
            n = self.tree_length(fo)
            if not n:
                continue
            base = tree - first
            names = [struct.unpack_from(end + "i", region, base + k * self.rec_size
                                        + self.name_field)[0] for k in range(n)]
            if not want.intersection(names):
                continue
            _, _, _, npcdata, _, _ = self._func_head(fo)
            p = self.ftab + fo + self.head_size + 4 * PCDATA_INL_TREE_INDEX
            off, = struct.unpack_from(end + "I", d, p)
            entry = text_start + entries[fo]
            runs = list(pcvalue_runs(d, self.pctab + off, 0, self.quantum))

            def index_at(pc):
                for s0, e0, v in runs:
                    if s0 <= pc < e0:
                        return v
                return -1

            parents = []
            for k in range(n):
                if self.new_records:
                    ppc, = struct.unpack_from(end + "i", region, base + k * self.rec_size + 8)
                    parents.append(index_at(ppc))
                else:
                    par, = struct.unpack_from(end + "h", region, base + k * self.rec_size)
                    parents.append(par)
            for s0, e0, v in runs:
                k, seen = v, 0
                while 0 <= k < n and seen <= n:
                    if names[k] in want:
                        out.append((entry + s0, entry + e0))
                        break
                    k, seen = parents[k], seen + 1
        return sorted(set(out))

    def _text_start(self) -> int:
        from .pclntab import PclnTable
        return PclnTable(self.image)._text_start()

    def _entries(self) -> Dict[int, int]:
        """_func offset -> entry offset from the text start."""
        d = self.data
        pairs = struct.unpack_from(f"{self.end}{2 * self.nfunc}I", d, self.ftab)
        return {pairs[2 * i + 1]: pairs[2 * i] for i in range(self.nfunc)}

    def _site(self, funcoff: int, region: bytes, rec: int) -> InlinedSite:
        caller_off, pcfile, pcln, _, cu, _ = self._func_head(funcoff)
        caller = self._cstring(self.names + caller_off)
        if self.new_records:
            pc, = struct.unpack_from(self.end + "i", region, rec + 8)  # from the entry
            fileno = pcvalue_at(self.data, self.pctab + pcfile, 0, self.quantum, pc) \
                if pcfile else -1
            line = pcvalue_at(self.data, self.pctab + pcln, 0, self.quantum, pc) if pcln else 0
        else:
            fileno, line = struct.unpack_from(self.end + "ii", region, rec + 4)
        return InlinedSite(caller, self.file_name(cu, fileno), max(line, 0))


def sites_source(binary) -> str:
    """Where binary.inlined_sites reads from, for the user."""
    if binary.has_dwarf:
        return "DWARF"
    if getattr(binary, "debug_binary", None) is not None:
        return "--debug-binary DWARF"
    return ".gopclntab inline trees"


def pclntab_inlined_sites(binary, name: str) -> List[InlinedSite]:
    """binary's inlined copies of `name` from its inline trees (kept on the binary)."""
    trees = getattr(binary, "_inline_trees", None)
    if trees is None:
        kept = (lambda: binary.moduledata) if hasattr(type(binary), "moduledata") else None
        trees = binary._inline_trees = InlineTrees(binary.image, binary.go_version, kept)
    try:
        return trees.sites(name)
    except (IndexError, ValueError, struct.error) as e:  # a table that is not what it claims
        raise BladeError(Code.PARAMETER_INVALID,
                         f"{binary.path}: the .gopclntab inline trees are unreadable ({e})")


def pclntab_inlined_ranges(binary, name: str) -> List[Tuple[int, int]]:
    """[lo, hi) code ranges where `name` runs inlined, from the inline trees (issue 19)."""
    trees = getattr(binary, "_inline_trees", None)
    if trees is None:
        kept = (lambda: binary.moduledata) if hasattr(type(binary), "moduledata") else None
        trees = binary._inline_trees = InlineTrees(binary.image, binary.go_version, kept)
    try:
        return trees.ranges(name)
    except (IndexError, ValueError, struct.error) as e:
        raise BladeError(Code.PARAMETER_INVALID,
                         f"{binary.path}: the .gopclntab inline trees are unreadable ({e})")
