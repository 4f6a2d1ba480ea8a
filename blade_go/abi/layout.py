"""Go memory-layout rules (abi-internal.md "Memory layout") as GoType constructors.

The inspector reads sizes and offsets from DWARF; these helpers build the same GoTypes from a
description, for the ABI's own arithmetic (align_up) and for tests and fixtures that need types
without a binary. Sizes and alignments follow Go's table for 64-bit and 32-bit targets
(on 32-bit, 8-byte ints and floats are only 4-byte aligned).
"""
from typing import Iterable, Tuple

from ..inspector.gotypes import Field, GoType, Kind


def align_up(n: int, a: int) -> int:
    """Round n up to a multiple of a (a <= 1 means no alignment)."""
    if a <= 1:
        return n
    return (n + a - 1) // a * a


class Layout:
    """Builds GoTypes for one pointer size (8: amd64/arm64, 4: 386)."""

    def __init__(self, ptrsize: int):
        self.ptrsize = ptrsize

    def _word_align(self, size: int) -> int:
        # 8-byte scalars are aligned to the register size on 32-bit targets.
        return min(size, self.ptrsize)

    def basic(self, name: str) -> GoType:
        p = self.ptrsize
        table = {
            "bool": (Kind.BOOL, 1), "int8": (Kind.INT, 1), "uint8": (Kind.UINT, 1),
            "byte": (Kind.UINT, 1), "int16": (Kind.INT, 2), "uint16": (Kind.UINT, 2),
            "int32": (Kind.INT, 4), "rune": (Kind.INT, 4), "uint32": (Kind.UINT, 4),
            "int64": (Kind.INT, 8), "uint64": (Kind.UINT, 8), "int": (Kind.INT, p),
            "uint": (Kind.UINT, p), "uintptr": (Kind.UINT, p), "float32": (Kind.FLOAT32, 4),
            "float64": (Kind.FLOAT64, 8), "complex64": (Kind.COMPLEX64, 8),
            "complex128": (Kind.COMPLEX128, 16), "unsafe.Pointer": (Kind.POINTER, p),
        }
        kind, size = table[name]
        # complex numbers align like their float parts
        part = size // 2 if kind in (Kind.COMPLEX64, Kind.COMPLEX128) else size
        align = self._word_align(part)
        return GoType(name=name, kind=kind, size=size, align=align)

    def string(self, name: str = "string") -> GoType:
        return GoType(name, Kind.STRING, 2 * self.ptrsize, self.ptrsize)

    def slice(self, elem: GoType) -> GoType:
        return GoType("[]" + elem.name, Kind.SLICE, 3 * self.ptrsize, self.ptrsize, elem=elem)

    def pointer(self, elem: GoType) -> GoType:
        return GoType("*" + elem.name, Kind.POINTER, self.ptrsize, self.ptrsize, elem=elem)

    def word(self, name: str, kind: Kind, elem: GoType = None, key: GoType = None) -> GoType:
        """A pointer-shaped value: map, chan or func."""
        return GoType(name, kind, self.ptrsize, self.ptrsize, elem=elem, key=key)

    def iface(self, name: str = "error") -> GoType:
        return GoType(name, Kind.IFACE, 2 * self.ptrsize, self.ptrsize)

    def eface(self, name: str = "interface {}") -> GoType:
        return GoType(name, Kind.EFACE, 2 * self.ptrsize, self.ptrsize)

    def array(self, elem: GoType, length: int) -> GoType:
        return GoType(f"[{length}]{elem.name}", Kind.ARRAY, elem.size * length, elem.align,
                      elem=elem, length=length)

    def struct(self, name: str, fields: Iterable[Tuple[str, GoType]]) -> GoType:
        """Sequence layout; a trailing zero-sized field after sized ones adds one padding byte."""
        off, align, out = 0, 1, []
        fields = list(fields)
        for fname, ftype in fields:
            off = align_up(off, ftype.align)
            out.append(Field(fname, off, ftype))
            off += ftype.size
            align = max(align, ftype.align)
        if fields and fields[-1][1].size == 0 and off > 0:
            off += 1
        return GoType(name, Kind.STRUCT, align_up(off, align), align, fields=tuple(out))

    def named(self, name: str, underlying: GoType) -> GoType:
        """A defined type: new name, same layout."""
        return GoType(name, underlying.kind, underlying.size, underlying.align,
                      underlying.fields, underlying.elem, underlying.key, underlying.length)
