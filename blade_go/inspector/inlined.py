"""Inlined copies of a function, from every compile unit, by byte search (no pyelftools walk).

Go writes a function's abstract entry (DW_AT_inline) once, and each inlined copy, in any
compile unit, is a DW_TAG_inlined_subroutine whose first attribute is DW_AT_abstract_origin as
a DW_FORM_ref_addr: the abstract entry's offset in .debug_info. So the copies are found by
searching the section bytes for that offset and parsing only the DIE just before each hit.
A hit is only a candidate: the same four bytes also occur inside other attributes' values
(e.g. a variable's DW_OP_addr block whose address has the offset as its low bytes, preceded by
a byte that reads as the inlined-subroutine abbrev code: a "DIE" with a garbage file, line 0).
So each hit is accepted only if it is a real DIE start: the hit's compile unit is skimmed once
from its top DIE by diewalk.DieWalker (attribute sizes from the abbrev table, no DIE objects:
0.14-0.19 s for all 3.7 MB of a 15 MB binary's .debug_info; 20-35x faster than pyelftools), and
the hit must be one of its DW_TAG_inlined_subroutine DIEs. The caller is the function whose
machine code holds the copy (by address, from the symbol table); the file and line are the
call site's. Cost: one DIE per site, plus one skim of each compile unit holding a hit
(bench/inlined_sites.py).

A mixin of DwarfInfo: it uses its `_info` bytes, `dwarf`, `elf`, `_named`, `_file_names`,
`parsed_dies` and `walked_cus`.
"""
import bisect
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Set, Tuple

from elftools.dwarf.die import DIE

from .diewalk import DieWalker
from .dwarf_types import die_name


@dataclass(frozen=True)
class InlinedSite:
    caller: str   # the concrete function whose machine code holds the inlined copy
    file: str     # call site (innermost caller's source when inlining nested)
    line: int


