"""The args stub on arm64 (the x86 args_stub.py's plan, in A64): F's first instruction becomes
`b S`; S puts the new values in the argument registers (R0-R15, F0-F15) and stack slots
([SP+8+...] at F's entry), runs the displaced instruction (relocated by placement_arm64) and
branches back. F's morestack path comes back to the entry, so S runs again after a stack
growth and sets the same values. Nothing in S calls out (LR stays the caller's return address)
and no cave address is ever on a goroutine's stack.

With conditions, S starts with F's stack check when F begins with it (conditions_return_arm64:
a call that grows its stack is decided once), then the prefix; a rejected call keeps its
arguments:

    S:    [ldr x16,[x28,#16]; cmp sp,x16; b.hi .+8; b morestack]   (with conditions)
          [condition prefix]                  ; to skip
          mov x0, #10 ...                     ; the new values (X16/X17 as scratch)
    skip: [F's first instruction, relocated]  (without the check run first)
          b <F's entry + displaced>
"""
from typing import Callable, Dict, Sequence

from ..abi import REG, ParamLocation
from ..errors import BladeError, Code
from ..patch import CAVE, ROUTE, Patch, split_values
from . import values as V
from . import encoder_arm64 as E
from .asm_arm64 import Asm64, listing_text
from .conditions_return_arm64 import ROUTE_LEN, check_run
from .faults_arm64 import _block, _data_base, emit_prefix_into
from .image import Const, DataArea, build_images
from .plans import FaultPlan


def plan_args(code, params: Sequence[ParamLocation], new: Dict[int, V.Value], resolve,
              allocate: Callable[[int], int], read_original: Callable[[int, int], bytes],
              conds=None, counters=None) -> FaultPlan:
    """args_stub.plan_args on arm64 (same arguments and result); `code` is a
    placement_arm64.FunctionCodeARM64."""
    from .placement_arm64 import falls_through, jump, relocate
    first = check_run(code) if conds is not None else 0
    site = code.entry_site(4 * first if first else ROUTE_LEN)
    chosen = [params[i] for i in sorted(new)]
    vals = [new[i] for i in sorted(new)]
    for loc in chosen:
        for p in loc.pieces:
            if p.where == "reg" and not p.reg.upper().startswith(("R", "F")):
                raise BladeError(Code.UNEXPECTED_STATUS, f"{loc.name} is in {p.reg}, not an "
                                                         "arm64 argument register")

    def emit(data_base: int):
        images, data = build_images(chosen, vals, 8, resolve, data_base)
        a = Asm64()
        relocated = f"(F's entry, relocated: {'; '.join(i.text for i in site.instructions)})"
        if first:
            a.raw(lambda at: relocate(site, at), site.relocated_len, relocated)
        if conds is not None:
            extra = DataArea(data_base + len(data))
            emit_prefix_into(a, conds, "skip", counters, extra)
            data += bytes(extra.buf)
        load_values(a, chosen, images)
        if conds is not None:
            a.label("skip")
        if not first:
            a.raw(lambda at: relocate(site, at), site.relocated_len, relocated)
        if falls_through(site):
            a.b(site.end)
        return a, data

    probe, pdata = emit(code.addr + 0x1000)
    code_len = probe.size()
    total = len(_block(bytes(code_len), pdata))
    stub = allocate(total)
    a, data = emit(_data_base(stub, code_len))
    body, listing = a.assemble(stub)
    block = _block(body, data)
    if len(block) != total:
        raise BladeError(Code.UNEXPECTED_STATUS, "args stub size changed with its address")
    route = jump(site.addr, stub)
    patches = [*split_values(Patch(stub, bytes(read_original(stub, total)), block, CAVE),
                             _data_base(stub, code_len)),
               Patch(site.addr, site.original[:ROUTE_LEN], route, ROUTE)]
    text = (f"S (args):\n{listing_text(listing)}\nroute at {site.addr:#x}: {route.hex(' ')}"
            f"   (b S)\ndisplaced:\n{site.listing()}")
    return FaultPlan(patches, stub, code_len, len(data), site.addr, text)


# ----------------------------------------------------------------------------- the new values

def load_values(a: Asm64, locs, images, scratch=(16, 17)):
    """Put each new argument's image where its location says: registers R0-R15 / F0-F15 (constants through
    MOVZ+3 MOVK: fixed length, whatever the value, pointers to cave data included) and stack
    words at [SP + sp_offset] (SP as at F's entry). VarCopy images are read from the variable
    at call time. Writes `scratch` (X16, X17) and the destinations only."""
    s, t = scratch
    for loc, img in zip(locs, images):
        if not isinstance(img, Const):
            a.adr_sym(t, img.addr)
        for p in loc.pieces:
            name = p.reg.upper() if p.where == REG else ""
            if isinstance(img, Const):
                raw = img.data[p.value_offset:p.value_offset + p.size]
                if p.where == REG and name.startswith("R"):
                    a.mov64(E.reg(name), int.from_bytes(raw, "little"),
                            f"mov {name.lower()}, #{int.from_bytes(raw, 'little'):#x}")
                elif p.where == REG:
                    a.mov64(s, int.from_bytes(raw, "little"))
                    a.op(E.fmov_to_fp(E.reg(name), s, 8 if p.size == 8 else 4),
                         f"fmov {'d' if p.size == 8 else 's'}{name[1:]}, x{s}")
                else:
                    for off, w in _chunks(p.size):
                        v = int.from_bytes(raw[off:off + w], "little")
                        a.mov64(s, v)
                        a.op(E.str_(s, E.SP, p.sp_offset + off, w),
                             f"str{8 * w} x{s}, [sp, #{p.sp_offset + off:#x}]")
                continue
            src = p.value_offset
            if p.where == REG and name.startswith("R"):
                a.op(E.ldr(E.reg(name), t, src, p.size), f"ldr{8 * p.size} {name.lower()}, "
                     f"[x{t}, #{src}]   ; {img.name}")
            elif p.where == REG:
                a.op(E.ldr(E.reg(name), t, src, 8 if p.size == 8 else 4, fp=True),
                     f"ldr {'d' if p.size == 8 else 's'}{name[1:]}, [x{t}, #{src}]   ; {img.name}")
            else:
                for off, w in _chunks(p.size):
                    a.op(E.ldr(s, t, src + off, w), f"ldr{8 * w} x{s}, [x{t}, #{src + off}]")
                    a.op(E.str_(s, E.SP, p.sp_offset + off, w),
                         f"str{8 * w} x{s}, [sp, #{p.sp_offset + off:#x}]")


def _chunks(size: int):
    off = 0
    for w in (8, 4, 2, 1):
        while size - off >= w:
            yield off, w
            off += w
