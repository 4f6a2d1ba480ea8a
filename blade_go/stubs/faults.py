"""Stubs that call out of F: delay and panic (where: placement.py; args: args_stub.py).

delay and panic: a call out of F, made from right after its frame setup (go-abi.md,
"Goroutine-level delay"). The site's first bytes become `call H; jmp H2`:

    H:   spill F's register arguments to their spill slots   (the GC and stack copying see them)
         cmp byte [arm], ARMED ; jne out                      (delay only: destroy disarms)
         RAX <- duration (rdtsc-based uniform offset)        (panic: RAX,RBX <- the interface)
         jmp time.Sleep                                       (panic: jmp runtime.gopanic)
    out: ret
    H2:  reload the register arguments from their spill slots
         <displaced instructions, relocated>
         jmp <site end>

`call H` pushes a return address inside F and H *tail-jumps*, so time.Sleep (gopanic) runs as if
F called it: traceback, stack growth and GC see F's real frame and no cave address is ever a
frame. The callee may spill its own register arguments into F's outgoing area, so F's frame must
have that much scratch below its saved frame pointer (`FrameSetup.scratch`). Under ABI0 (386,
old amd64) arguments already live on the stack: nothing to spill, the callee's arguments go to
[SP+ptrsize] in H, which is F's scratch too. panic's route is only `call H` (it never returns).

args (an entry stub, no call out of F) lives in args_stub.py.

Data (strings, errors.errorString, the arm byte) follows the code in the same cave block.
"""
from typing import Callable, Sequence

from ..abi import ParamLocation
from ..errors import BladeError, Code
from ..patch import ARM, CAVE, ROUTE, Patch, split_values
from . import values as V
from .asm import Asm, C, I, R, absolute, load, mem, store
from .conditions_x86 import emit_prefix_into
from .image import DataArea, word
from .placement import FunctionCode, call, falls_through, jump, relocate
from .placement_x86 import CALL_LEN, JMP_LEN
from .plans import check_panic_value, FaultPlan, PanicSymbols, PanicValue, parse_panic_value  # noqa: F401
from .plans import NS_PER_MS, RUNTIME_PACKAGES  # noqa: F401
from .plans import armed_value as _armed
from .plans import refuse_unsafe_callout as _refuse_unsafe_callout, register_spills as _regs

ALIGN = 16
INT3 = b"\xcc"


# --------------------------------------------------------------------------- shared pieces

def _sp(arch):
    return R.RSP if arch.bitness == 64 else R.ESP


def _block(code: bytes, data: bytes) -> bytes:
    if not data:
        return code
    pad = (-len(code)) % ALIGN
    return code + INT3 * pad + data


def _data_base(stub: int, code_len: int) -> int:
    return stub + code_len + (-code_len) % ALIGN


def _callout_plan(code: FunctionCode, params, allocate, read_original, need: int,
                  fill: Callable, data_fill: Callable, with_h2: bool, arm: bool, head: str,
                  values: bool = False) -> FaultPlan:
    """Assemble H (+H2) in a cave and build the [cave, route(, arm)] patches.

    data_fill(area) lays out H's data and returns what fill needs; fill(asm, what, arm_addr,
    armed) emits H's body after the spills, ending in a tail jump. values: the data is handed
    to the program (panic's value), so it is a `value` patch of its own. Sizes never depend on
    addresses or values, so a probe assembly sizes the cave before it is allocated."""
    arch = code.arch
    site = code.after_frame_setup_site(need)
    fr = code.frame
    sp = _sp(arch)
    regs = _regs(params)

    def emit(stub: int, data_base: int, armed: int):
        a = Asm(arch)
        area = DataArea(data_base)
        what = data_fill(area)
        arm_addr = area.put(b"\x00") if arm else None
        a.label("H")
        for reg, size, off in regs:
            a.add(store(sp, 8 + fr.sp_delta + off, reg, size))
        fill(a, what, arm_addr, armed)
        if with_h2:
            a.label("H2")
            for reg, size, off in regs:
                a.add(load(reg, size, sp, fr.sp_delta + off))
            a.raw(lambda at: relocate(site, at), site.relocated_len)
            if falls_through(site):
                a.branch("jmp", site.end)
        return a, area, arm_addr

    near = code.addr  # a probe next to F: in reach of everything the stub refers to
    probe, probe_area, _ = emit(near, near + 0x1000, 1)
    code_len = probe.size(near)
    total = len(_block(b"\x00" * code_len, bytes(probe_area.buf)))
    stub = allocate(total)
    original = bytes(read_original(stub, total))
    data_base = _data_base(stub, code_len)
    _, _, arm_addr = emit(stub, data_base, 1)
    orig = original[arm_addr - stub] if arm else 0
    asm_, area, arm_addr = emit(stub, data_base, _armed(orig))
    body, labels, text = asm_.assemble(stub)
    data = bytearray(area.buf)
    if arm:  # disarmed = the file's byte there, so the cave patch leaves it as it is
        data[arm_addr - area.base] = orig
    block = _block(body, bytes(data))
    if len(block) != total:
        raise BladeError(Code.UNEXPECTED_STATUS, "fault stub size changed with its address")
    route = bytearray(_branch_bytes(arch, "call", site.addr, labels["H"]))
    if with_h2:
        route += _branch_bytes(arch, "jmp", site.addr + CALL_LEN, labels["H2"])
    route += INT3 * (site.length - len(route))
    cave = Patch(stub, original, block, CAVE)
    patches = [*(split_values(cave, data_base) if values else [cave]),
               Patch(site.addr, site.original, bytes(route), ROUTE)]
    if arm:
        patches.append(Patch(arm_addr, bytes([orig]), bytes([_armed(orig)]), ARM))
    listing = (f"{head}\n{text}\nroute at {site.addr:#x}: {bytes(route).hex(' ')}"
               f"   (call H{'; jmp H2' if with_h2 else ''}; int3 padding)\n"
               f"displaced:\n{site.listing()}")
    return FaultPlan(patches, stub, code_len, len(data), site.addr, listing)


