"""The x86 family's assemblers for the condition prefix (amd64 and 386, over iced-x86): `Asm`,
the two-pass label assembler conditional return stubs are built with, and `emit_prefix_into`,
the prefix inside a fault stub's asm.Asm (delay, panic, args). The prefix's logic is
conditions.emit_prefix; its blocks are conditions_amd64 / conditions_386.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple, Union

import iced_x86 as x86

from .conditions import COUNTERS, Conditions, emit_prefix


@dataclass
class _Item:
    make: Callable[[int, Dict[str, int]], Tuple[bytes, str]]


class Asm:
    """Instructions with labels and data symbols, assembled in two passes.

    Every item has a length independent of addresses (branches are rel32, data operands are
    RIP-relative disp32 on amd64 and absolute disp32 on 386), so the first pass, against dummy
    addresses, sizes the code; the second emits it.
    """

    def __init__(self, arch: str):
        self.arch = arch
        self.bitness = 64 if arch == "amd64" else 32
        self.items: List[Union[_Item, str]] = []
        self._n = 0
        self.sp_bias = 0  # SP here is SP at F's entry minus this (0: the prefix runs at entry)
        self.bp_saved = False  # RBP holds F's own frame pointer here (the caller's is at [RBP])

    def fresh(self, stem: str) -> str:
        self._n += 1
        return f".{stem}{self._n}"

    def label(self, name: str):
        self.items.append(name)

    def ins(self, make: Callable[[Dict[str, int]], "x86.Instruction"]):
        """An instruction built from the symbol table (data addresses, labels)."""
        def build(at, sym):
            ins = make(sym)
            enc = x86.Encoder(self.bitness)
            enc.encode(ins, at)
            return bytes(enc.take_buffer()), _fmt(ins)
        self.items.append(_Item(build))

    def fixed(self, ins: "x86.Instruction"):
        self.ins(lambda sym: ins)

    def raw(self, make: Callable[[int], bytes], text: str):
        """Bytes that depend only on their own address (relocated instructions)."""
        self.items.append(_Item(lambda at, sym: (make(at), text)))

    def jcc(self, code: int, label: str):
        self.ins(lambda sym: x86.Instruction.create_branch(code, sym[label]))

    def size(self, near: int) -> int:
        """Code length, assembled at `near` (any address in rel32 reach of the branch targets
        and relocated instructions: lengths do not depend on it)."""
        return len(self.assemble(near, _Dummy(near))[0])

    def assemble(self, base: int, symbols) -> Tuple[bytes, List[Tuple[int, bytes, str]]]:
        """(code, [(addr, bytes, text)]) with labels resolved; `symbols` gives data addresses."""
        dummy = _Dummy(base)
        lengths, at, labels = [], base, {}
        for it in self.items:
            if isinstance(it, str):
                labels[it] = at
            else:
                n = len(it.make(at, dummy)[0])
                lengths.append(n)
                at += n
        sym = _Chain(labels, symbols)
        out, listing, at, k = bytearray(), [], base, 0
        for it in self.items:
            if isinstance(it, str):
                listing.append((at, b"", it + ":"))
                continue
            code, text = it.make(at, sym)
            if len(code) != lengths[k]:
                raise AssertionError(f"{text}: length changed with its address")
            listing.append((at, code, text))
            out += code
            at += len(code)
            k += 1
        return bytes(out), listing


class _Dummy(dict):
    def __init__(self, base):
        super().__init__()
        self.base = base

    def __missing__(self, key):
        return self.base


class _Chain:
    def __init__(self, *maps):
        self.maps = maps

    def __getitem__(self, key):
        for m in self.maps:
            if key in m or isinstance(m, _Dummy):
                return m[key]
        raise KeyError(f"unknown symbol {key!r}")


_FORMATTER = None


def _fmt(ins) -> str:
    global _FORMATTER
    if _FORMATTER is None:
        f = x86.Formatter(x86.FormatterSyntax.INTEL)
        f.hex_prefix, f.hex_suffix, f.uppercase_hex = "0x", "", False
        f.space_after_operand_separator = True
        f.branch_leading_zeros = False
        _FORMATTER = f
    return _FORMATTER.format(ins)


class _FaultAsm:
    """The prefix's view of a fault stub's assembler (stubs/asm.py, used by delay, panic and
    args): the same calls as Asm, with data addresses already known."""

    def __init__(self, a, symbols: Dict[str, int], sp_bias: int, bp_saved: bool = False):
        self.a, self.symbols, self.sp_bias, self.bp_saved = a, symbols, sp_bias, bp_saved
        self.arch = "amd64" if a.bitness == 64 else "386"
        self._n = 0

    def fresh(self, stem: str) -> str:
        self._n += 1
        return f".cond_{stem}{self._n}"

    def label(self, name: str):
        self.a.label(name)

    def fixed(self, ins):
        self.a.add(ins)

    def ins(self, make):
        self.a.add(make(self.symbols))

    def jcc(self, code: int, label: str):
        self.a.items.append(("branch", (code, label)))  # asm.Asm's rel32 branch to a label


def emit_prefix_into(a, conds: Conditions, skip: str, counters: int, area,
                     sp_bias: int = 0, bp_saved: bool = False):
    """Emit the prefix into a fault stub's asm.Asm `a`. `counters`: runtime address of the
    counter block; `area` (image.DataArea): where the string constants go; `sp_bias`: how far
    SP at this point lies below SP at F's entry (delay/panic run the prefix in H, called from
    after F's frame setup: 8 + the frame's SP delta); `bp_saved`: F's frame setup has saved
    the caller's frame pointer and RBP points at it (the --caller walk starts at [RBP])."""
    symbols = {COUNTERS: counters}
    for name, data in conds.constants():
        symbols[name] = area.put(data, align=8)
    emit_prefix(_FaultAsm(a, symbols, sp_bias, bp_saved), conds, skip)
