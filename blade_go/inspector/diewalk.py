"""Where a compile unit's DIEs really start, without building pyelftools DIE objects.

A byte search (inlined.py) finds candidate DIEs by the bytes of one attribute, but the same
bytes can sit inside another attribute's value (a DW_OP_addr block holding an address whose
low bytes equal the searched offset, right after a byte that reads as the right abbreviation
code). Only parsing forward from a known DIE start tells a real DIE from such a phantom: this
module does that, skipping each attribute by its form (abbrev table compiled once per CU), so
that a subtree of a few hundred DIEs costs well under a millisecond.
"""
from typing import Dict, List, Optional, Set, Tuple

from elftools.dwarf.die import DIE

# Variable-size forms, as negative opcodes; a non-negative opcode is a fixed byte count.
_LEB, _CSTR, _BLOCK1, _BLOCK2, _BLOCK4, _BLOCK_LEB = range(-1, -7, -1)
_FIXED = {"DW_FORM_data1": 1, "DW_FORM_ref1": 1, "DW_FORM_flag": 1, "DW_FORM_strx1": 1,
          "DW_FORM_addrx1": 1, "DW_FORM_data2": 2, "DW_FORM_ref2": 2, "DW_FORM_strx2": 2,
          "DW_FORM_addrx2": 2, "DW_FORM_strx3": 3, "DW_FORM_addrx3": 3, "DW_FORM_data4": 4,
          "DW_FORM_ref4": 4, "DW_FORM_strx4": 4, "DW_FORM_addrx4": 4, "DW_FORM_ref_sup4": 4,
          "DW_FORM_data8": 8, "DW_FORM_ref8": 8, "DW_FORM_ref_sig8": 8, "DW_FORM_ref_sup8": 8,
          "DW_FORM_data16": 16, "DW_FORM_flag_present": 0, "DW_FORM_implicit_const": 0}
_OFFSET_SIZED = ("DW_FORM_strp", "DW_FORM_sec_offset", "DW_FORM_line_strp", "DW_FORM_strp_sup",
                 "DW_FORM_GNU_ref_alt", "DW_FORM_GNU_strp_alt")
_VARIABLE = {"DW_FORM_udata": _LEB, "DW_FORM_sdata": _LEB, "DW_FORM_ref_udata": _LEB,
             "DW_FORM_strx": _LEB, "DW_FORM_addrx": _LEB, "DW_FORM_rnglistx": _LEB,
             "DW_FORM_loclistx": _LEB, "DW_FORM_GNU_addr_index": _LEB,
             "DW_FORM_GNU_str_index": _LEB, "DW_FORM_string": _CSTR,
             "DW_FORM_block1": _BLOCK1, "DW_FORM_block2": _BLOCK2, "DW_FORM_block4": _BLOCK4,
             "DW_FORM_block": _BLOCK_LEB, "DW_FORM_exprloc": _BLOCK_LEB}
_Entry = Tuple[str, bool, Optional[List[int]]]  # tag, has children, skip ops (None: pyelftools)


class DieWalker:
    """Real DIE starts of one compile unit (`cu`, a pyelftools CompileUnit) in `info`, the
    decompressed .debug_info."""

    def __init__(self, info: bytes, cu, stream):
        self.info, self.cu, self.stream = info, cu, stream
        self.end = min(len(info), cu.cu_offset + cu.size)
        self.addr_size = cu["address_size"]
        self.offset_size = 4 if cu.structs.dwarf_format == 32 else 8
        self.version = cu["version"]
        self.table = cu.get_abbrev_table()
        self.entries: Dict[int, _Entry] = {}

    def _entry(self, code: int) -> _Entry:
        e = self.entries.get(code)
        if e is None:
            decl = self.table.get_abbrev(code)  # KeyError: not a DIE start
            e = self.entries[code] = (decl["tag"], decl.has_children(), self._ops(decl))
        return e

    def _ops(self, decl) -> Optional[List[int]]:
        ops: List[int] = []
        for spec in decl["attr_spec"]:
            form = spec.form
            if form in _FIXED:
                n = _FIXED[form]
            elif form in _OFFSET_SIZED or (form == "DW_FORM_ref_addr" and self.version > 2):
                n = self.offset_size
            elif form in ("DW_FORM_addr", "DW_FORM_ref_addr"):
                n = self.addr_size
            elif form in _VARIABLE:
                ops.append(_VARIABLE[form])
                continue
            else:
                return None  # DW_FORM_indirect or unknown: pyelftools sizes such DIEs
            if ops and ops[-1] >= 0:
                ops[-1] += n  # adjacent fixed sizes skip in one step
            else:
                ops.append(n)
        return ops

    def _uleb(self, p: int) -> Tuple[int, int]:
        info, value, shift = self.info, 0, 0
        while True:
            b = info[p]
            p += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value, p

    def _skip(self, p: int, ops: List[int]) -> int:
        info = self.info
        for op in ops:
            if op >= 0:
                p += op
            elif op == _LEB:
                while info[p] & 0x80:
                    p += 1
                p += 1
            elif op == _CSTR:
                p = info.index(0, p) + 1
            elif op == _BLOCK_LEB:
                n, p = self._uleb(p)
                p += n
            elif op == _BLOCK1:
                p += 1 + info[p]
            else:  # block2, block4
                w = 2 if op == _BLOCK2 else 4
                p += w + int.from_bytes(info[p:p + w], "little" if self._little() else "big")
        return p

    def _little(self) -> bool:
        return self.cu.dwarfinfo.config.little_endian

    def tagged_in_subtree(self, start: int, tag: str) -> Set[int]:
        """Offsets of the DIEs with `tag` in the subtree of the DIE at `start` (itself
        included), which must be a real DIE start. Raises on bytes that are not DIEs."""
        info, end, out = self.info, self.end, set()
        p, depth = start, 0
        while p < end:
            at = p
            code = info[p]
            p += 1
            if code & 0x80:
                code, p = self._uleb(at)
            if code == 0:  # end of a sibling list
                depth -= 1
                if depth <= 0:
                    return out
                continue
            dtag, children, ops = self._entry(code)
            if dtag == tag:
                out.add(at)
            if ops is None:
                self.cu.get_top_DIE()  # DWARF 5 addrx needs it, and it moves the stream
                p = at + DIE(self.cu, self.stream, at).size
            else:
                p = self._skip(p, ops)
            if children:
                depth += 1
            elif depth == 0:
                return out
        if p != end:
            raise ValueError(f"DIE at {at:#x} runs past its compile unit")
        return out