def _branch_bytes(arch, kind: str, src: int, dst: int) -> bytes:
    return (call if kind == "call" else jump)(src, dst, arch)


# --------------------------------------------------------------------------- delay

def plan_delay(code: FunctionCode, params: Sequence[ParamLocation], regabi: bool, sleep: int,
               time_ms: int, offset_ms: int, allocate: Callable[[int], int],
               read_original: Callable[[int, int], bytes], conds=None, counters=None
               ) -> FaultPlan:
    """Every call of F first sleeps time_ms (uniformly +- offset_ms, per call) in its own
    goroutine. `sleep`: runtime address of time.Sleep (ABIInternal under the register ABI)."""
    arch = code.arch
    _refuse_unsafe_callout(code, 8, "delay", context_ok=False)
    if offset_ms < 0 or offset_ms > time_ms:
        raise BladeError(Code.PARAMETER_ILLEGAL, "--offset must be between 0 and --time")
    base_ns = (time_ms - offset_ms) * NS_PER_MS
    span = 2 * offset_ms + 1
    sp = _sp(arch)

    def fill(a: Asm, area, arm_addr, armed):
        a.add(I.create_mem_u32(C.CMP_RM8_IMM8, absolute(arm_addr, arch.bitness), armed))
        a.branch("jne", "out")
        if conds is not None:  # issue 10: a call the conditions reject just goes on
            emit_prefix_into(a, conds, "out", counters, area, arch.ptrsize + code.frame.sp_delta,
                             bp_saved=bool(code.frame.sets_bp))
        if offset_ms:  # rdtsc's low bits: a cheap per-call uniform pick in [0, span)
            a.add(I.create(C.RDTSC), I.create_reg_reg(C.XOR_R32_RM32, R.EDX, R.EDX),
                  I.create_reg_u32(C.MOV_R32_IMM32, R.ECX, span), I.create_reg(C.DIV_RM32, R.ECX))
        if arch.bitness == 64:
            if offset_ms:
                a.add(I.create_reg_reg_i32(C.IMUL_R64_RM64_IMM32, R.RAX, R.RDX, NS_PER_MS),
                      I.create_reg_u64(C.MOV_R64_IMM64, R.RCX, base_ns),
                      I.create_reg_reg(C.ADD_R64_RM64, R.RAX, R.RCX))
            else:
                a.add(I.create_reg_u64(C.MOV_R64_IMM64, R.RAX, base_ns))
            if not regabi:  # amd64 ABI0: the argument lives on the stack
                a.add(I.create_mem_reg(C.MOV_RM64_R64, mem(sp, 8), R.RAX))
        else:
            if offset_ms:
                a.add(I.create_reg_reg(C.MOV_R32_RM32, R.EAX, R.EDX),
                      I.create_reg_u32(C.MOV_R32_IMM32, R.ECX, NS_PER_MS),
                      I.create_reg(C.MUL_RM32, R.ECX),
                      I.create_reg_u32(C.ADD_RM32_IMM32, R.EAX, base_ns & 0xFFFFFFFF),
                      I.create_reg_u32(C.ADC_RM32_IMM32, R.EDX, base_ns >> 32),
                      I.create_mem_reg(C.MOV_RM32_R32, mem(sp, 4), R.EAX),
                      I.create_mem_reg(C.MOV_RM32_R32, mem(sp, 8), R.EDX))
            else:
                a.add(I.create_mem_u32(C.MOV_RM32_IMM32, mem(sp, 4), base_ns & 0xFFFFFFFF),
                      I.create_mem_u32(C.MOV_RM32_IMM32, mem(sp, 8), base_ns >> 32))
        a.branch("jmp", sleep)
        a.label("out")
        a.ret()

    return _callout_plan(code, params, allocate, read_original, CALL_LEN + JMP_LEN, fill,
                         lambda area: area, True, True,
                         f"H (delay {time_ms} ms +- {offset_ms} ms, tail call of time.Sleep):")


