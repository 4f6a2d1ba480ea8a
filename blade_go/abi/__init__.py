"""Where a Go function's results travel, per ABI.

Architecture-specific code lives in its own module behind one small interface (like delve's
pkg/proc amd64_arch.go / i386_arch.go):

    abi = abi_for(goarch, go_version)        # -> ABI
    abi.result_locations(signature)          # -> [ResultLocation]
    abi.param_locations(signature)           # -> [ParamLocation] (receiver/.dict included)

A ResultLocation maps each byte range of a result value to a register or to a stack slot
addressed from SP at the function's entry (where SP points at the return address). A
ParamLocation is the same for a parameter, plus, for a register-assigned one, the offset of its
spill slot: the caller reserves it (register ABI) and a callee may store the value there, in
its memory layout, e.g. before morestack or across a call made from the function's frame.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

from ..inspector.gotypes import GoType, Signature

REG = "reg"
STACK = "stack"


@dataclass(frozen=True)
class Piece:
    """Bytes [value_offset, value_offset+size) of one result value, and where they go."""
    value_offset: int
    size: int
    where: str                      # REG or STACK
    reg: Optional[str] = None       # "RAX".."R11", "X0".."X14" when where == REG
    sp_offset: Optional[int] = None  # byte offset from SP at entry when where == STACK

    def to_json(self) -> dict:
        d = {"offset": self.value_offset, "size": self.size, "where": self.where}
        if self.where == REG:
            d["reg"] = self.reg
        else:
            d["sp_offset"] = self.sp_offset
        return d


@dataclass(frozen=True)
class ResultLocation:
    index: int
    name: str
    type: GoType
    pieces: Tuple[Piece, ...]  # empty for zero-sized results

    def to_json(self) -> dict:
        return {"index": self.index, "name": self.name, "type": self.type.name,
                "size": self.type.size, "pieces": [p.to_json() for p in self.pieces]}


@dataclass(frozen=True)
class ParamLocation(ResultLocation):
    spill_offset: Optional[int] = None  # SP-at-entry offset of the spill slot (register args)

    @property
    def in_registers(self) -> bool:
        return bool(self.pieces) and self.pieces[0].where == REG

    def to_json(self) -> dict:
        d = super().to_json()
        if self.spill_offset is not None:
            d["spill_offset"] = self.spill_offset
        return d


class ABI:
    """Interface every ABI implements."""
    name: str = ""        # "abi-internal-amd64", "abi0-amd64", "abi0-386"
    goarch: str = ""
    ptrsize: int = 8

    def result_locations(self, sig: Signature) -> Tuple[ResultLocation, ...]:
        raise NotImplementedError

    def param_locations(self, sig: Signature) -> Tuple[ParamLocation, ...]:
        raise NotImplementedError


def abi_for(goarch: str, go_version: str) -> ABI:
    """The ABI a Go toolchain of `go_version` ("go1.19.13") uses for `goarch` ("amd64", "386")."""
    from .select import select_abi  # keeps this package's import light
    return select_abi(goarch, go_version)