class InlinedSites:
    functions: Optional[Dict[str, List[Tuple[int, int]]]] = None  # name -> spans (GoBinary)
    _func_starts: Optional[List[int]] = None
    # CU offset -> offsets of its real DW_TAG_inlined_subroutine DIEs (skimmed on first hit)
    _inlined_dies: Optional[Dict[int, Set[int]]] = None
    # name -> its out-of-line entry, when found through the unit index (dwarfinfo.index_units)
    _indexed_concrete: Optional[Dict[str, DIE]] = None

    def inlined_sites(self, name: str) -> List[InlinedSite]:
        """Every inlined copy of `name`, in every compile unit (module doc)."""
        abstract = self._abstract_entries(name)
        sites = []
        for origin in sorted(abstract):
            for die in self._references_to(origin):
                site = self._site(die)
                if site is not None:
                    sites.append(site)
        return sorted(set(sites), key=lambda s: (s.caller, s.file, s.line))

    def inlined_ranges(self, name: str) -> List[Tuple[int, int]]:
        """[lo, hi) code ranges of every inlined copy of `name` (the DIE's low/high pc, or its
        range list), nested copies inlined into them included: the code that runs as `name`
        inside other functions (issue 19, --caller)."""
        out = []
        for origin in sorted(self._abstract_entries(name)):
            for die in self._references_to(origin):
                out += self._die_ranges(die)
        return sorted(set(out))

    def _die_ranges(self, die: DIE) -> List[Tuple[int, int]]:
        lo, hi = die.attributes.get("DW_AT_low_pc"), die.attributes.get("DW_AT_high_pc")
        if lo is not None and hi is not None:
            end = hi.value if hi.form == "DW_FORM_addr" else lo.value + hi.value
            return [(lo.value, end)]
        rng = die.attributes.get("DW_AT_ranges")
        rl = self.dwarf.range_lists()
        if rng is None or rl is None:
            return []
        top = die.cu.get_top_DIE()
        base = top.attributes["DW_AT_low_pc"].value if "DW_AT_low_pc" in top.attributes else 0
        out = []
        for e in rl.get_range_list_at_offset(rng.value, cu=die.cu):
            if hasattr(e, "base_address"):
                base = e.base_address
                continue
            off = 0 if getattr(e, "is_absolute", False) else base
            out.append((off + e.begin_offset, off + e.end_offset))
        return out

    def _abstract_entries(self, name: str) -> Set[int]:
        """Offsets of `name`'s abstract (inlinable) entries. When its out-of-line copy was found
        through the unit index (a fork server's creates, dwarfinfo.index_units), that copy's
        DW_AT_abstract_origin is the one abstract entry (the linker keeps one per name): no
        search of the whole section."""
        found = (self._indexed_concrete or {}).get(name)
        if found is not None and "DW_AT_abstract_origin" in found.attributes:
            origin = found.get_DIE_from_attribute("DW_AT_abstract_origin")
            if "DW_AT_inline" in origin.attributes and die_name(origin) == name:
                return {origin.offset}
        return {d.offset for d in self._named("DW_TAG_subprogram", name)
                if "DW_AT_inline" in d.attributes}

    def _references_to(self, origin: int) -> Iterable[DIE]:
        """DW_TAG_inlined_subroutine DIEs whose abstract origin (ref_addr) is `origin`."""
        self.dwarf  # loads `_info` (empty until then: the search would find nothing)
        info = self._info
        order = "little" if self.elf.little_endian else "big"
        needle = origin.to_bytes(4, order)  # 32-bit DWARF, as Go writes it
        pos = info.find(needle)
        while pos >= 0:
            for start in (pos - 1, pos - 2):
                die = self._inlined_die_at(start, pos, origin)
                if die is not None:
                    yield die
                    break
            pos = info.find(needle, pos + 1)

    def _inlined_die_at(self, start: int, attr_at: int, origin: int) -> Optional[DIE]:
        """The inlined_subroutine DIE starting at `start` whose first attribute (its abstract
        origin) is at `attr_at`, if the bytes really are one."""
        info = self._info
        if start < 0:
            return None
        if info[start] & 0x80:  # a two-byte ULEB128 abbreviation code
            if info[start + 1] & 0x80:
                return None
            code, end = (info[start] & 0x7F) | (info[start + 1] & 0x7F) << 7, start + 2
        else:
            code, end = info[start], start + 1
        if end != attr_at:
            return None
        try:
            cu = self.dwarf.get_CU_containing(start)
            if start < cu.cu_die_offset or cu.structs.dwarf_format != 32:
                return None
            decl = cu.get_abbrev_table().get_abbrev(code)
        except Exception:
            return None
        specs = decl["attr_spec"]
        if decl["tag"] != "DW_TAG_inlined_subroutine" or not specs or \
                specs[0].name != "DW_AT_abstract_origin" or specs[0].form != "DW_FORM_ref_addr":
            return None
        if start not in self._inlined_dies_of(cu):  # the bytes sit inside another DIE
            return None
        try:
            cu.get_top_DIE()  # DWARF 5 addrx needs the CU's address base
            die = DIE(cu, self.dwarf.debug_info_sec.stream, start)
        except Exception:
            return None
        if die.attributes["DW_AT_abstract_origin"].value != origin:
            return None
        self.parsed_dies.add(start)
        return die

    def _inlined_dies_of(self, cu) -> Set[int]:
        """Offsets of the CU's real DW_TAG_inlined_subroutine DIEs, by parsing forward from
        its top DIE (module doc). If the fast skim cannot size some DIE, pyelftools walks the
        CU; a CU neither can parse gives no site rather than unverified ones."""
        if self._inlined_dies is None:
            self._inlined_dies = {}
        found = self._inlined_dies.get(cu.cu_offset)
        if found is None:
            tag = "DW_TAG_inlined_subroutine"
            try:
                found = DieWalker(self._info, cu, self.dwarf.debug_info_sec.stream) \
                    .tagged_in_subtree(cu.cu_die_offset, tag)
            except (KeyError, IndexError, ValueError):
                try:
                    found = {d.offset for d in cu.iter_DIEs() if d.tag == tag}
                    self.walked_cus.add(cu.cu_offset)
                except Exception:
                    found = set()
            self._inlined_dies[cu.cu_offset] = found
        return found

    def _site(self, die: DIE) -> Optional[InlinedSite]:
        pc = self._first_pc(die)
        caller = self.function_at(pc) if pc is not None else None
        fidx = die.attributes.get("DW_AT_call_file")
        line = die.attributes.get("DW_AT_call_line")
        files = self._files_by_cu.get(die.cu.cu_offset)
        if files is None:
            files = self._files_by_cu[die.cu.cu_offset] = self._file_names(die.cu)
        return InlinedSite(caller or "?", files.get(fidx.value, "?") if fidx else "?",
                           line.value if line else 0)

    def _first_pc(self, die: DIE) -> Optional[int]:
        lo = die.attributes.get("DW_AT_low_pc")
        if lo is not None:
            return lo.value
        rng = die.attributes.get("DW_AT_ranges")
        rl = self.dwarf.range_lists()
        if rng is None or rl is None:
            return None
        top = die.cu.get_top_DIE()
        base = top.attributes["DW_AT_low_pc"].value if "DW_AT_low_pc" in top.attributes else 0
        try:
            for e in rl.get_range_list_at_offset(rng.value, cu=die.cu):
                if hasattr(e, "base_address"):
                    base = e.base_address
                    continue
                return (0 if getattr(e, "is_absolute", False) else base) + e.begin_offset
        except Exception:
            return None
        return None

    def function_at(self, pc: int) -> Optional[str]:
        """Name of the function whose code holds pc. GoBinary sets `functions` from its
        symbol table (a lazy .symtab index answers by itself); standing alone, .symtab is read
        here once."""
        if hasattr(self.functions, "function_at"):
            return self.functions.function_at(pc)
        if self._func_starts is None:
            spans = self.functions if self.functions is not None else self._elf_functions()
            rows = sorted((lo, hi, n) for n, ss in spans.items() for lo, hi in ss
                          if not n.endswith(".abi0"))
            self._func_rows = rows
            self._func_starts = [r[0] for r in rows]
        i = bisect.bisect_right(self._func_starts, pc) - 1
        if i >= 0:
            lo, hi, name = self._func_rows[i]
            if lo <= pc < max(hi, lo + 1):
                return name
        return None

    def _elf_functions(self) -> Dict[str, List[Tuple[int, int]]]:
        out: Dict[str, List[Tuple[int, int]]] = {}
        symtab = self.elf.get_section_by_name(".symtab")
        for sym in (symtab.iter_symbols() if symtab is not None else ()):
            if sym["st_info"]["type"] == "STT_FUNC":
                out.setdefault(sym.name, []).append((sym["st_value"],
                                                     sym["st_value"] + sym["st_size"]))
        return out

