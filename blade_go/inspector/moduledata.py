"""The runtime's module data, found without `.symtab`: itabs and type descriptors of stripped
binaries.

`runtime.firstmoduledata` (runtime/symtab.go, `moduledata`) is what the Go runtime itself walks
for tracebacks, reflection and interface conversions, so it survives `-ldflags=-s -w`. Since Go
1.16 its first word is a pointer to the pclntab header (`pcHeader`), which is the start of the
`.gopclntab` section: scanning the writable data for that pointer value (or, in PIE binaries,
for the R_*_RELATIVE relocation that fills it in) finds the module data, as tools that recover
symbols from stripped Go binaries do. Then, in pointer-sized words:

    0 pcHeader | 1-18 six slices (funcnametab cutab filetab pctab pclntable ftab)
    19 findfunctab | 20 minpc 21 maxpc | 22 text 23 etext | 24-31 noptrdata..enoptrbss
    then per version, before `textsectmap []textsect, typelinks []int32, itablinks []*itab`:
      1.16-1.17   end gcdata gcbss types etypes                               (5 words)
      1.18-1.19   ... types etypes rodata gofunc                              (7)
      1.20-1.25   covctrs ecovctrs end gcdata gcbss types etypes rodata gofunc (9)
      1.26        ... gofunc epclntab                                          (10)
      1.27        covctrs ecovctrs end gcdata gcbss types typedesclen etypes itaboffset
                  itabsize rodata gofunc epclntab, then textsectmap and ptab: no typelinks
                  or itablinks any more; the itabs are packed at types+itaboffset, each
                  {inter, _type, hash, fun[n]} with n = 1, or the interface's method count
                  when fun[0] != 0 (abi.ITab.Size)

Rather than trusting a version table, every layout is tried and the one whose fields are
consistent (text equals the pclntab's text start, slices with len == cap pointing into the
image, types <= etypes) is used. Go before 1.16 (module data starts with a pclntable slice) is
not supported.

A runtime type descriptor (`abi.Type`) is size, ptrdata (words), hash u32, tflag u8, align,
fieldAlign, kind u8, equal (word), gcdata (word), str nameOff i32, ptrToThis i32: the name is at
`types + str`, a flags byte then the length (uvarint since Go 1.17, 2 bytes big endian before)
then the bytes; with tflagExtraStar the stored name has a leading '*' that is not part of it.
An itab is {inter *interfacetype, _type *_type, hash u32, pad, fun[...]}: its interface type's
name is the interface's ("error").
"""
import struct
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from ..errors import BladeError, Code
from .buildinfo import uvarint, version_tuple
from .elf import ElfImage

TFLAG_EXTRA_STAR = 1 << 1
# the loader's "base + addend" relocation per GOARCH (R_X86_64_RELATIVE, R_AARCH64_RELATIVE):
# external linkers keep a PIE's pointers only there (the file holds 0)
RELATIVE = {"amd64": 8, "arm64": 1027}
SHF_WRITE = 1
# (name, index of `types` after enoptrbss, index of `textsectmap` after enoptrbss)
LAYOUTS = (("go1.20-1.25", 5, 9), ("go1.26+", 5, 10), ("go1.18-1.19", 3, 7),
           ("go1.16-1.17", 3, 5))
FIXED_WORDS = 32  # pcHeader .. enoptrbss


def _by_version(go_version: str):
    """LAYOUTS with the one the version names first (the checks decide among the rest)."""
    v = version_tuple(go_version or "go0")
    want = ("go1.26+" if v >= (1, 26) else "go1.20-1.25" if v >= (1, 20) else
            "go1.18-1.19" if v >= (1, 18) else "go1.16-1.17")
    return sorted(LAYOUTS, key=lambda lay: lay[0] != want)


@dataclass(frozen=True)
class Slice:
    addr: int
    length: int


