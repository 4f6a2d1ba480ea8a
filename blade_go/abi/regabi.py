"""ABIInternal (abi-internal.md): the register assignment shared by every architecture.

An architecture module (`regabi_amd64.py`, `regabi_arm64.py`) names its registers and builds one
`RegisterABI`; this module never imports them back. The rules:

Arguments and results are assigned separately, each from the first register. A value is
assigned as a whole: either every machine scalar of it gets the next register of its class,
or (it has a non-trivial array, or too few registers remain) it goes to the stack and the
register counters stay where they were. Zero-sized values are stack-assigned (no space, but
they align the offset). Stack-assigned results follow the stack-assigned arguments after a
pointer-size alignment.
"""
from typing import List, Optional, Tuple

from . import ABI, REG, ParamLocation, ResultLocation, Piece
from ..inspector.gotypes import POINTER_SHAPED, GoType, Kind, Signature
from .abi0 import StackFrame, stack_location

PTRSIZE = 8  # the register ABI exists on 64-bit architectures only


def register_needs(t: GoType) -> Optional[Tuple[int, int]]:
    """(int registers, float registers) t takes when register-assigned; None if it never can."""
    k = t.kind
    if k in (Kind.BOOL, Kind.INT, Kind.UINT) or k in POINTER_SHAPED:
        return (1, 0)
    if k in (Kind.FLOAT32, Kind.FLOAT64):
        return (0, 1)
    if k in (Kind.COMPLEX64, Kind.COMPLEX128):
        return (0, 2)
    if k in (Kind.STRING, Kind.IFACE, Kind.EFACE):
        return (2, 0)
    if k == Kind.SLICE:
        return (3, 0)
    if k == Kind.ARRAY:
        if t.length == 0:
            return (0, 0)
        if t.length == 1:
            return register_needs(t.elem)
        return None  # indexing needs memory: arrays longer than 1 never go in registers
    if k == Kind.STRUCT:
        ni = nf = 0
        for f in t.fields:
            need = register_needs(f.type)
            if need is None:
                return None
            ni, nf = ni + need[0], nf + need[1]
        return (ni, nf)
    raise ValueError(f"unknown kind {k}")


class RegisterABI(ABI):
    """One architecture's register ABI: its argument registers in assignment order.

    Worked example, `func(id int64) (string, error)`: the parameter takes the first integer
    register, and the results start again from the first: the string in two (pointer,
    length), the error in the next two (itab, data): RAX | RAX RBX, RCX RDI on amd64 and
    R0 | R0 R1, R2 R3 on arm64. A 17th int64 result on arm64 (16 registers) goes to the
    stack, at SP+8 on entry: the word at SP is the caller's saved LR on arm64, the return
    address on amd64, so stack slots are laid out alike.
    """
    name = ""
    goarch = ""
    ptrsize = PTRSIZE
    int_regs: Tuple[str, ...] = ()
    float_regs: Tuple[str, ...] = ()

    def result_locations(self, sig: Signature) -> Tuple[ResultLocation, ...]:
        frame = StackFrame(PTRSIZE)
        ints = floats = 0
        for p in sig.params:  # only their stack slots matter here
            ints, floats, _ = self._assign(p.type, ints, floats, frame)
        frame.pointer_align()
        ints = floats = 0
        out: List[ResultLocation] = []
        for i, r in enumerate(sig.results):
            ints, floats, loc = self._assign(r.type, ints, floats, frame, i, r.name)
            out.append(loc)
        return tuple(out)

    def param_locations(self, sig: Signature) -> Tuple[ParamLocation, ...]:
        """Registers or stack slots of every parameter, and the spill slots of the register
        ones: the spill area follows the stack-assigned results, pointer-aligned, each value
        aligned to its type, in parameter order (abi-internal.md, "Function call argument and
        result passing")."""
        frame = StackFrame(PTRSIZE)
        ints = floats = 0
        locs = []
        for i, p in enumerate(sig.params):
            ints, floats, loc = self._assign(p.type, ints, floats, frame, i, p.name)
            locs.append(loc)
        frame.pointer_align()
        ints = floats = 0
        for r in sig.results:  # only their stack slots matter here
            ints, floats, _ = self._assign(r.type, ints, floats, frame)
        frame.pointer_align()
        out: List[ParamLocation] = []
        for loc in locs:
            spill = None
            if loc.pieces and loc.pieces[0].where == REG:
                spill = frame.place(loc.type)
            out.append(ParamLocation(loc.index, loc.name, loc.type, loc.pieces, spill))
        return tuple(out)

    def _assign(self, t: GoType, ints: int, floats: int, frame: StackFrame,
                index: int = -1, name: str = ""):
        """Assign one value; returns the new counters and its ResultLocation."""
        need = register_needs(t) if t.size else None
        if need is None or ints + need[0] > len(self.int_regs) or floats + need[1] > len(self.float_regs):
            return ints, floats, stack_location(index, name, t, frame.place(t))
        pieces = []
        for off, size, cls in t.scalars(PTRSIZE):
            if cls == "float":
                reg, floats = self.float_regs[floats], floats + 1
            else:
                reg, ints = self.int_regs[ints], ints + 1
            pieces.append(Piece(off, size, REG, reg=reg))
        return ints, floats, ResultLocation(index, name, t, tuple(pieces))

    def __repr__(self):
        return f"RegisterABI({self.goarch!r})"
