"""Code address -> (function, file, line) from `.gopclntab` (Go 1.18+), which every Go binary
keeps, stripped or not: the tables the runtime prints tracebacks from.

    positions(binary, [0x4a1f3c]) -> {0x4a1f3c: ("main.handler", "/src/app/main.go", 42)}

For an address inside code the compiler inlined, the function is the one whose machine code
holds it and the file and line are those of the inlined source (what a traceback prints).
The function table is an array of (entry offset, _func offset) pairs from the text start;
pcfile and pcln are pc-value tables (inltree.pcvalue_at) read relative to the entry.
"""
import bisect
import struct
from array import array
import sys
from typing import Dict, Iterable, Optional, Tuple

from .inltree import pcvalue_at
from .pclntab import GO118, GO120

Position = Tuple[str, str, int]


def positions(binary, pcs: Iterable[int]) -> Dict[int, Optional[Position]]:
    """{pc (file address): (function, file, line) or None when no function holds it}."""
    pcs = list(pcs)
    table = binary.pclntab
    d, end = table.data, table._end
    if table._magic not in (GO118, GO120):
        return {pc: _by_symbol(binary, pc) for pc in pcs}
    ptr, quantum = d[7], d[6]
    nfunc, text_start = table._w(8), table._text_start()
    names, cutab, filetab, pctab, ftab = (table._w(8 + k * ptr) for k in (3, 4, 5, 6, 7))
    pairs = array("I", d[ftab:ftab + 8 * (nfunc + 1)])
    if (sys.byteorder == "little") != binary.image.little_endian:
        pairs.byteswap()
    entries = pairs[0::2]
    out = {}
    for pc in pcs:
        off = pc - text_start
        i = bisect.bisect_right(entries, off) - 1
        if off < 0 or i < 0 or i >= nfunc:
            out[pc] = None
            continue
        p = ftab + pairs[2 * i + 1]
        name_off, = struct.unpack_from(end + "i", d, p + 4)
        pcfile, pcln, _, cu = struct.unpack_from(end + "4I", d, p + 20)
        rel = off - entries[i]
        fileno = pcvalue_at(d, pctab + pcfile, 0, quantum, rel) if pcfile else -1
        line = pcvalue_at(d, pctab + pcln, 0, quantum, rel) if pcln else 0
        fname = "?"
        if fileno >= 0:
            foff, = struct.unpack_from(end + "I", d, cutab + 4 * (cu + fileno))
            if foff != 0xFFFFFFFF:
                fname = _cstring(d, filetab + foff)
        out[pc] = (_cstring(d, names + name_off), fname, max(line, 0))
    return out


def _cstring(d: bytes, off: int) -> str:
    return d[off:d.index(b"\0", off)].decode("utf-8", "replace")


def _by_symbol(binary, pc: int) -> Optional[Position]:
    """Older pclntabs: the function from the symbol table, no line."""
    for name, spans in binary._function_table().items():
        for lo, hi in spans:
            if lo <= pc < hi:
                return (name, "?", 0)
    return None
