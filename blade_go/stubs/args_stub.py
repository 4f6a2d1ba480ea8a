"""The args stub: F's entry becomes `jmp S`; S loads the new values into the argument
registers / stack slots, runs the displaced entry instructions (relocated by placement.py: the
prologue's `jbe morestack` becomes a rel32 branch back into F) and jumps back. The morestack path
re-enters at the entry, so S runs again after a stack growth and stores the same values. Nothing
in S calls out, so no cave address is ever on a goroutine's stack.

Registers S may use: the argument registers it sets, R12 as scratch on amd64 (not an argument
register, not g (R14), not the GOT pointer (R15)), EAX on 386 (ABI0: nothing lives in registers
at a Go function's entry but the closure context in EDX, which S never touches).
"""
from typing import Callable, Dict, List, Sequence

from ..abi import REG, ParamLocation
from ..errors import BladeError, Code
from ..patch import CAVE, ROUTE, Patch, split_values
from . import values as V
from .asm import Asm, C, I, R, absolute, gpr, mem, xmm
from .conditions_x86 import emit_prefix_into
from .conditions_return import check_first, entry_site
from .faults import INT3, FaultPlan, _block, _data_base, _sp
from .image import Const, DataArea, build_images
from .placement import FunctionCode, falls_through, jump, relocate
from .placement_x86 import JMP_LEN


def plan_args(code: FunctionCode, params: Sequence[ParamLocation], new: Dict[int, V.Value],
              resolve, allocate: Callable[[int], int],
              read_original: Callable[[int, int], bytes], conds=None, counters=None
              ) -> FaultPlan:
    """Every call of F runs with the parameters at the keys of `new` replaced. With conditions
    (issue 10) the prefix decides each call; a rejected one keeps its arguments."""
    arch = code.arch
    ptr = arch.ptrsize
    # with conditions, the whole stack check when it can run first (conditions_return)
    site = entry_site(code) if conds is not None else code.entry_site(JMP_LEN)
    sp = _sp(arch)
    chosen = [params[i] for i in sorted(new)]
    vals = [new[i] for i in sorted(new)]
    # F's stack check first: a call that grows its stack is then decided (and counted) once
    first = conds is not None and check_first(code, site)

    def emit(stub: int, data_base: int):
        images, data = build_images(chosen, vals, ptr, resolve, data_base)
        a = Asm(arch)
        if first:
            a.raw(lambda at: relocate(site, at), site.relocated_len)
        if conds is not None:
            extra = DataArea(data_base + len(data))
            emit_prefix_into(a, conds, "skip", counters, extra)
            data += bytes(extra.buf)
        for loc, img in zip(chosen, images):
            for p in loc.pieces:
                if isinstance(img, Const):
                    raw = img.data[p.value_offset:p.value_offset + p.size]
                    a.add(*_set_const(arch, p, int.from_bytes(raw, "little"), sp))
                else:
                    a.add(*_set_from(arch, p, img.addr + p.value_offset, sp))
        if conds is not None:
            a.label("skip")
        if not first:
            a.raw(lambda at: relocate(site, at), site.relocated_len)
        if falls_through(site):
            a.branch("jmp", site.end)
        return a, data

    probe, pdata = emit(code.addr, code.addr + 0x1000)
    code_len = probe.size(code.addr)
    total = len(_block(b"\x00" * code_len, pdata))
    stub = allocate(total)
    asm_, data = emit(stub, _data_base(stub, code_len))
    body, _, text = asm_.assemble(stub)
    block = _block(body, data)
    if len(block) != total:
        raise BladeError(Code.UNEXPECTED_STATUS, "args stub size changed with its address")
    route = jump(site.addr, stub, arch) + INT3 * (site.length - JMP_LEN)
    # the new values' data (string bytes) is a patch of its own: the program may keep it
    patches = [*split_values(Patch(stub, bytes(read_original(stub, total)), block, CAVE),
                             _data_base(stub, code_len)),
               Patch(site.addr, site.original, route, ROUTE)]
    listing = (f"S (args):\n{text}\nroute at {site.addr:#x}: {route.hex(' ')}   (jmp S)\n"
               f"displaced:\n{site.listing()}")
    return FaultPlan(patches, stub, code_len, len(data), site.addr, listing)


