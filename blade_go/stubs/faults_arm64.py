"""delay and panic on arm64: a call out of F from right after its frame setup (faults.py's plan,
read it first), in A64.

F's first instructions after the frame setup become `bl H; b H2` (panic without conditions:
`bl H` alone). F's frame setup has saved LR at [SP] (Go's arm64 prologue: `str x30,[sp,#-N]!;
stur x29,[sp,#-8]; sub x29,sp,#8`), and Go treats R30 as scratch in a body that has a frame
(abi-internal.md, arm64), so the BL may overwrite it. LR = site+4, a PC inside F:

    H:   spill F's register arguments (R0-R15, F0-F15) to their spill slots
                                          ; [SP + N + off]: SP at entry + off (the GC sees them)
         ldrb w16, arm; cmp w16, #ARMED; b.ne out       (delay only: destroy disarms)
         [condition prefix]               ; to out when the call runs as is (F's LR at [SP])
         x0 <- duration (CNTVCT_EL0 for the per-call offset)   (panic: x0, x1 <- the interface)
         b time.Sleep                                    (panic: b runtime.gopanic)
    out: ret                              ; to site+4: `b H2`
    H2:  reload the register arguments; <displaced instructions, relocated>; b <site end>

time.Sleep (gopanic) thus runs as if F had called it from site: its return address is site+4
with F's frame complete, traceback, stack growth and the GC see F's real frame, and no cave
address is ever saved on a goroutine's stack. A callee spills its register arguments into its
caller's outgoing area at [SP+8...] (time.Sleep: `str x0,[sp,#N+8]`), which right after the
frame setup is F's own scratch (FrameSetup.scratch, from SP+8 on arm64); F's saved frame pointer
lies below SP (at [SP-8]), out of the callee's way, so panic needs no unlinking on arm64.
"""
from typing import Callable, Sequence

from ..abi import ParamLocation
from ..errors import BladeError, Code
from ..patch import ARM, CAVE, ROUTE, Patch, split_values
from . import encoder_arm64 as E
from . import values as V
from .asm_arm64 import Asm64, listing_text
from .conditions import COUNTERS, emit_prefix
from .plans import check_panic_value, NS_PER_MS, FaultPlan, PanicSymbols, PanicValue
from .plans import armed_value as _armed, \
    refuse_unsafe_callout as _refuse_unsafe_callout, register_spills as _regs
from .image import DataArea, word

ALIGN = 16
BRK = E.brk(0xB1AD)


