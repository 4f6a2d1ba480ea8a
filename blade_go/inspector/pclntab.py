"""`.gopclntab`: function names and address ranges, present even in `-ldflags=-s` binaries.

Header layouts (runtime/symtab.go, pcHeader):
- Go 1.18+ (magic 0xfffffff0; 1.20+ 0xfffffff1): magic u32, pad u8 x2, minLC u8, ptrSize u8,
  nfunc, nfiles, textStart, funcnameOffset, cuOffset, filetabOffset, pctabOffset, pclnOffset
  (pointer-sized). functab = nfunc+1 pairs of u32 {entry offset from textStart, func offset};
  a _func starts with {entryOff u32, nameOff i32}.
- Go 1.16/1.17 (0xfffffffa): as above without textStart; functab pairs are pointer-sized
  {entry pc, func offset}; a _func starts with {entry uintptr, nameOff i32}.
- Go 1.2-1.15 (0xfffffffb): magic, pad, quantum, ptrSize, nfunc (uintptr), then the functab
  of pointer-sized pairs; names are offsets into the whole table.
In every format the entry of function i+1 (or the final sentinel) ends function i.

Looking one name up (Go 1.18+) does not decode the others: the name's offsets in the function
name table are found by a byte search, then the _func records holding that nameOff by a
second byte search over the records (each hit checked against the functab). Older formats, and
iterating `funcs`, decode every name once.
"""
import struct
import sys
from array import array
from typing import Dict, List, Optional, Tuple

from ..errors import BladeError, Code
from .buildinfo import uvarint
from .elf import ElfImage
from .lazymap import LazyNameMap

SECTION_NAMES = (".gopclntab", ".data.rel.ro.gopclntab")
GO118, GO120, GO116, GO12 = 0xFFFFFFF0, 0xFFFFFFF1, 0xFFFFFFFA, 0xFFFFFFFB


def _cstring(data: bytes, off: int) -> str:
    end = data.index(b"\0", off)
    return data[off:end].decode("utf-8", "replace")


