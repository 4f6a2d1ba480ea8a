"""The DWARF side of the inspector: signatures, inlined call sites and package variables.

Speed comes from not parsing what is not asked for. Go writes every name inline
(DW_FORM_string) as the first attribute of its DIE, right after a one-byte abbrev code, so the
DIE of `main.F` is found by searching the decompressed .debug_info bytes for b"main.F\\0" and
parsing only the DIE just before each hit (validated against the abbrev table, then by name).
A lookup therefore parses: CU headers (not DIEs) up to the hit, the function's DIE and its
children, and the type DIEs its parameters reach (all in the linker's type CU). No CU is walked
DIE by DIE except by the fallback when the name search fails (the one CU whose address ranges
cover the function); inlined sites are found by reference search (inlined.py). Go emits no .debug_aranges, so that fallback reads CU
top DIEs and their range lists.

Only the sections a lookup reads are decompressed, each when first read (SHF_COMPRESSED, or
the old .zdebug_* layout): .debug_info and .debug_abbrev for every lookup; .debug_line only
for the file names of inlined call sites; .debug_rnglists/.debug_ranges only for range lists
(inlined copies without a low_pc, the walk of a CU by address); .debug_frame and
.debug_loc(lists) never. A 68 MB binary's .debug_info inflates to 16 MB: that one zlib pass
(about 40 ms) is the floor of any DWARF fact, since the name and reference searches below
read all of it.
"""
import bisect
import zlib
from typing import Dict, Iterable, List, Optional, Set, Tuple

from elftools.dwarf.die import DIE
from elftools.dwarf.dwarfinfo import DebugSectionDescriptor, DwarfConfig, DWARFInfo
from io import BytesIO

from ..errors import BladeError, Code
from .dwarf_types import TYPE_TAGS, TypeReader, die_name
from .gotypes import GoType, Kind, Param, Signature
from .inlined import InlinedSite, InlinedSites  # noqa: F401  (InlinedSite: public here too)

# Sections the lookups need; everything else stays compressed on disk.
NEEDED = ("info", "abbrev", "str", "line", "ranges", "rnglists", "addr", "str_offsets",
          "line_str")
DW_OP_addr = 0x03


class _LazySection:
    """A section's (decompressed) bytes as the stream pyelftools reads, inflated on first use;
    from then on read/seek/tell are the BytesIO's own (no call through this wrapper)."""

    def __init__(self, load):
        self._load = load

    def _stream(self) -> BytesIO:
        if self._load is not None:
            io = BytesIO(self._load())
            self._load = None
            self.read, self.seek, self.tell, self.getvalue = io.read, io.seek, io.tell, \
                io.getvalue
        return self

    def read(self, *a):
        return self._stream().read(*a)

    def seek(self, *a):
        return self._stream().seek(*a)

    def tell(self):
        return self._stream().tell()

    def getvalue(self) -> bytes:
        return self._stream().getvalue()

    @property
    def inflated(self) -> bool:
        return self._load is None


def _inflate(sec) -> bytes:
    """The body of an SHF_COMPRESSED (or plain) section. One zlib call into a buffer of the
    known size is about 1.3x faster than pyelftools' decompressobj."""
    if sec.compressed and sec._compression_type == "ELFCOMPRESS_ZLIB":
        hdr = sec.structs.Elf_Chdr.sizeof()
        sec.stream.seek(sec["sh_offset"] + hdr)
        try:
            data = zlib.decompress(sec.stream.read(sec["sh_size"] - hdr), bufsize=sec.data_size)
        except zlib.error:
            data = b""
        if len(data) == sec.data_size:
            return data
    return sec.data()  # pyelftools raises its own error on a bad section


