"""Go DWARF type DIEs -> GoType.

Go's linker writes every type DIE into one compile unit and references them from the others
with DW_FORM_ref_addr, so a type is addressed here by its .debug_info offset. Go adds its own
attributes: DW_AT_go_kind (0x2900, a reflect.Kind), DW_AT_go_key (0x2901) and DW_AT_go_elem
(0x2902). How Go spells each kind (checked on Go 1.19, 1.22 and 1.26 output):
  - named scalars are base types carrying the Go name ("main.Celsius", encoding float);
  - named structs are a typedef "main.T" to a structure "main.T";
  - string/slice are structures with go_kind 24/23 (slice elem in go_elem);
  - interfaces are a typedef with go_kind 20 to runtime.iface / runtime.eface;
  - maps/chans are typedefs with go_kind 21/18 to a pointer to the runtime's header struct;
  - funcs are a typedef to a subroutine type (go_kind 19);
  - arrays are array types with one subrange (DW_AT_count);
  - generic shape parameters are typedefs ".paramN" to the shape type (go.shape.int...).
"""
from typing import Dict, Optional

from .gotypes import Field, GoType, Kind

AT_GO_KIND = 0x2900
AT_GO_KEY = 0x2901
AT_GO_ELEM = 0x2902

# reflect.Kind values as DW_AT_go_kind carries them.
REFLECT_KINDS = {
    1: Kind.BOOL, 2: Kind.INT, 3: Kind.INT, 4: Kind.INT, 5: Kind.INT, 6: Kind.INT,
    7: Kind.UINT, 8: Kind.UINT, 9: Kind.UINT, 10: Kind.UINT, 11: Kind.UINT, 12: Kind.UINT,
    13: Kind.FLOAT32, 14: Kind.FLOAT64, 15: Kind.COMPLEX64, 16: Kind.COMPLEX128,
    17: Kind.ARRAY, 18: Kind.CHAN, 19: Kind.FUNC, 20: Kind.IFACE, 21: Kind.MAP,
    22: Kind.POINTER, 23: Kind.SLICE, 24: Kind.STRING, 25: Kind.STRUCT, 26: Kind.POINTER,
}
# DW_ATE_* encodings of base types without go_kind.
ENCODINGS = {2: Kind.BOOL, 3: None, 4: None, 5: Kind.INT, 6: Kind.INT, 7: Kind.UINT, 8: Kind.UINT}

MAX_POINTER_DEPTH = 2

TYPE_TAGS = ("DW_TAG_typedef", "DW_TAG_base_type", "DW_TAG_structure_type",
             "DW_TAG_pointer_type", "DW_TAG_array_type", "DW_TAG_subroutine_type")


def die_name(die) -> str:
    a = die.attributes.get("DW_AT_name")
    return a.value.decode("utf-8", "replace") if a is not None else ""


def _attr(die, name, default=None):
    a = die.attributes.get(name)
    return a.value if a is not None else default


def scalar_align(kind: Kind, size: int, ptrsize: int) -> int:
    """Go's alignment rule (cmd/compile/internal/types/size.go) for non-aggregate kinds."""
    if kind == Kind.COMPLEX64:
        return 4
    if kind == Kind.COMPLEX128:
        return min(8, ptrsize)
    if kind in (Kind.BOOL, Kind.INT, Kind.UINT, Kind.FLOAT32, Kind.FLOAT64):
        return max(1, min(size, ptrsize))  # 8-byte ints/floats align 4 on 386
    return ptrsize