class PclnTable:
    """Function name -> [(entry, end)] from .gopclntab (names may repeat: ABI wrappers)."""

    def __init__(self, image: ElfImage):
        sec = image.section(*SECTION_NAMES)
        if sec is None:
            raise BladeError(Code.PARAMETER_INVALID, f"{image.path} has no .gopclntab")
        self.image = image
        self.addr = sec.addr
        self.data = image.section_data(sec.name)
        self._end = "<" if image.little_endian else ">"
        self._magic = struct.unpack_from(self._end + "I", self.data, 0)[0]
        if self._magic not in (GO118, GO120, GO116, GO12):
            raise BladeError(Code.PARAMETER_INVALID, f"{image.path}: unknown .gopclntab format "
                                                     f"(magic {self._magic:#x})")
        self._all: Optional[Tuple[dict, dict]] = None
        self._pcsp_known: Dict[int, int] = {}  # entry -> pc/sp table, of the functions looked up
        self._pairs: Optional[array] = None
        self.funcs = _PclnFuncs(self)

    def _w(self, off: int) -> int:
        ptr = self.data[7]
        return struct.unpack_from(self._end + ("Q" if ptr == 8 else "I"), self.data, off)[0]

    @property
    def _pcsp(self) -> Dict[int, int]:
        """entry -> offset of the function's pc/sp table, for every function."""
        return self._decoded()[1]

    # -- one name ---------------------------------------------------------------------------
    def lookup(self, name: str) -> Optional[List[Tuple[int, int]]]:
        """[(entry, end)] of the functions named `name` (table order), None if none."""
        if self._magic not in (GO118, GO120) or "\ufffd" in name or "\0" in name:
            return self._decoded()[0].get(name)
        try:
            key = name.encode("utf-8") + b"\0"
        except UnicodeEncodeError:
            return None
        d, ptr, end = self.data, self.data[7], self._end
        nfunc, text_start = self._w(8), self._text_start()
        names, cutab, pctab, ftab = (self._w(8 + k * ptr) for k in (3, 4, 6, 7))
        if self._pairs is None:
            pairs = array("I", d[ftab:ftab + 8 * (nfunc + 1)])
            if (sys.byteorder == "little") != self.image.little_endian:
                pairs.byteswap()
            self._pairs, self._funcoffs = pairs, pairs[1:2 * nfunc:2]
            self._funcoff_set = set(self._funcoffs)
        pairs, found = self._pairs, set()
        stop = cutab if cutab > names else len(d)  # the name table ends where cutab starts
        pos = d.find(key, names, stop)
        while pos >= 0:
            needle = struct.pack(end + "i", pos - names)
            hit = d.find(needle, ftab)
            while hit >= 0:
                funcoff = hit - 4 - ftab
                if funcoff in self._funcoff_set:
                    i = self._funcoffs.index(funcoff)
                    if struct.unpack_from(end + "I", d, ftab + funcoff)[0] == pairs[2 * i]:
                        found.add(i)
                hit = d.find(needle, hit + 1)
            pos = d.find(key, pos + 1, stop)
        spans = []
        for i in sorted(found):
            entry = text_start + pairs[2 * i]
            pcsp = struct.unpack_from(end + "I", d, ftab + self._funcoffs[i] + 16)[0]
            self._pcsp_known[entry] = pctab + pcsp if pcsp else 0
            spans.append((entry, text_start + pairs[2 * i + 2]))
        return spans or None

    def _text_start(self) -> int:
        ptr = self.data[7]
        text_start = self._w(8 + 2 * ptr)
        if text_start == 0:  # PIE: the field is filled by a dynamic relocation
            text_start = self._relocated(self.addr + 8 + 2 * ptr)
        return text_start

    # -- every name -------------------------------------------------------------------------
    def _decoded(self) -> Tuple[dict, dict]:
        if self._all is None:
            funcs: Dict[str, List[Tuple[int, int]]] = {}
            pcsp: Dict[int, int] = {}
            entries, last = self._parse(pcsp)
            for i, (entry, name) in enumerate(entries):
                stop = entries[i + 1][0] if i + 1 < len(entries) else last
                funcs.setdefault(name, []).append((entry, stop))
            self._all = (funcs, pcsp)
        return self._all

    def _parse(self, pcsp_of: Dict[int, int]):
        d, magic, ptr, end = self.data, self._magic, self.data[7], self._end
        w = self._w
        entries = []  # (entry, name)
        if magic in (GO118, GO120):
            nfunc, text_start = w(8), self._text_start()
            names, pctab, ftab = w(8 + 3 * ptr), w(8 + 6 * ptr), w(8 + 7 * ptr)
            pairs = struct.unpack_from(f"{end}{2 * (nfunc + 1)}I", d, ftab)
            for i in range(nfunc):
                funcoff = pairs[2 * i + 1]
                name_off, pcsp = struct.unpack_from(end + "i8xI", d, ftab + funcoff + 4)
                entry = text_start + pairs[2 * i]
                entries.append((entry, _cstring(d, names + name_off)))
                pcsp_of[entry] = pctab + pcsp if pcsp else 0
            last = text_start + pairs[2 * nfunc]
        elif magic == GO116:
            nfunc, names, pctab, ftab = w(8), w(8 + 2 * ptr), w(8 + 5 * ptr), w(8 + 6 * ptr)
            for i in range(nfunc):
                entry, funcoff = w(ftab + 2 * i * ptr), w(ftab + (2 * i + 1) * ptr)
                name_off, pcsp = struct.unpack_from(end + "i8xI", d, ftab + funcoff + ptr)
                entries.append((entry, _cstring(d, names + name_off)))
                pcsp_of[entry] = pctab + pcsp if pcsp else 0
            last = w(ftab + 2 * nfunc * ptr)
        else:  # GO12
            nfunc = w(8)
            ftab = 8 + ptr
            for i in range(nfunc):
                entry, funcoff = w(ftab + 2 * i * ptr), w(ftab + (2 * i + 1) * ptr)
                name_off, pcsp = struct.unpack_from(end + "i8xI", d, funcoff + ptr)
                entries.append((entry, _cstring(d, name_off)))
                pcsp_of[entry] = pcsp
            last = w(ftab + 2 * nfunc * ptr)
        return entries, last

    def code_end(self, entry: int, next_entry: int) -> int:
        """End of the function's own code (without the alignment padding after it).

        The pc/sp table covers exactly the function's instructions: its PC deltas sum to the
        function's size. Without a table, trailing padding bytes are taken as padding (the
        arch's pad_byte: INT3 on x86; arm64's zero words, the end rounded up to a whole
        instruction).
        """
        off = self._pcsp_known[entry] if entry in self._pcsp_known else \
            self._pcsp.get(entry, 0)
        d = self.data
        if off:
            quantum, pc, first = d[6], entry, True
            while True:
                vdelta, off = uvarint(d, off)
                if vdelta == 0 and not first:
                    return pc
                first = False
                pcdelta, off = uvarint(d, off)
                pc += pcdelta * quantum
        from ..stubs.select import stub_arch
        impl = stub_arch(self.image.goarch)
        code = self.image.read(entry, next_entry - entry)
        n = len(code.rstrip(bytes([impl.pad_byte])))
        return entry + -(-n // impl.insn_align) * impl.insn_align

    def _relocated(self, vaddr: int) -> int:
        from .buildinfo import _relocated_pointer
        value = _relocated_pointer(self.image, vaddr)
        if value is None:
            text = self.image.section(".text")
            value = text.addr if text else 0
        return value


class _PclnFuncs(LazyNameMap):
    """PclnTable.funcs: lookups by name search the table; iteration decodes every name."""

    def __init__(self, table: PclnTable):
        self._table, self._cache = table, {}

    def _find(self, name):
        if not isinstance(name, str):
            return None
        if name not in self._cache:
            self._cache[name] = self._table.lookup(name)
        return self._cache[name]

    def _all(self) -> dict:
        return self._table._decoded()[0]
