"""Fault one generic instance only: a guard in front of the return stub compares the hidden
dictionary argument (amd64 register ABI).

A generic function runs as a shape function shared by every instance of its GC shape; each
caller passes its instance's dictionary (`pkg..dict.F[T]`) as a hidden argument: the first
integer argument of a function (RAX under ABIInternal), the one after the receiver of a method
(RBX after a pointer receiver; seen in the compiled calls: `LEAQ main..dict.Hook[...], BX`).
R12 is scratch at a function entry. The entry route then jumps to a guard instead of the
stub:

    G+0   49 bc <dict:8>       movabs r12, <dictionary of the named instance>
    G+10  4c 39 e0             cmp    rax, r12        ; (4c 39 e3: rbx)
    G+13  0f 84 <rel32>        je     <stub>          ; the named instance: injected values
    G+19  <the instructions the 5-byte route displaced, relocated here by iced-x86's
           BlockEncoder (short branches become near ones, RIP-relative operands are fixed)>
          e9 <rel32>           jmp    <entry + displaced length>   ; other instances: F as is

Displaced instructions must be whole (decoded from the file's bytes), and none may be a call
(its return address would point into the cave, where the runtime's unwinder finds no
function) or undecodable; otherwise the guard is refused. Branches of F into the route bytes
are already refused by the session's apply guard; the resume address is an instruction
boundary of the original code, untouched.
"""
from __future__ import annotations

from typing import Callable, List

from ..errors import BladeError, Code
from ..patch import CAVE, ROUTE, VALUE, Patch

ROUTE_LEN = 5
GUARD_MAX = 96  # bytes reserved for the guard (prefix 19, displaced <= ~30, jmp 5)


def _displaced(entry: int, code: bytes):
    import iced_x86 as x86
    out, total = [], 0
    for ins in x86.Decoder(64, code, ip=entry):
        if ins.code == x86.Code.INVALID:
            break
        if ins.flow_control in (x86.FlowControl.CALL, x86.FlowControl.INDIRECT_CALL,
                                x86.FlowControl.INTERRUPT, x86.FlowControl.EXCEPTION):
            raise BladeError(Code.PARAMETER_INVALID,
                             f"the first instructions at {entry:#x} include `{ins}`: they cannot "
                             "be moved into a guard, so one generic instance cannot be faulted "
                             "alone here")
        out.append(ins)
        total += ins.len
        if total >= ROUTE_LEN:
            return out, total
    raise BladeError(Code.PARAMETER_INVALID,
                     f"cannot decode the first {ROUTE_LEN} bytes at {entry:#x} as whole "
                     "instructions; one generic instance cannot be faulted alone here")


def guard_code(guard: int, stub: int, entry: int, entry_code: bytes, dictionary: int,
               register: str = "rax") -> bytes:
    """The guard's bytes at runtime address `guard` (see module doc)."""
    import iced_x86 as x86
    moved, n = _displaced(entry, entry_code)
    reg = {"rax": x86.Register.RAX, "rbx": x86.Register.RBX}[register]
    ins = [x86.Instruction.create_reg_u64(x86.Code.MOV_R64_IMM64, x86.Register.R12, dictionary),
           x86.Instruction.create_reg_reg(x86.Code.CMP_RM64_R64, reg, x86.Register.R12),
           x86.Instruction.create_branch(x86.Code.JE_REL32_64, stub),
           *moved,
           x86.Instruction.create_branch(x86.Code.JMP_REL32_64, entry + n)]
    enc = x86.BlockEncoder(64)
    enc.add_many(ins)
    try:
        code = enc.encode(guard)
    except ValueError as e:
        raise BladeError(Code.UNEXPECTED_STATUS, f"cannot place the instance guard at "
                                                 f"{guard:#x}: {e}") from None
    if len(code) > GUARD_MAX:
        raise BladeError(Code.UNEXPECTED_STATUS, f"instance guard of {len(code)} bytes")
    return code


def guarded_patches(patches: List[Patch], entry: int, entry_code: bytes, dictionary: int,
                    allocate: Callable[[int], int],
                    read_original: Callable[[int, int], bytes],
                    register: str = "rax") -> List[Patch]:
    """A return plan's [cave, route] patches rewritten so that only calls passing
    `dictionary` reach the stub: [stub cave, guard cave, route to the guard]."""
    import iced_x86 as x86
    caves = [p for p in patches if p.role in (CAVE, VALUE)]  # the stub's code first
    route = next(p for p in patches if p.role == ROUTE and p.addr == entry)
    stub = caves[0].addr
    guard = allocate(GUARD_MAX)
    code = guard_code(guard, stub, entry, entry_code, dictionary, register)
    block = code + b"\xcc" * (GUARD_MAX - len(code))
    jmp = x86.Instruction.create_branch(x86.Code.JMP_REL32_64, guard)
    enc = x86.Encoder(64)
    enc.encode(jmp, entry)
    jump = enc.take_buffer()
    if len(jump) != ROUTE_LEN:
        raise BladeError(Code.UNEXPECTED_STATUS, "the guard is out of jmp reach of the entry")
    # e.g. condition counters; a value is one of `caves` already (listed twice, it overlapped
    # itself and trust.check_against refused the record: destroy answered 43000)
    others = [p for p in patches if p.role not in (CAVE, VALUE, ROUTE)]
    return [*caves, Patch(guard, read_original(guard, GUARD_MAX), block, CAVE), *others,
            Patch(entry, route.original, jump, ROUTE)]
