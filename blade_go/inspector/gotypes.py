"""The Go type model every layer shares: DWARF reader -> ABI -> value parser -> stub planner.

A GoType describes one Go type as the machine sees it: its size, alignment and the kind of its
underlying type, plus the parts needed to lay it out (fields, element, length). Named types keep
their Go name (``main.Celsius``) with the underlying kind (FLOAT32).
"""
from dataclasses import dataclass, field
from enum import Enum
from typing import Optional, Tuple


class Kind(Enum):
    BOOL = "bool"
    INT = "int"          # int, int8..int64 (signed); size tells which
    UINT = "uint"        # uint, uint8..uint64, uintptr
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    COMPLEX64 = "complex64"
    COMPLEX128 = "complex128"
    STRING = "string"    # {ptr, len}
    POINTER = "pointer"  # *T and unsafe.Pointer
    SLICE = "slice"      # {ptr, len, cap}
    ARRAY = "array"
    STRUCT = "struct"
    IFACE = "iface"      # non-empty interface, e.g. error: {itab, data}
    EFACE = "eface"      # empty interface (any): {type, data}
    MAP = "map"          # one pointer
    CHAN = "chan"        # one pointer
    FUNC = "func"        # one pointer (to a funcval)


# Kinds whose value is a single pointer word.
POINTER_SHAPED = frozenset({Kind.POINTER, Kind.MAP, Kind.CHAN, Kind.FUNC})
# Kinds that accept the value `nil`.
NILABLE = frozenset({Kind.POINTER, Kind.MAP, Kind.CHAN, Kind.FUNC, Kind.SLICE, Kind.IFACE,
                     Kind.EFACE})


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    type: "GoType"


@dataclass(frozen=True)
class GoType:
    name: str                  # Go spelling: "int", "main.Celsius", "*main.User", "[]uint8", "error"
    kind: Kind                 # kind of the underlying type
    size: int
    align: int
    fields: Tuple[Field, ...] = ()    # STRUCT
    elem: Optional["GoType"] = None   # POINTER/SLICE/ARRAY/CHAN element, MAP value
    key: Optional["GoType"] = None    # MAP key
    length: int = 0                   # ARRAY length

    def __str__(self):
        return self.name

    def scalars(self, ptrsize: int, base: int = 0):
        """Yield (offset, size, cls) for each machine scalar of the value, in memory order.

        cls is "int" or "float". This is the flattening both the register ABI and the stub
        planner use: strings are (ptr, len), slices (ptr, len, cap), interfaces (tab, data),
        complex numbers two floats, structs and arrays their elements in order.
        """
        k = self.kind
        if k in (Kind.BOOL, Kind.INT, Kind.UINT) or k in POINTER_SHAPED:
            yield (base, self.size, "int")
        elif k in (Kind.FLOAT32, Kind.FLOAT64):
            yield (base, self.size, "float")
        elif k in (Kind.COMPLEX64, Kind.COMPLEX128):
            half = self.size // 2
            yield (base, half, "float")
            yield (base + half, half, "float")
        elif k == Kind.STRING:
            yield (base, ptrsize, "int")
            yield (base + ptrsize, ptrsize, "int")
        elif k == Kind.SLICE:
            for i in range(3):
                yield (base + i * ptrsize, ptrsize, "int")
        elif k in (Kind.IFACE, Kind.EFACE):
            yield (base, ptrsize, "int")
            yield (base + ptrsize, ptrsize, "int")
        elif k == Kind.STRUCT:
            for f in self.fields:
                yield from f.type.scalars(ptrsize, base + f.offset)
        elif k == Kind.ARRAY:
            esz = self.elem.size if self.elem else 0
            for i in range(self.length):
                yield from self.elem.scalars(ptrsize, base + i * esz)
        else:  # pragma: no cover - every Kind is handled above
            raise ValueError(f"unknown kind {k}")


@dataclass(frozen=True)
class Param:
    """One formal parameter or result of a function, in declaration order."""
    name: str          # "~r0" for unnamed results, "~p0"/"_" for unnamed params as DWARF says
    type: GoType
    is_result: bool = False


@dataclass(frozen=True)
class Signature:
    params: Tuple[Param, ...]   # receiver first for methods; ".dict" first for shape instances
    results: Tuple[Param, ...]


def basic(name: str, kind: Kind, size: int, align: Optional[int] = None) -> GoType:
    """Shorthand for scalar types (used by tests and by the ABI module)."""
    return GoType(name=name, kind=kind, size=size, align=align if align is not None else size)
