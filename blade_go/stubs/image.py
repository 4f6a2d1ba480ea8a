"""Parsed values -> the bytes of the Go values in memory (little endian), plus their cave data.

A result's image is either a `Const` (bytes fixed at plan time; pointers inside it are absolute
runtime addresses of data placed in the cave right after the stub code) or a `VarCopy` (the stub
copies the live bytes of a package-level variable at call time).

Data placed in the cave:
- a string's bytes (an empty string gets a nil pointer, which Go accepts for "");
- for `error:msg`, an `errors.errorString` struct {s string} and the message bytes; the
  interface value is (itab of *errors.errorString for error, pointer to that struct), exactly
  what `errors.New(msg)` returns except that the struct lives outside the heap (the GC ignores
  pointers outside its spans, as it does for string literals in .rodata).
"""
import struct
from dataclasses import dataclass
from typing import List, Optional, Protocol, Sequence, Tuple, Union

from ..abi import ResultLocation
from ..errors import BladeError, Code
from ..inspector.gotypes import GoType, Kind
from . import values as V


class Resolver(Protocol):
    def itab(self, concrete: str, iface: str) -> Optional[int]:
        """Runtime address of the itab for (concrete type, interface), None when absent."""

    def variable(self, name: str) -> Optional[Tuple[int, GoType]]:
        """(runtime address, type) of package-level variable `name`, None when absent."""


class BinaryResolver:
    """A Resolver over an inspector GoBinary: file addresses + load bias = runtime addresses."""

    def __init__(self, binary):
        self.binary = binary

    def itab(self, concrete: str, iface: str) -> Optional[int]:
        addr = self.binary.itab(concrete, iface)
        return addr + self.binary.load_bias if addr else None

    def variable(self, name: str) -> Optional[Tuple[int, GoType]]:
        try:
            var = self.binary.variable(name)
        except BladeError:
            return None
        return (var.addr + self.binary.load_bias, var.type)


@dataclass(frozen=True)
class Const:
    data: bytes


@dataclass(frozen=True)
class VarCopy:
    addr: int
    name: str


Image = Union[Const, VarCopy]


class DataArea:
    """Bytes laid out from runtime address `base`, each item aligned as asked."""

    def __init__(self, base: int):
        self.base = base
        self.buf = bytearray()

    def put(self, data: bytes, align: int = 1) -> int:
        while len(self.buf) % align:
            self.buf.append(0)
        addr = self.base + len(self.buf)
        self.buf += data
        return addr


def word(v: int, ptrsize: int) -> bytes:
    return v.to_bytes(ptrsize, "little")


def _float(x: float, size: int) -> bytes:
    return struct.pack("<f" if size == 4 else "<d", x)


def no_errorstring_itab() -> BladeError:
    return BladeError(
        Code.PARAMETER_ILLEGAL,
        "--value: error:<msg> builds an *errors.errorString, but this binary never uses "
        "errors.New (no itab for *errors.errorString as error), so error:<msg> is unavailable; "
        "use var:<pkg.Name> with an error variable the program defines (e.g. var:io.EOF)")


def const_image(v: V.Value, ptrsize: int, resolve: Resolver, data: DataArea) -> bytes:
    t, size = v.type, v.type.size
    if v.kind in (V.NIL, V.ZERO):
        return bytes(size)
    if v.kind == V.INT:
        return v.data.to_bytes(size, "little", signed=t.kind == Kind.INT)
    if v.kind == V.FLOAT:
        return _float(v.data, size)
    if v.kind == V.COMPLEX:
        half = size // 2
        return _float(v.data.real, half) + _float(v.data.imag, half)
    if v.kind == V.BOOL:
        return bytes([1 if v.data else 0])
    if v.kind == V.STRING:
        ptr = data.put(v.data) if v.data else 0
        return word(ptr, ptrsize) + word(len(v.data), ptrsize)
    if v.kind == V.ERROR:
        itab = resolve.itab("*errors.errorString", "error")
        if not itab:
            raise no_errorstring_itab()
        msg_ptr = data.put(v.data) if v.data else 0
        obj = data.put(word(msg_ptr, ptrsize) + word(len(v.data), ptrsize), align=ptrsize)
        return word(itab, ptrsize) + word(obj, ptrsize)
    raise ValueError(f"no constant image for {v.kind}")  # pragma: no cover


def build_images(results: Sequence[ResultLocation], values: Sequence[V.Value], ptrsize: int,
                 resolve: Resolver, data_base: int) -> Tuple[List[Image], bytes]:
    """Images of every result, with their cave data laid out from `data_base`."""
    data = DataArea(data_base)
    images: List[Image] = []
    for loc, v in zip(results, values):
        if v.kind == V.VAR:
            found = resolve.variable(v.data)
            V.check_var_type(v, found[1] if found else None)
            images.append(VarCopy(found[0], v.data))
        else:
            img = const_image(v, ptrsize, resolve, data)
            assert len(img) == loc.type.size, (v, loc.type)
            images.append(Const(img))
    return images, bytes(data.buf)