# --------------------------------------------------------------------------- panic

def plan_panic(code: FunctionCode, params: Sequence[ParamLocation], regabi: bool,
               value: PanicValue, syms: PanicSymbols, allocate: Callable[[int], int],
               read_original: Callable[[int, int], bytes], conds=None, counters=None
               ) -> FaultPlan:
    """Every call of F panics with `value` as if panic(value) were its first statement.
    With conditions (issue 10) a rejected call returns from H into `jmp H2` and F goes on."""
    arch = code.arch
    ptr = arch.ptrsize
    _refuse_unsafe_callout(code, 2 * ptr, "panic", context_ok=True, bp_usable=True)
    check_panic_value(value, syms)
    sp = _sp(arch)
    wide = arch.bitness == 64
    t_reg, d_reg = (R.RAX, R.RBX) if wide else (R.EAX, R.ECX)
    mov = C.MOV_R64_RM64 if wide else C.MOV_R32_RM32

    def movi(r, v):
        return I.create_reg_u64(C.MOV_R64_IMM64, r, v) if wide else \
            I.create_reg_u32(C.MOV_R32_IMM32, r, v)

    def data_fill(area: DataArea):
        if value.kind in (V.STRING, V.ERROR):  # string header / errorString{s string}
            s = area.put(value.data) if value.data else 0
            return area.put(word(s, ptr) + word(len(value.data), ptr), align=ptr)
        return None

    def fill(a: Asm, what, _arm, _armed):
        header, area = what
        if conds is not None:
            emit_prefix_into(a, conds, "out", counters, area, arch.ptrsize + code.frame.sp_delta,
                             bp_saved=bool(code.frame.sets_bp))
        if value.kind == V.STRING:   # (type of string, &header)
            a.add(I.create_reg_mem(mov, t_reg, absolute(syms.string_type_slot, arch.bitness)),
                  movi(d_reg, header))
        elif value.kind == V.ERROR:  # (itab._type, &errorString): errors.New's value, boxed
            a.add(movi(t_reg, syms.errorstring_itab),
                  I.create_reg_mem(mov, t_reg, mem(t_reg, ptr)), movi(d_reg, header))
        else:
            addr, t = syms.variable
            if t.name == "string":   # (type of string, &the variable)
                a.add(I.create_reg_mem(mov, t_reg, absolute(syms.string_type_slot, arch.bitness)),
                      movi(d_reg, addr))
            else:  # an interface variable: its two words, an itab becoming its _type
                a.add(I.create_reg_mem(mov, t_reg, absolute(addr, arch.bitness)),
                      I.create_reg_mem(mov, d_reg, absolute(addr + ptr, arch.bitness)))
                if t.kind.name == "IFACE":  # nil stays nil (gopanic handles panic(nil))
                    test = C.TEST_RM64_R64 if wide else C.TEST_RM32_R32
                    a.add(I.create_reg_reg(test, t_reg, t_reg))
                    a.branch("je", "boxed")
                    a.add(I.create_reg_mem(mov, t_reg, mem(t_reg, ptr)))
                    a.label("boxed")
        if code.frame.saved_bp:
            # F never resumes: unlink its frame from the frame-pointer chain (RBP <- the
            # caller's), so gopanic may spill its argument over F's saved RBP without breaking
            # frame-pointer unwinders (the pc/sp traceback does not use RBP).
            a.add(I.create_reg_mem(C.MOV_R64_RM64, R.RBP, mem(R.RBP)))
        if not regabi:  # ABI0: gopanic's argument goes on the stack above the return address
            st = C.MOV_RM64_R64 if wide else C.MOV_RM32_R32
            a.add(I.create_mem_reg(st, mem(sp, ptr), t_reg),
                  I.create_mem_reg(st, mem(sp, 2 * ptr), d_reg))
        a.branch("jmp", syms.gopanic)
        if conds is not None:
            a.label("out")
            a.ret()

    need, h2 = (CALL_LEN + JMP_LEN, True) if conds is not None else (CALL_LEN, False)
    return _callout_plan(code, params, allocate, read_original, need, fill,
                         lambda area: (data_fill(area), area), h2, False,
                         f"H (panic {value.text}, tail call of runtime.gopanic):", values=True)