class ModuleData:
    """The module data of a Go executable file; addresses are file virtual addresses."""

    def __init__(self, image: ElfImage, go_version: str, pcln_addr: int, text_start: int):
        self.image = image
        self.w = image.ptrsize
        self.go_version = go_version
        self._relocs: Optional[Dict[int, int]] = None
        self.itab_area: Optional[Slice] = None  # Go 1.27+: packed itabs (addr, bytes)
        error = None
        for addr in self._locate(pcln_addr):  # a stray equal word fails the decode checks
            self.addr = addr
            try:
                self.layout, self.types, self.etypes, self.typelinks, self.itablinks = \
                    self._decode(text_start)
                break
            except BladeError as e:
                error = e
        else:
            raise error
        self._itabs: Optional[Dict[Tuple[str, str], int]] = None
        self._typenames: Optional[Dict[str, int]] = None

    # -- pointers, relocation-aware -------------------------------------------------------------
    def _relative_relocs(self) -> Dict[int, int]:
        """offset -> addend of every R_*_RELATIVE of the arch (PIE pointers may be 0 in the
        file)."""
        if self._relocs is None:
            self._relocs = {}
            kind = RELATIVE.get(self.image.goarch)
            if self.image.pie and self.w == 8 and kind is not None:
                for sec in self.image.sections.values():
                    if sec.type != "SHT_RELA":
                        continue
                    data = self.image.section_data(sec.name)
                    fmt = "<QQq" if self.image.little_endian else ">QQq"
                    for off, info, addend in struct.iter_unpack(fmt, data):
                        if info & 0xFFFFFFFF == kind:
                            self._relocs[off] = addend
        return self._relocs

    def word(self, addr: int) -> int:
        value = self.image.uint(self.image.read(addr, self.w), 0, self.w)
        if value == 0 and self.image.pie:
            value = self._relative_relocs().get(addr, 0)
        return value

    def _slice(self, addr: int) -> Optional[Slice]:
        ptr, n, cap = self.word(addr), self.word(addr + self.w), self.word(addr + 2 * self.w)
        if n != cap or n > 1 << 24 or (n and self.image.segment_for(ptr) is None):
            return None
        return Slice(ptr, n)

    # -- locating -------------------------------------------------------------------------------
    def _locate(self, pcln_addr: int) -> list:
        cands = []
        if self.image.pie and self.w == 8:
            cands = sorted(off for off, add in self._relative_relocs().items() if add == pcln_addr)
        pattern = pcln_addr.to_bytes(self.w, "little" if self.image.little_endian else "big")
        for sec in self.image.sections.values():
            if sec.type != "SHT_PROGBITS" or not sec.flags & SHF_WRITE or not sec.addr:
                continue  # .go.module (Go 1.26+), .noptrdata, .data
            data = self.image.section_data(sec.name)
            pos = data.find(pattern)
            while pos != -1:
                if pos % self.w == 0:
                    cands.append(sec.addr + pos)
                pos = data.find(pattern, pos + 1)
        found = [c for c in cands if self._plausible(c)]
        if found:
            return found
        raise BladeError(Code.PARAMETER_INVALID,
                         f"{self.image.path}: the runtime's module data was not found (no word "
                         f"in the data sections points at the pclntab header {pcln_addr:#x}; Go "
                         "before 1.16 is not supported here)")

    def _plausible(self, addr: int) -> bool:
        w = self.w
        try:
            return all(self._slice(addr + (1 + 3 * i) * w) is not None for i in range(6)) and \
                self.word(addr + 20 * w) <= self.word(addr + 21 * w)
        except BladeError:
            return False

    def _decode(self, text_start: int):
        w, base = self.w, self.addr + FIXED_WORDS * self.w
        if text_start and self.word(self.addr + 22 * w) != text_start:
            raise BladeError(Code.PARAMETER_INVALID,
                             f"{self.image.path}: module data at {self.addr:#x} disagrees with "
                             "the pclntab about the text start")
        packed = self._decode_packed(base)
        if packed:
            return packed
        for name, types_i, tsm_i in _by_version(self.go_version):
            try:
                types, etypes = self.word(base + types_i * w), self.word(base + (types_i + 1) * w)
                tsm = self._slice(base + tsm_i * w)
                typelinks = self._slice(base + (tsm_i + 3) * w)
                itablinks = self._slice(base + (tsm_i + 6) * w)
            except BladeError:
                continue
            if None in (tsm, typelinks, itablinks) or not 0 < tsm.length < 1024:
                continue
            if not (types and types <= etypes and etypes - types < 1 << 31
                    and self.image.segment_for(types)):
                continue
            return name, types, etypes, typelinks, itablinks
        raise BladeError(Code.PARAMETER_INVALID,
                         f"{self.image.path}: module data at {self.addr:#x} matches no known "
                         f"layout (Go {self.go_version or 'unknown'})")

    def _decode_packed(self, base: int):
        """Go 1.27+: types typedesclen etypes itaboffset itabsize at words 5-9 after
        enoptrbss, textsectmap at 13."""
        w = self.w
        try:
            types, desclen, etypes, itoff, itsize = (self.word(base + i * w) for i in range(5, 10))
            tsm = self._slice(base + 13 * w)
        except BladeError:
            return None
        if tsm is None or not 0 < tsm.length < 1024 or not types or not \
                desclen <= etypes - types < 1 << 31 or itoff + itsize > etypes - types:
            return None
        self.itab_area = Slice(types + itoff, itsize)
        return "go1.27+", types, etypes, Slice(0, 0), Slice(0, 0)

    def _itab_addresses(self):
        w = self.w
        if self.itab_area is None:
            for i in range(self.itablinks.length):
                yield self.word(self.itablinks.addr + i * w)
            return
        type_size = 4 * w + 16  # abi.Type
        p, end = self.itab_area.addr, self.itab_area.addr + self.itab_area.length
        while p < end:
            p = (p + w - 1) // w * w
            yield p
            n = 1
            if self.word(p + 3 * w):  # fun[0] != 0: one word per interface method
                inter = self.word(p)
                n = max(1, self.word(inter + type_size + 2 * w))  # Methods slice length
            p += 3 * w + n * w

    # -- names ----------------------------------------------------------------------------------
    def type_name(self, typ: int) -> str:
        w = self.w
        tflag = self.image.read(typ + 2 * w + 4, 1)[0]
        off = struct.unpack("<i" if self.image.little_endian else ">i",
                            self.image.read(typ + 4 * w + 8, 4))[0]
        head = self.image.read(self.types + off, 3)
        if version_tuple(self.go_version or "go1.17") >= (1, 17):
            n, pos = uvarint(head + self.image.read(self.types + off + 3, 8), 1)
        else:
            n, pos = (head[1] << 8) | head[2], 3
        name = self.image.read(self.types + off + pos, n).decode("utf-8", "replace")
        return name[1:] if tflag & TFLAG_EXTRA_STAR else name

    def itabs(self) -> Dict[Tuple[str, str], int]:
        """(concrete type name, interface name) -> itab address, e.g. ("*errors.errorString",
        "error")."""
        if self._itabs is None:
            out = {}
            for tab in self._itab_addresses():
                inter, typ = self.word(tab), self.word(tab + self.w)
                out.setdefault((self.type_name(typ), self.type_name(inter)), tab)
            self._itabs = out
        return self._itabs

    def typelink_types(self) -> Dict[str, int]:
        """Names of the types listed in typelinks (composite types reflection may build:
        pointers, slices, maps, chans, funcs, structs) -> descriptor address."""
        if self._typenames is None and not self.typelinks.length:
            self._typenames = {}  # Go 1.27+ has no typelinks (descriptors are walked instead)
        if self._typenames is None:
            raw = self.image.read(self.typelinks.addr, 4 * self.typelinks.length)
            fmt = ("<" if self.image.little_endian else ">") + f"{self.typelinks.length}i"
            out = {}
            for off in struct.unpack(fmt, raw):
                out.setdefault(self.type_name(self.types + off), self.types + off)
            self._typenames = out
        return self._typenames

    def to_json(self) -> dict:
        return {"address": hex(self.addr), "layout": self.layout, "types": hex(self.types),
                "etypes": hex(self.etypes), "itabs": len(self.itabs()),
                "typelinks": self.typelinks.length}


def find_moduledata(image: ElfImage, go_version: str) -> ModuleData:
    """The module data of `image` (BladeError when it cannot be found)."""
    from .pclntab import GO118, GO120, SECTION_NAMES
    sec = image.section(*SECTION_NAMES)
    if sec is None:
        raise BladeError(Code.PARAMETER_INVALID, f"{image.path} has no .gopclntab")
    head = image.read(sec.addr, 8)
    magic = int.from_bytes(head[:4], "little" if image.little_endian else "big")
    md = ModuleData.__new__(ModuleData)  # only for its relocation-aware word reader
    md.image, md.w, md._relocs = image, image.ptrsize, None
    # pcHeader.textStart (Go 1.18+) must equal moduledata.text: a cross-check of the find
    text_start = md.word(sec.addr + 8 + 2 * image.ptrsize) if magic in (GO118, GO120) else 0
    return ModuleData(image, go_version, sec.addr, text_start)