def _read_section(elffile, short: str) -> Optional[DebugSectionDescriptor]:
    sec = elffile.get_section_by_name(".debug_" + short)
    zsec = None if sec is not None else elffile.get_section_by_name(".zdebug_" + short)
    if sec is None and zsec is None:
        return None
    if sec is not None:
        size, load = sec.data_size, (lambda: _inflate(sec))
    else:  # pre-1.12-style .zdebug: "ZLIB" + 8-byte big-endian size + zlib stream
        sec = zsec
        elffile.stream.seek(sec["sh_offset"])
        head = elffile.stream.read(min(12, sec["sh_size"]))
        if head[:4] == b"ZLIB" and len(head) == 12:
            size = int.from_bytes(head[4:12], "big")
            load = lambda: zlib.decompress(zsec.data()[12:])  # noqa: E731
        else:
            size, load = sec.data_size, zsec.data
    return DebugSectionDescriptor(stream=_LazySection(load), name=".debug_" + short,
                                  global_offset=sec["sh_offset"], size=size,
                                  address=sec["sh_addr"])


def _open_dwarf(elffile) -> Tuple[DWARFInfo, bytes]:
    secs = {s: _read_section(elffile, s) for s in NEEDED}
    if secs["info"] is None:
        raise BladeError(Code.PARAMETER_INVALID,
                         "the binary has no DWARF (.debug_info); it was built with "
                         "-ldflags=-w or -s or stripped: rebuild without them")
    cfg = DwarfConfig(little_endian=elffile.little_endian,
                      default_address_size=elffile.elfclass // 8,
                      machine_arch=elffile.get_machine_arch())
    dw = DWARFInfo(config=cfg, debug_info_sec=secs["info"], debug_aranges_sec=None,
                   debug_abbrev_sec=secs["abbrev"], debug_frame_sec=None, eh_frame_sec=None,
                   debug_str_sec=secs["str"], debug_loc_sec=None,
                   debug_ranges_sec=secs["ranges"], debug_line_sec=secs["line"],
                   debug_pubtypes_sec=None, debug_pubnames_sec=None,
                   debug_addr_sec=secs["addr"], debug_str_offsets_sec=secs["str_offsets"],
                   debug_line_str_sec=secs["line_str"], debug_loclists_sec=None,
                   debug_rnglists_sec=secs["rnglists"], debug_sup_sec=None,
                   gnu_debugaltlink_sec=None, debug_types_sec=None)
    return dw, secs["info"].stream.getvalue()


def _package_of(func: str) -> str:
    """Import path of a Go symbol: 'github.com/a/b.(*T).M' -> 'github.com/a/b'."""
    slash = func.rfind("/", 0, func.find("[") if "[" in func else len(func))
    dot = func.find(".", slash + 1)
    return func[:dot] if dot > 0 else func


