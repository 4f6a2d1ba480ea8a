"""Fault one generic instance only on arm64: a guard in front of the return stub compares the
dictionary argument (instance_guard.py is the x86 twin; read its docstring first).

Under ABIInternal on arm64 the dictionary of a shape function arrives as the first integer
argument, R0, or in R1 after a pointer receiver (seen in compiled calls of a GOARCH=arm64 build:
`adrp x0, main..dict.Max[int]; add x0, ...; bl main.Max[go.shape.int]` and `adrp x1,
main..dict.Hook[...]; ...; bl main.(*Hook[go.shape.*uint8]).Trigger`). inspector/generics.py
names them as amd64 registers ("rax" = the first, "rbx" = the second). X16 is dead at a
function's entry. The entry route then branches to the guard instead of the stub:

    G+0    movz/movk x16, <dictionary>     ; 1-4 words (mov_imm: the value decides, not G)
           cmp  x0, x16                    ; (x1 for a pointer-receiver method)
           b.ne G_other
           b    <stub>                     ; the named instance: injected values
    G_other:
           <F's first instruction, relocated here (placement_arm64.relocate)>
           b    <entry + 4>                ; other instances: F as is (when it falls through)

Worked example: dictionary 0xe0ea8 in R0, guard at 0x10900, stub at 0x10810, F at 0xa9ca0
starting with `ldr x16, [x28, #0x10]`:

    0x10900  10 d5 81 52   mov w16, #0xea8           ; (a W write zeroes the upper half)
    0x10904  d0 01 a0 72   movk w16, #0xe, lsl #16
    0x10908  1f 00 10 eb   cmp x0, x16
    0x1090c  41 00 00 54   b.ne #0x10914
    0x10910  c0 ff ff 17   b #0x10810
    0x10914  90 0b 40 f9   ldr x16, [x28, #0x10]
    0x10918  e3 64 02 14   b #0xa9ca4

The displaced instruction must be relocatable (not a call through LR, not padding); otherwise
the guard is refused. The guard's length is known before it is placed.
"""
from __future__ import annotations

from typing import Callable, List

from ..errors import BladeError, Code
from ..patch import CAVE, ROUTE, VALUE, Patch
from . import encoder_arm64 as E
from .placement import FunctionCode, falls_through
from .placement_arm64 import ARM64, relocate

ROUTE_LEN = 4
DICT_REGISTER = {"rax": 0, "rbx": 1}   # generics.py's amd64 names -> arm64 argument registers


def _entry_site(entry: int, entry_code: bytes):
    code = bytes(entry_code[:len(entry_code) // 4 * 4])
    if len(code) < ROUTE_LEN:
        raise BladeError(Code.PARAMETER_INVALID, f"need F's first instruction at {entry:#x}")
    try:
        return FunctionCode.decode(code, entry, ARM64, name=f"the function at {entry:#x}") \
            .entry_site(ROUTE_LEN)
    except BladeError as e:
        raise BladeError(Code.PARAMETER_INVALID,
                         f"{e.message}; one generic instance cannot be faulted alone here") from None


def _register(register: str) -> int:
    try:
        return DICT_REGISTER[register]
    except KeyError:
        raise ValueError(f"the dictionary arrives in {register!r}: not an argument register "
                         "blade-go maps to arm64 (rax -> R0, rbx -> R1)") from None


def guard_words(guard: int, stub: int, entry: int, entry_code: bytes, dictionary: int,
                register: str = "rax") -> List[bytes]:
    """The guard's instructions at runtime address `guard` (module doc)."""
    site = _entry_site(entry, entry_code)
    words = E.mov_imm(E.IP0, dictionary)
    words.append(E.cmp_reg(_register(register), E.IP0))
    at = guard + 4 * len(words)
    other = at + 8
    try:
        words += [E.b_cond("ne", at, other), ARM64.jump(at + 4, stub)]
        tail = relocate(site, other)
        words += [tail[k:k + 4] for k in range(0, len(tail), 4)]
        if falls_through(site):
            words.append(ARM64.jump(other + len(tail), site.end))
    except E.EncodeError as e:
        raise BladeError(Code.UNEXPECTED_STATUS, f"cannot place the instance guard at "
                                                 f"{guard:#x}: {e}") from None
    return words


def guard_len(entry: int, entry_code: bytes, dictionary: int) -> int:
    """Bytes of the guard, wherever it goes."""
    site = _entry_site(entry, entry_code)
    n = len(E.mov_imm(E.IP0, dictionary)) + 3
    return 4 * n + site.relocated_len + (4 if falls_through(site) else 0)


def guarded_patches(patches: List[Patch], entry: int, entry_code: bytes, dictionary: int,
                    allocate: Callable[[int], int],
                    read_original: Callable[[int, int], bytes],
                    register: str = "rax") -> List[Patch]:
    """A return plan's patches rewritten so that only calls passing `dictionary` reach the stub:
    [stub cave (+ its value), guard cave, others, route to the guard] (instance_guard's
    contract)."""
    caves = [p for p in patches if p.role in (CAVE, VALUE)]  # the stub's code first
    route = next(p for p in patches if p.role == ROUTE and p.addr == entry)
    stub = caves[0].addr
    _register(register)
    n = guard_len(entry, entry_code, dictionary)
    guard = allocate(n)
    block = b"".join(guard_words(guard, stub, entry, entry_code, dictionary, register))
    assert len(block) == n, "guard size changed with its address"
    jump = ARM64.jump(entry, guard)   # BladeError beyond +-128 MB
    others = [p for p in patches if p.role not in (CAVE, VALUE, ROUTE)]  # e.g. counters
    return [*caves, Patch(guard, read_original(guard, n), block, CAVE), *others,
            Patch(entry, route.original, jump, ROUTE)]