def _block(code: bytes, data: bytes) -> bytes:
    if not data:
        return code
    pad = (-len(code)) % ALIGN
    return code + BRK * (pad // 4) + data


def _data_base(stub: int, code_len: int) -> int:
    return stub + code_len + (-code_len) % ALIGN


def _spill(a: Asm64, regs, base_off: int, load: bool):
    """str/ldr of each register argument at [SP + base_off + its spill offset]."""
    for reg, size, off in regs:
        name = reg.upper()
        fp = name.startswith("F")
        at = base_off + off
        f = E.ldr if load else E.str_
        a.op(f(E.reg(name), E.SP, at, size, fp=fp),
             f"{'ldr' if load else 'str'} {name.lower()}, [sp, #{at:#x}]   ; spill slot")


def emit_prefix_into(a: Asm64, conds, skip: str, counters: int, area: DataArea,
                     sp_bias: int = 0, after_frame_setup: bool = False):
    """The condition prefix in a fault stub: `sp_bias` = how far SP here lies below SP at F's
    entry; after_frame_setup: LR was reused (the caller's return address is F's saved LR at
    [SP]) and R29 is F's own frame pointer."""
    a.symbols[COUNTERS] = counters
    for name, data in conds.constants():
        a.symbols[name] = area.put(data, align=8)
    a.sp_bias, a.bp_saved, a.lr_saved = sp_bias, after_frame_setup, after_frame_setup
    emit_prefix(a, conds, skip)
    a.sp_bias, a.bp_saved, a.lr_saved = 0, False, False


def _refuse(code, area: int, what: str, context_ok: bool, regabi: bool):
    if not regabi:
        raise BladeError(Code.ACTION_NOT_SUPPORT, f"{what} on arm64 needs Go's register ABI "
                                                  "(Go >= 1.18)")
    _refuse_unsafe_callout(code, area, what, context_ok=context_ok)


def _callout_plan(code, params, allocate, read_original, fill, data_fill, with_h2: bool,
                  arm: bool, head: str, values: bool = False) -> FaultPlan:
    from .placement_arm64 import call, falls_through, jump, relocate
    site = code.after_frame_setup_site(8 if with_h2 else 4)
    fr = code.frame
    regs = _regs(params)

    def emit(data_base: int, armed: int):
        a = Asm64()
        area = DataArea(data_base)
        what = data_fill(area)
        arm_addr = area.put(b"\x00") if arm else None
        a.label("H")
        _spill(a, regs, fr.sp_delta, load=False)
        fill(a, what, area, arm_addr, armed)
        if with_h2:
            a.label("H2")
            _spill(a, regs, fr.sp_delta, load=True)
            a.raw(lambda at: relocate(site, at), site.relocated_len,
                  f"(displaced, relocated: {'; '.join(i.text for i in site.instructions)})")
            if falls_through(site):
                a.b(site.end)
        return a, area, arm_addr

    probe, probe_area, _ = emit(code.addr + 0x1000, 1)
    code_len = probe.size()
    total = len(_block(bytes(code_len), bytes(probe_area.buf)))
    stub = allocate(total)
    original = bytes(read_original(stub, total))
    data_base = _data_base(stub, code_len)
    _, _, arm_addr = emit(data_base, 1)
    orig = original[arm_addr - stub] if arm else 0
    asm, area, arm_addr = emit(data_base, _armed(orig))
    body, listing = asm.assemble(stub)
    data = bytearray(area.buf)
    if arm:  # disarmed = the file's byte there, so the cave patch leaves it as it is
        data[arm_addr - area.base] = orig
    block = _block(body, bytes(data))
    if len(block) != total:
        raise BladeError(Code.UNEXPECTED_STATUS, "fault stub size changed with its address")
    labels = {t[:-1]: a for a, c, t in listing if not c}
    route = call(site.addr, labels["H"])
    if with_h2:
        route += jump(site.addr + 4, labels["H2"])
    cave = Patch(stub, original, block, CAVE)
    patches = [*(split_values(cave, data_base) if values else [cave]),
               Patch(site.addr, site.original, route, ROUTE)]
    if arm:
        patches.append(Patch(arm_addr, bytes([orig]), bytes([_armed(orig)]), ARM))
    text = (f"{head}\n{listing_text(listing)}\nroute at {site.addr:#x}: {route.hex(' ')}"
            f"   (bl H{'; b H2' if with_h2 else ''})\ndisplaced:\n{site.listing()}")
    return FaultPlan(patches, stub, code_len, len(data), site.addr, text)


# --------------------------------------------------------------------------- delay

def plan_delay(code, params: Sequence[ParamLocation], regabi: bool, sleep: int, time_ms: int,
               offset_ms: int, allocate: Callable[[int], int],
               read_original: Callable[[int, int], bytes], conds=None, counters=None
               ) -> FaultPlan:
    """faults.plan_delay on arm64: every call of F first sleeps time_ms (uniformly
    +- offset_ms per call) in its own goroutine. `sleep`: runtime address of time.Sleep."""
    _refuse(code, 8, "delay", False, regabi)
    if offset_ms < 0 or offset_ms > time_ms:
        raise BladeError(Code.PARAMETER_ILLEGAL, "--offset must be between 0 and --time")
    base_ns = (time_ms - offset_ms) * NS_PER_MS
    span = 2 * offset_ms + 1

    def fill(a: Asm64, _what, area, arm_addr, armed):
        a.adr_sym(16, arm_addr)
        a.op(E.ldr(16, 16, 0, 1), "ldrb w16, [x16]   ; the arm byte")
        a.op(E.cmp_imm(16, armed, 4), f"cmp w16, #{armed}")
        a.bcond("ne", "out")
        if conds is not None:  # a call the conditions reject just goes on
            emit_prefix_into(a, conds, "out", counters, area, code.frame.sp_delta, True)
        a.mov64(0, base_ns, f"mov x0, #{base_ns}   ; ns")
        if offset_ms:  # the virtual counter's value mod span: a cheap per-call pick
            a.op(E.mrs_cntvct(16), "mrs x16, cntvct_el0")
            a.mov64(17, span)
            a.op(E.udiv(19, 16, 17), "udiv x19, x16, x17")
            a.op(E.msub(16, 19, 17, 16), "msub x16, x19, x17, x16   ; x16 = counter % span")
            a.mov64(17, NS_PER_MS)
            a.op(E.madd(0, 16, 17, 0), "madd x0, x16, x17, x0   ; + pick ms")
        a.b(sleep)
        a.label("out")
        a.op(E.ret(), "ret   ; to `b H2` in F")

    return _callout_plan(code, params, allocate, read_original, fill, lambda area: None,
                         True, True,
                         f"H (delay {time_ms} ms +- {offset_ms} ms, tail call of time.Sleep):")


# --------------------------------------------------------------------------- panic

def plan_panic(code, params: Sequence[ParamLocation], regabi: bool, value: PanicValue,
               syms: PanicSymbols, allocate: Callable[[int], int],
               read_original: Callable[[int, int], bytes], conds=None, counters=None
               ) -> FaultPlan:
    """faults.plan_panic on arm64: every call of F panics with `value` as if panic(value) were
    its first statement; with conditions a rejected call returns from H into `b H2`."""
    _refuse(code, 16, "panic", True, regabi)
    check_panic_value(value, syms)

    def data_fill(area: DataArea):
        if value.kind in (V.STRING, V.ERROR):  # string header / errorString{s string}
            s = area.put(value.data) if value.data else 0
            return area.put(word(s, 8) + word(len(value.data), 8), align=8)
        return None

    def fill(a: Asm64, header, area, _arm, _armed):
        if conds is not None:
            emit_prefix_into(a, conds, "out", counters, area, code.frame.sp_delta, True)
        if value.kind == V.STRING:   # (type of string, &header)
            a.adr_sym(0, syms.string_type_slot)
            a.op(E.ldr(0, 0, 0), "ldr x0, [x0]   ; string's type")
            a.adr_sym(1, header)
        elif value.kind == V.ERROR:  # (itab._type, &errorString): errors.New's value, boxed
            a.adr_sym(0, syms.errorstring_itab)
            a.op(E.ldr(0, 0, 8), "ldr x0, [x0, #8]   ; itab._type")
            a.adr_sym(1, header)
        else:
            addr, t = syms.variable
            if t.name == "string":
                a.adr_sym(0, syms.string_type_slot)
                a.op(E.ldr(0, 0, 0), "ldr x0, [x0]   ; string's type")
                a.adr_sym(1, addr)
            else:  # an interface variable: its two words, an itab becoming its _type
                a.adr_sym(1, addr)
                a.op(E.ldr(0, 1, 0), "ldr x0, [x1]   ; type or itab")
                a.op(E.ldr(1, 1, 8), "ldr x1, [x1, #8]   ; data")
                if t.kind.name == "IFACE":  # nil stays nil (gopanic handles panic(nil))
                    a.cbz(0, "boxed")
                    a.op(E.ldr(0, 0, 8), "ldr x0, [x0, #8]   ; itab._type")
                    a.label("boxed")
        a.b(syms.gopanic)
        if conds is not None:
            a.label("out")
            a.op(E.ret(), "ret   ; to `b H2` in F")

    return _callout_plan(code, params, allocate, read_original, fill, data_fill,
                         conds is not None, False,
                         f"H (panic {value.text}, tail call of runtime.gopanic):", values=True)