SCRATCH64 = "R12"  # free at F's entry: not an argument register, not g, not the GOT pointer
_MOV_LOAD = {8: C.MOV_R64_RM64, 4: C.MOV_R32_RM32, 2: C.MOV_R16_RM16, 1: C.MOV_R8_RM8}
_MOV_STORE = {8: C.MOV_RM64_R64, 4: C.MOV_RM32_R32, 2: C.MOV_RM16_R16, 1: C.MOV_RM8_R8}
_MOV_IMM = {4: C.MOV_RM32_IMM32, 2: C.MOV_RM16_IMM16, 1: C.MOV_RM8_IMM8}


def _set_const(arch, p, v: int, sp) -> List:
    if arch.bitness == 64:
        if p.where == REG and not p.reg.upper().startswith("X"):
            return [I.create_reg_u64(C.MOV_R64_IMM64, gpr(p.reg, 8), v)]
        if p.where == REG:
            out = [I.create_reg_u64(C.MOV_R64_IMM64, R.R12, v)]
            if p.size == 8:
                return out + [I.create_reg_reg(C.MOVQ_XMM_RM64, xmm(p.reg), R.R12)]
            return out + [I.create_reg_reg(C.MOVD_XMM_RM32, xmm(p.reg), R.R12D)]
        return _wide_const(p, v, sp)
    return [I.create_mem_u32(_MOV_IMM[w], mem(sp, p.sp_offset + off),
                             (v >> (8 * off)) & ((1 << (8 * w)) - 1))
            for off, w in _chunks(p.size, 4)]


def _wide_const(p, v: int, sp) -> List:
    """A stack piece wider than 8 bytes (a whole stack-assigned value): 8 bytes at a time."""
    out = []
    for off, w in _chunks(p.size, 8):
        part = (v >> (8 * off)) & ((1 << (8 * w)) - 1)
        out += [I.create_reg_u64(C.MOV_R64_IMM64, R.R12, part),
                I.create_mem_reg(_MOV_STORE[w], mem(sp, p.sp_offset + off), gpr(SCRATCH64, w))]
    return out


def _set_from(arch, p, addr: int, sp) -> List:
    """Copy p.size bytes of a package variable (runtime address addr) into p's place."""
    if arch.bitness == 64:
        if p.where == REG and not p.reg.upper().startswith("X"):
            return [I.create_reg_mem(_MOV_LOAD[p.size], gpr(p.reg, p.size), absolute(addr, 64))]
        if p.where == REG:
            code = C.MOVSD_XMM_XMMM64 if p.size == 8 else C.MOVSS_XMM_XMMM32
            return [I.create_reg_mem(code, xmm(p.reg), absolute(addr, 64))]
        out = []
        for off, w in _chunks(p.size, 8):
            out += [I.create_reg_mem(_MOV_LOAD[w], gpr(SCRATCH64, w), absolute(addr + off, 64)),
                    I.create_mem_reg(_MOV_STORE[w], mem(sp, p.sp_offset + off), gpr(SCRATCH64, w))]
        return out
    out = []  # 386: through EAX, which holds nothing at a Go function's entry
    for off, w in _chunks(p.size, 4):
        out += [I.create_reg_mem(_MOV_LOAD[w], gpr("RAX", w), absolute(addr + off, 32)),
                I.create_mem_reg(_MOV_STORE[w], mem(sp, p.sp_offset + off), gpr("RAX", w))]
    return out


def _chunks(size: int, widest: int):
    off = 0
    for w in (8, 4, 2, 1):
        if w > widest:
            continue
        while size - off >= w:
            yield off, w
            off += w