class TypeReader:
    """Converts type DIEs to GoType, caching by DIE offset (types are shared by every CU)."""

    def __init__(self, dwarfinfo, ptrsize: int):
        self.dwarf = dwarfinfo
        self.ptrsize = ptrsize
        self._cache: Dict[int, GoType] = {}
        self._busy = set()  # offsets being converted: a reference back to one is a cycle
        self._pointer_depth = 0

    def at(self, offset: int) -> GoType:
        got = self._cache.get(offset)
        if got is not None:
            return got
        die = self.dwarf.get_DIE_from_refaddr(offset)
        if offset in self._busy:
            return self._shallow(die)
        self._busy.add(offset)
        try:
            got = self._convert(die)
        finally:
            self._busy.discard(offset)
        self._cache[offset] = got
        return got

    def of(self, die) -> GoType:
        return self.at(die.offset)

    def _ref(self, die, attr) -> Optional[GoType]:
        a = die.attributes.get(attr)
        if a is None:
            return None
        off = a.value if a.form == "DW_FORM_ref_addr" else a.value + die.cu.cu_offset
        return self.at(off)

    def _pointee(self, die) -> Optional[GoType]:
        """A pointer's element, expanded through at most MAX_POINTER_DEPTH pointers: a value's
        own layout is always complete, but following every pointer would convert most of a
        large program's types (e.g. *http.Request) for one signature."""
        a = die.attributes.get("DW_AT_type")
        if a is None:
            return None  # unsafe.Pointer
        if self._pointer_depth >= MAX_POINTER_DEPTH:
            off = a.value if a.form == "DW_FORM_ref_addr" else a.value + die.cu.cu_offset
            return self._cache.get(off) or self._shallow(self.dwarf.get_DIE_from_refaddr(off))
        self._pointer_depth += 1
        try:
            return self._ref(die, "DW_AT_type")
        finally:
            self._pointer_depth -= 1

    def _shallow(self, die) -> GoType:
        """Name, kind and size without parts: for a type that (indirectly) points to itself,
        and for pointees deeper than MAX_POINTER_DEPTH."""
        kind = self._kind_of(die) or Kind.STRUCT
        size = _attr(die, "DW_AT_byte_size", self.ptrsize)
        return GoType(die_name(die), kind, size, scalar_align(kind, size, self.ptrsize))

    def _kind_of(self, die) -> Optional[Kind]:
        return REFLECT_KINDS.get(_attr(die, AT_GO_KIND, 0))

    def _convert(self, die) -> GoType:
        name, tag, p = die_name(die), die.tag, self.ptrsize
        kind = self._kind_of(die)
        if tag == "DW_TAG_typedef":
            if name.startswith(".param"):  # shape parameter of a generic instance
                return self._ref(die, "DW_AT_type")
            if kind == Kind.IFACE:
                return GoType(name, self._iface_kind(die), 2 * p, p)
            if kind == Kind.MAP:
                return GoType(name, Kind.MAP, p, p, elem=self._ref(die, AT_GO_ELEM),
                              key=self._ref(die, AT_GO_KEY))
            if kind == Kind.CHAN:
                return GoType(name, Kind.CHAN, p, p, elem=self._ref(die, AT_GO_ELEM))
            under = self._ref(die, "DW_AT_type")
            if under is None:
                raise ValueError(f"typedef {name} at {die.offset:#x} has no type")
            return GoType(name, under.kind, under.size, under.align, under.fields, under.elem,
                          under.key, under.length)
        if tag == "DW_TAG_base_type":
            size = _attr(die, "DW_AT_byte_size", 0)
            if kind is None:
                kind = self._base_kind(_attr(die, "DW_AT_encoding"), size)
            return GoType(name, kind, size, scalar_align(kind, size, p))
        if tag == "DW_TAG_pointer_type":
            return GoType(name, Kind.POINTER, p, p, elem=self._pointee(die))
        if tag == "DW_TAG_subroutine_type":
            return GoType(name, Kind.FUNC, p, p)
        if tag == "DW_TAG_array_type":
            elem = self._ref(die, "DW_AT_type")
            length = self._array_length(die)
            size = _attr(die, "DW_AT_byte_size", elem.size * length)
            return GoType(name, Kind.ARRAY, size, elem.align, elem=elem, length=length)
        if tag == "DW_TAG_structure_type":
            size = _attr(die, "DW_AT_byte_size", 0)
            if kind == Kind.STRING:
                return GoType(name, Kind.STRING, size, p)
            if kind == Kind.SLICE:
                return GoType(name, Kind.SLICE, size, p, elem=self._ref(die, AT_GO_ELEM))
            fields = tuple(Field(die_name(m), _attr(m, "DW_AT_data_member_location", 0),
                                 self._ref(m, "DW_AT_type"))
                           for m in die.iter_children() if m.tag == "DW_TAG_member")
            align = max((f.type.align for f in fields), default=1)
            return GoType(name, Kind.STRUCT, size, align, fields=fields)
        raise ValueError(f"unsupported type DIE {tag} {name!r} at {die.offset:#x}")

    def _iface_kind(self, die) -> Kind:
        """runtime.eface (any) or runtime.iface (non-empty): follow the typedef chain."""
        seen = 0
        while die is not None and seen < 8:
            if die_name(die) == "runtime.eface":
                return Kind.EFACE
            if die_name(die) == "runtime.iface":
                return Kind.IFACE
            a = die.attributes.get("DW_AT_type")
            die = die.get_DIE_from_attribute("DW_AT_type") if a is not None else None
            seen += 1
        return Kind.IFACE

    @staticmethod
    def _base_kind(encoding, size) -> Kind:
        if encoding == 4:
            return Kind.FLOAT32 if size == 4 else Kind.FLOAT64
        if encoding == 3:
            return Kind.COMPLEX64 if size == 8 else Kind.COMPLEX128
        kind = ENCODINGS.get(encoding)
        if kind is None:
            raise ValueError(f"unknown DW_ATE encoding {encoding}")
        return kind

    @staticmethod
    def _array_length(die) -> int:
        for sub in die.iter_children():
            if sub.tag == "DW_TAG_subrange_type":
                if "DW_AT_count" in sub.attributes:
                    return sub.attributes["DW_AT_count"].value
                if "DW_AT_upper_bound" in sub.attributes:
                    return sub.attributes["DW_AT_upper_bound"].value + 1
        return 0