class DwarfInfo(InlinedSites):
    def __init__(self, elffile, ptrsize: Optional[int] = None):
        self.elf = elffile
        self.ptrsize = ptrsize or elffile.elfclass // 8
        self._dw: Optional[DWARFInfo] = None
        self._info = b""
        self._types: Optional[TypeReader] = None
        # Instrumentation (read by tests and the benchmark): CUs whose DIEs this object walked
        # linearly, and every DIE offset it parsed outside the type reader.
        self.walked_cus: Set[int] = set()
        self.parsed_dies: Set[int] = set()
        self.functions: Optional[Dict[str, List[Tuple[int, int]]]] = None  # name -> spans
        self._func_starts: Optional[List[int]] = None
        self._func_rows: List[Tuple[int, int, str]] = []
        self._files_by_cu: Dict[int, Dict[int, str]] = {}
        self._named_cache: Dict[Tuple[str, str], List[DIE]] = {}
        self._unit_index = None  # (sorted starts, [(start, end, cu)]): see index_units
        self._range_lists = None
        self._indexed_concrete: Dict[str, DIE] = {}  # name -> its entry, found via the index

    # -- setup ------------------------------------------------------------------------------
    @property
    def dwarf(self) -> DWARFInfo:
        if self._dw is None:
            self._dw, self._info = _open_dwarf(self.elf)
            self._types = TypeReader(self._dw, self.ptrsize)
        return self._dw

    @property
    def types(self) -> TypeReader:
        self.dwarf
        return self._types

    # -- public API -------------------------------------------------------------------------
    def function_signature(self, name: str, low_pc: Optional[int] = None) -> Signature:
        die = self._concrete_die(name, low_pc)
        if die is None:
            raise BladeError(Code.PARAMETER_INVALID,
                             f"function {name} has no DWARF entry"
                             + (f" at {low_pc:#x}" if low_pc is not None else "")
                             + " (inlined everywhere, or built without debug info?)")
        return self._signature(die)

    def compile_unit_of(self, name: str, low_pc: Optional[int] = None) -> Optional[str]:
        """Name of the compile unit (the Go package whose source holds it) of function `name`:
        tells runtime code exported under another package's name by go:linkname."""
        die = self._concrete_die(name, low_pc)
        return die_name(die.cu.get_top_DIE()) if die is not None else None

    def has_concrete(self, name: str) -> bool:
        return bool([d for d in self._named("DW_TAG_subprogram", name)
                     if "DW_AT_low_pc" in d.attributes])

    def variable(self, name: str) -> Optional[Tuple[int, GoType]]:
        for d in self._named("DW_TAG_variable", name):
            loc = d.attributes.get("DW_AT_location")
            if loc is None or not isinstance(loc.value, list) or not loc.value:
                continue
            if loc.value[0] != DW_OP_addr or len(loc.value) < 1 + self.ptrsize:
                continue
            addr = int.from_bytes(bytes(loc.value[1:1 + self.ptrsize]),
                                  "little" if self.elf.little_endian else "big")
            return addr, self.types.of(d.get_DIE_from_attribute("DW_AT_type"))
        return None

    def type_by_name(self, name: str) -> Optional[GoType]:
        for tag in TYPE_TAGS:  # typedefs first: they carry the Go name of named types
            for d in self._named(tag, name):
                return self.types.of(d)
        return None

    # -- finding DIEs by name ---------------------------------------------------------------
    def _named(self, tag: str, name: str) -> List[DIE]:
        """DIEs with this tag whose DW_AT_name is `name`, found by byte search (see module doc).
        Cached: a create asks for the same function's entries up to four times."""
        key = (tag, name)
        if key not in self._named_cache:
            self._named_cache[key] = self._search_named(tag, name)
        return list(self._named_cache[key])

    def _search_named(self, tag: str, name: str, lo: int = 0,
                      hi: Optional[int] = None) -> List[DIE]:
        self.dwarf
        needle = name.encode() + b"\0"
        hi = len(self._info) if hi is None else hi
        out, pos = [], self._info.find(needle, lo, hi)
        while pos >= 0:
            for start in self._die_starts(pos):
                die = self._die_if(start, tag, name)
                if die is not None:
                    out.append(die)
            pos = self._info.find(needle, pos + 1, hi)
        return out

    def _die_starts(self, name_pos: int) -> Iterable[int]:
        """Offsets where a DIE whose first attribute starts at name_pos could begin: a ULEB128
        abbrev code of one or two bytes."""
        if name_pos >= 1 and self._info[name_pos - 1] & 0x80 == 0:
            yield name_pos - 1
            if name_pos >= 2 and self._info[name_pos - 2] & 0x80:
                yield name_pos - 2

    def _die_if(self, start: int, tag: str, name: str) -> Optional[DIE]:
        try:
            cu = self.dwarf.get_CU_containing(start)
        except Exception:
            return None
        if start < cu.cu_die_offset:
            return None
        code = self._info[start] & 0x7F
        if start + 1 < len(self._info) and self._info[start] & 0x80:
            code |= (self._info[start + 1] & 0x7F) << 7
        try:
            decl = cu.get_abbrev_table().get_abbrev(code)
        except KeyError:
            return None
        if decl["tag"] != tag or not self._name_first(decl) or self._inside_longer_name(cu, start):
            return None
        # Parsed outside pyelftools' per-CU cache: a false hit (a longer string ending in the
        # same bytes) must not be inserted among the real DIEs.
        try:
            cu.get_top_DIE()  # first: DWARF 5 addrx needs it, and parsing it moves the stream
            die = DIE(cu, self.dwarf.debug_info_sec.stream, start)
        except Exception:
            return None
        if die_name(die) != name:
            return None
        self.parsed_dies.add(start)
        return die

    @staticmethod
    def _name_first(decl) -> bool:
        specs = decl["attr_spec"]
        return bool(specs) and specs[0].name == "DW_AT_name" and specs[0].form == "DW_FORM_string"

    def _inside_longer_name(self, cu, start: int) -> bool:
        """True when the bytes before `start` read as a longer name of another DIE: e.g.
        "error" found inside "func() error", where the space looks like an abbrev code."""
        info, j = self._info, start
        if not 0x20 <= info[start] < 0x7F:  # names hold no control bytes
            return False
        while j > cu.cu_die_offset and 0x20 <= info[j - 1] < 0x7F:
            j -= 1
        table = cu.get_abbrev_table()
        for code_at in range(max(j - 1, cu.cu_die_offset), start):
            try:
                decl = table.get_abbrev(info[code_at])
            except KeyError:
                continue
            if self._name_first(decl) and not (info[code_at] & 0x80):
                return True
        return False

    # -- functions --------------------------------------------------------------------------
    def _concrete_die(self, name: str, low_pc: Optional[int]) -> Optional[DIE]:
        if low_pc is not None and self._unit_index is not None:
            cu = self._indexed_unit(low_pc)  # its entry lies in the unit covering its code
            if cu is not None:
                for d in self._search_named("DW_TAG_subprogram", name, cu.cu_offset,
                                            cu.cu_offset + cu.size):
                    pc = d.attributes.get("DW_AT_low_pc")
                    if pc is not None and pc.value == low_pc:
                        self._indexed_concrete[name] = d
                        return d
                die = self._walk_unit(cu, low_pc)  # an out-of-line copy names no name
                if die is not None:
                    self._indexed_concrete[name] = die
                    return die
            # not where the index says (units of C code may overlap): search everywhere
        hits = [d for d in self._named("DW_TAG_subprogram", name)
                if "DW_AT_low_pc" in d.attributes]
        if low_pc is None:
            return hits[0] if hits else None
        for d in hits:
            if d.attributes["DW_AT_low_pc"].value == low_pc:
                return d
        return self._walk_for_pc(low_pc)

    def _walk_for_pc(self, low_pc: int) -> Optional[DIE]:
        """Fallback: walk the one CU whose address ranges cover low_pc."""
        cu = self._cu_covering(low_pc)
        return None if cu is None else self._walk_unit(cu, low_pc)

    def _walk_unit(self, cu, low_pc: int) -> Optional[DIE]:
        self.walked_cus.add(cu.cu_offset)
        for die in cu.iter_DIEs():
            if die.tag == "DW_TAG_subprogram" and "DW_AT_low_pc" in die.attributes \
                    and die.attributes["DW_AT_low_pc"].value == low_pc:
                return die
        return None

    def _cu_covering(self, pc: int):
        for cu in self.dwarf.iter_CUs():
            if any(lo <= pc < hi for lo, hi in self._unit_ranges(cu)):
                return cu
        return None

    def _unit_ranges(self, cu) -> Iterable[Tuple[int, int]]:
        """[lo, hi) code addresses of one compile unit, from its first DIE."""
        top = cu.get_top_DIE()
        lo = top.attributes.get("DW_AT_low_pc")
        rng = top.attributes.get("DW_AT_ranges")
        if rng is not None and self._range_lists is None:
            self._range_lists = self.dwarf.range_lists() or False  # False: the binary has none
        if rng is not None and self._range_lists:
            base = lo.value if lo is not None else 0
            for e in self._range_lists.get_range_list_at_offset(rng.value, cu=cu):
                if hasattr(e, "base_address"):
                    base = e.base_address
                    continue
                b = 0 if getattr(e, "is_absolute", False) else base
                yield b + e.begin_offset, b + e.end_offset
        elif lo is not None and "DW_AT_high_pc" in top.attributes:
            hi = top.attributes["DW_AT_high_pc"]
            yield lo.value, (hi.value if hi.form == "DW_FORM_addr" else lo.value + hi.value)

    def index_units(self):
        """Index every compile unit by its code addresses, so that a function's entry is then
        searched in its own unit's bytes, not the whole section (5.3 -> 0.11 ms for one lookup
        on a 100 MB binary). Parsing every unit's first DIE (59 ms there) costs more than one
        whole-section search: a fork server's warm-up does it, once, for the creates it forks."""
        spans = sorted(((lo, hi, cu) for cu in self.dwarf.iter_CUs()
                        for lo, hi in self._unit_ranges(cu) if hi > lo), key=lambda x: x[:2])
        self._unit_index = ([lo for lo, _, _ in spans], spans)

    def _indexed_unit(self, pc: int):
        starts, spans = self._unit_index
        i = bisect.bisect_right(starts, pc) - 1
        return spans[i][2] if i >= 0 and pc < spans[i][1] else None

    def _signature(self, fn: DIE) -> Signature:
        params, results, seen = [], [], set()
        for child in fn.iter_children():
            if child.tag != "DW_TAG_formal_parameter":
                continue
            # The out-of-line copy of a function that is also inlined elsewhere describes its
            # parameters by reference to the abstract (inlinable) entry, which holds name,
            # type and direction.
            if "DW_AT_abstract_origin" in child.attributes:
                child = child.get_DIE_from_attribute("DW_AT_abstract_origin")
            flag = child.attributes.get("DW_AT_variable_parameter")
            is_result = bool(flag is not None and flag.value)
            name = die_name(child) or (f"~r{len(results)}" if is_result else f"~p{len(params)}")
            # Go 1.19-1.26 may list a struct result twice (e.g. `func() (T, *T)` gives ~r0,
            # ~r0, ~r1): names are unique within a signature, except the blank "_".
            if (name, is_result) in seen and name != "_":
                continue
            seen.add((name, is_result))
            t = self.types.of(child.get_DIE_from_attribute("DW_AT_type"))
            (results if is_result else params).append(Param(name, t, is_result))
        if "[go.shape." in die_name(fn) and not any(p.name == ".dict" for p in params):
            # Shape instances take their dictionary as a hidden first argument that Go's
            # DWARF does not list; the ABI must still count it.
            dict_ptr = GoType("unsafe.Pointer", Kind.POINTER, self.ptrsize, self.ptrsize)
            params.insert(0, Param(".dict", dict_ptr))
        return Signature(tuple(params), tuple(results))

    # -- inlining ---------------------------------------------------------------------------
    def _file_names(self, cu) -> Dict[int, str]:
        """DW_AT_call_file index -> path, from the CU's line program header (not its rows)."""
        lp = self.dwarf.line_program_for_CU(cu)
        if lp is None:
            return {}
        dirs = [d if isinstance(d, bytes) else getattr(d, "name", b"")
                for d in lp.header.get("include_directory", [])]
        # DWARF 5 numbers files and directories from 0 (directory 0 = comp dir); DWARF 2-4
        # from 1, with directory 0 meaning the comp dir.
        v5 = lp.header["version"] >= 5
        out = {}
        for i, fe in enumerate(lp.header.get("file_entry", [])):
            path = fe.name.decode("utf-8", "replace")
            di = getattr(fe, "dir_index", 0)
            d = dirs[di] if v5 and di < len(dirs) else \
                dirs[di - 1] if not v5 and 0 < di <= len(dirs) else b""
            if d and d != b"." and not path.startswith("/"):
                path = d.decode("utf-8", "replace") + "/" + path
            out[i if v5 else i + 1] = path
        return out
