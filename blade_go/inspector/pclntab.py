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
"""
import struct
from typing import Dict, List, Tuple

from ..errors import BladeError, Code
from .buildinfo import uvarint
from .elf import ElfImage

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
        self.funcs: Dict[str, List[Tuple[int, int]]] = {}
        self._pcsp: Dict[int, int] = {}  # entry -> offset of the function's pc/sp table
        self._parse()

    def _parse(self):
        d, img = self.data, self.image
        end = "<" if img.little_endian else ">"
        magic = struct.unpack_from(end + "I", d, 0)[0]
        ptr = d[7]
        word = end + ("Q" if ptr == 8 else "I")

        def w(off):
            return struct.unpack_from(word, d, off)[0]

        entries = []  # (entry, name)
        if magic in (GO118, GO120):
            nfunc, text_start = w(8), w(8 + 2 * ptr)
            if text_start == 0:  # PIE: the field is filled by a dynamic relocation
                text_start = self._relocated(self.addr + 8 + 2 * ptr)
            names, pctab, ftab = w(8 + 3 * ptr), w(8 + 6 * ptr), w(8 + 7 * ptr)
            pairs = struct.unpack_from(f"{end}{2 * (nfunc + 1)}I", d, ftab)
            for i in range(nfunc):
                funcoff = pairs[2 * i + 1]
                name_off, pcsp = struct.unpack_from(end + "i8xI", d, ftab + funcoff + 4)
                entry = text_start + pairs[2 * i]
                entries.append((entry, _cstring(d, names + name_off)))
                self._pcsp[entry] = pctab + pcsp if pcsp else 0
            last = text_start + pairs[2 * nfunc]
        elif magic == GO116:
            nfunc, names, pctab, ftab = w(8), w(8 + 2 * ptr), w(8 + 5 * ptr), w(8 + 6 * ptr)
            for i in range(nfunc):
                entry, funcoff = w(ftab + 2 * i * ptr), w(ftab + (2 * i + 1) * ptr)
                name_off, pcsp = struct.unpack_from(end + "i8xI", d, ftab + funcoff + ptr)
                entries.append((entry, _cstring(d, names + name_off)))
                self._pcsp[entry] = pctab + pcsp if pcsp else 0
            last = w(ftab + 2 * nfunc * ptr)
        elif magic == GO12:
            nfunc = w(8)
            ftab = 8 + ptr
            for i in range(nfunc):
                entry, funcoff = w(ftab + 2 * i * ptr), w(ftab + (2 * i + 1) * ptr)
                name_off, pcsp = struct.unpack_from(end + "i8xI", d, funcoff + ptr)
                entries.append((entry, _cstring(d, name_off)))
                self._pcsp[entry] = pcsp
            last = w(ftab + 2 * nfunc * ptr)
        else:
            raise BladeError(Code.PARAMETER_INVALID,
                             f"{img.path}: unknown .gopclntab format (magic {magic:#x})")
        for i, (entry, name) in enumerate(entries):
            stop = entries[i + 1][0] if i + 1 < len(entries) else last
            self.funcs.setdefault(name, []).append((entry, stop))

    def code_end(self, entry: int, next_entry: int) -> int:
        """End of the function's own code (without the INT3 alignment padding after it).

        The pc/sp table covers exactly the function's instructions: its PC deltas sum to the
        function's size. Without a table, trailing 0xCC bytes are taken as padding.
        """
        off, d = self._pcsp.get(entry, 0), self.data
        if off:
            quantum, pc, first = d[6], entry, True
            while True:
                vdelta, off = uvarint(d, off)
                if vdelta == 0 and not first:
                    return pc
                first = False
                pcdelta, off = uvarint(d, off)
                pc += pcdelta * quantum
        code = self.image.read(entry, next_entry - entry)
        return entry + len(code.rstrip(b"\xcc"))

    def _relocated(self, vaddr: int) -> int:
        from .buildinfo import _relocated_pointer
        value = _relocated_pointer(self.image, vaddr)
        if value is None:
            text = self.image.section(".text")
            value = text.addr if text else 0
        return value
