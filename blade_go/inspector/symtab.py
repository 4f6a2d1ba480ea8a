"""`.symtab` looked up without decoding it.

A lookup costs byte searches, not a pass over every symbol (a 68 MB binary has 64,000):
`.strtab` is searched for b"name\0" (every hit is a possible st_name: the external linker
shares a string's tail between names, e.g. `sync.(*Mutex).Unlock` inside
`internal/sync.(*Mutex).Unlock`), then the array of st_name values for those offsets. Only
symbols whose name was asked for are decoded. Iterating `funcs` or `data` (closest-name
suggestions) still decodes all of them, once.
"""
import bisect
import struct
import sys
from array import array
from typing import Dict, Iterator, List, Optional, Tuple

from .elf import ElfImage
from .lazymap import LazyNameMap

STT_OBJECT, STT_FUNC = 1, 2
ABI_SUFFIXES = (".abi0",)
FEW = 32  # st_name offsets looked up one by one (array.index); more: one pass over them all


class SymbolTable:
    """`.symtab` as two lazy mappings: functions name -> [(entry, end)] (symbol table order),
    data name -> (addr, size) (the first of that name)."""

    def __init__(self, image: ElfImage):
        self._image = image
        self._raw = self._strtab = b""
        self._st_name: Optional[array] = None
        self._sorted_names: Optional[List[int]] = None
        self._all: Optional[Tuple[dict, dict]] = None
        self._by_start: Optional[List[Tuple[int, int, int]]] = None
        self._starts: List[int] = []
        self._row_names: Dict[int, str] = {}  # symbol index -> name, of those function_at read
        self.funcs = _Index(self, STT_FUNC)
        self.data = _Index(self, STT_OBJECT)

    # -- the raw table ----------------------------------------------------------------------
    def _load(self) -> bool:
        if self._st_name is None:
            if self._image.section(".symtab") is None:
                self._st_name = array("I")
                return False
            img = self._image
            self._raw = img.section_data(".symtab")
            self._strtab = img.section_data(".strtab")
            e = "<" if img.little_endian else ">"
            if img.ptrsize == 8:  # Elf64_Sym: name, info, other, shndx, value, size
                self._ent, self._row = 24, struct.Struct(e + "IBBHQQ")
            else:                 # Elf32_Sym: name, value, size, info, other, shndx
                self._ent, self._row = 16, struct.Struct(e + "IIIBBH")
            words = array("I", self._raw[:len(self._raw) - len(self._raw) % self._ent])
            if (sys.byteorder == "little") != img.little_endian:
                words.byteswap()
            self._st_name = words[::self._ent // 4]  # st_name is every entry's first word
        return len(self._st_name) > 0

    def _columns(self) -> Tuple[array, array, bytes]:
        """(st_value, st_size, st_info) of every symbol, as arrays sliced out at C speed."""
        n = len(self._st_name)
        words = array("Q" if self._ent == 24 else "I", self._raw[:n * self._ent])
        if (sys.byteorder == "little") != self._image.little_endian:
            words.byteswap()
        if self._ent == 24:  # 3 words: name|info|other|shndx, value, size
            return words[1::3], words[2::3], self._raw[4:n * 24:24]
        return words[1::4], words[2::4], self._raw[12:n * 16:16]

    def _symbol(self, i: int) -> Tuple[int, int, int, int]:
        """(name offset, kind, value, size) of symbol i."""
        if self._ent == 24:
            n, info, _o, _x, v, s = self._row.unpack_from(self._raw, i * 24)
        else:
            n, v, s, info, _o, _x = self._row.unpack_from(self._raw, i * 16)
        return n, info & 0xF, v, s

    def _name_at(self, off: int) -> str:
        return self._strtab[off:self._strtab.index(b"\0", off)].decode("utf-8", "replace")

    def _indices(self, offsets) -> List[int]:
        """Indices (ascending) of the symbols whose st_name is one of `offsets`."""
        st, out = self._st_name, []
        offsets = {o for o in offsets if o}  # st_name 0: no name
        if len(offsets) > FEW:
            return [i for i, n in enumerate(st) if n in offsets]
        for off in offsets:
            i = -1
            while True:
                try:
                    i = st.index(off, i + 1)
                except ValueError:
                    break
                out.append(i)
        return sorted(out)

    def rows(self, name: str) -> List[Tuple[int, int, int]]:
        """(kind, value, size) of every symbol named `name`, in table order."""
        if "\0" in name or not self._load():
            return []
        if "\ufffd" in name:  # invalid UTF-8 in the table decodes to U+FFFD: compare decoded
            return [self._symbol(i)[1:] for i, n in enumerate(self._st_name)
                    if n and self._name_at(n) == name]
        try:
            key = name.encode("utf-8") + b"\0"
        except UnicodeEncodeError:
            return []  # a lone surrogate: no name decodes to it
        offsets, strtab, pos = [], self._strtab, self._strtab.find(key)
        while pos >= 0:
            offsets.append(pos)
            pos = strtab.find(key, pos + 1)
        return [self._symbol(i)[1:] for i in self._indices(offsets)]

    def names_with(self, part: str, kind: int) -> List[str]:
        """Names (table order, each once) of the symbols of `kind` whose name contains
        `part`: the strings holding it are found by a byte search, then the st_names that
        start inside one of them before its last `part`."""
        if not part or not self._load():
            return []
        strtab, needle, spans = self._strtab, part.encode("utf-8"), []
        pos = strtab.find(needle)
        while pos >= 0:
            start = strtab.rfind(b"\0", 0, pos) + 1
            end = strtab.find(b"\0", pos)
            if end < 0:
                break
            last = strtab.rfind(needle, pos, end)
            spans.append((start, last))
            pos = strtab.find(needle, end)
        if self._sorted_names is None:
            self._sorted_names = sorted(set(self._st_name))
        names, offsets = self._sorted_names, set()
        for start, last in spans:
            offsets.update(names[bisect.bisect_left(names, start):
                                 bisect.bisect_right(names, last)])
        out: Dict[str, None] = {}
        for i in self._indices(offsets):
            n, k, _, _ = self._symbol(i)
            if k == kind:
                out.setdefault(self._name_at(n))
        return list(out)

    def function_spans(self) -> Iterator[Tuple[int, int]]:
        """(entry, end) of every function symbol, names not decoded."""
        if not self._load():
            return
        for name, value, size, info in zip(self._st_name, *self._columns()):
            if info & 0xF == STT_FUNC and name:
                yield value, value + size

    def function_at(self, pc: int) -> Optional[str]:
        """Name of the function whose code holds pc, as a sorted table of every function
        would answer (`.abi0` wrappers left out, the longest span at equal entries), decoding
        only the names at that entry."""
        if self._by_start is None:
            if not self._load():
                return None
            values, sizes, infos = self._columns()
            names = self._st_name
            funcs = [k for k, info in enumerate(infos) if info & 0xF == STT_FUNC and names[k]]
            funcs.sort(key=values.__getitem__)
            self._by_start = [(values[k], values[k] + sizes[k], k) for k in funcs]
            self._starts = [values[k] for k in funcs]
        rows, j = self._by_start, bisect.bisect_right(self._starts, pc) - 1
        while j >= 0:
            lo, same = rows[j][0], []
            while j >= 0 and rows[j][0] == lo:
                k = rows[j][2]
                name = self._row_names.get(k)
                if name is None:
                    name = self._row_names[k] = self._name_at(self._st_name[k])
                if not name.endswith(ABI_SUFFIXES):
                    same.append((rows[j][1], name))
                j -= 1
            if same:
                hi, name = max(same)
                return name if lo <= pc < max(hi, lo + 1) else None
        return None

    def decoded(self) -> Tuple[dict, dict]:
        """Every symbol decoded: (functions, data) as plain dicts, built once."""
        if self._all is None:
            funcs: Dict[str, List[Tuple[int, int]]] = {}
            data: Dict[str, Tuple[int, int]] = {}
            if self._load():
                strtab = self._strtab
                for i, name_off in enumerate(self._st_name):
                    if name_off == 0:
                        continue
                    _, kind, value, size = self._symbol(i)
                    if kind not in (STT_FUNC, STT_OBJECT):
                        continue
                    name = strtab[name_off:strtab.index(b"\0", name_off)].decode("utf-8",
                                                                                 "replace")
                    if kind == STT_FUNC:
                        funcs.setdefault(name, []).append((value, value + size))
                    else:
                        data.setdefault(name, (value, size))
            self._all = (funcs, data)
        return self._all


class _Index(LazyNameMap):
    """One kind of symbol by name: lookups search the table (SymbolTable.rows); iteration
    decodes it all (SymbolTable.decoded)."""

    def __init__(self, table: SymbolTable, kind: int):
        self._table, self._kind, self._cache = table, kind, {}

    def _find(self, name):
        if name not in self._cache:
            if not isinstance(name, str):
                return None
            rows = [(v, v + s) if self._kind == STT_FUNC else (v, s)
                    for k, v, s in self._table.rows(name) if k == self._kind]
            self._cache[name] = (rows if self._kind == STT_FUNC else rows[0]) if rows else None
        return self._cache[name]

    def _all(self) -> dict:
        return self._table.decoded()[0 if self._kind == STT_FUNC else 1]

    def names_with(self, part: str) -> List[str]:
        """Names containing `part`, without decoding the others."""
        return self._table.names_with(part, self._kind)

    def function_at(self, pc: int) -> Optional[str]:
        return self._table.function_at(pc)


def names_containing(table, part: str) -> List[str]:
    """Names in a function or data table (lazy .symtab index or a plain dict) holding `part`."""
    if hasattr(table, "names_with"):
        return table.names_with(part)
    return [n for n in table if part in n]
