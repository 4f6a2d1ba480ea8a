"""`return` under conditions on arm64: at F's entry, or at every `ret` of F (`--after`).

The same plan as conditions_return.py (read it first), in A64:

    entry:  F's first instruction becomes `b stub`
    stub:   [F's stack check, relocated]   ; ldr x16,[x28,#16]; cmp sp,x16; b.hi .+8; b morestack
            [condition prefix]             ; conditions_arm64: to skip when the call runs as is
            [load the values] ret          ; results into R0-R15/F0-F15 and [SP+8+...]; LR is
                                           ; still the caller's return address
    skip:   b <F's entry + the check>      ; back into F, which runs as if never patched

The stack check runs first when F's first instructions are exactly that check (they write X16
and the flags only, and their branch goes to a morestack block that comes back to F's entry):
a call that grows its stack is then decided and counted once. Otherwise (a frameless leaf: no
check, no second pass) the prefix comes first and skip runs the relocated first instruction.

`--after`: each `ret` of F (4 bytes: the route displaces only it, so no branch of F can land
inside the site) becomes `b stub_i`: F's epilogue has run, LR holds the caller's return address,
F's results are in their registers; stub_i = [prefix] [values] ret, skip_i = ret.

Patches: [cave (code + read-only data), counters (writable, role DATA), routes...].
"""
from typing import Callable, Sequence

from ..abi import ResultLocation
from ..errors import BladeError, Code
from ..patch import CAVE, DATA, ROUTE, Patch, split_values
from . import encoder_arm64 as E
from . import values as V
from .asm_arm64 import Asm64, listing_text
from .conditions import COUNTERS, COUNTERS_ALIGN, SKIP, Conditions, emit_prefix
from .plans import refuse_after_without_rets, ConditionalPlan
from .image import DataArea, build_images

ALIGN = 16
ROUTE_LEN = 4
_DUMMY = 0x7FFF0000
_CHECK_LOAD = 0xF9400B90   # ldr x16, [x28, #16]   (g.stackguard0)


def _align(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


# ----------------------------------------------------------------------------- sites

def check_run(code) -> int:
    """How many of F's first instructions are its stack check that may run before the prefix
    (0: none). Go's forms: `ldr x16,[x28,#16]; cmp sp,x16; b.ls M` and, for big frames,
    `ldr x16,[x28,#16]; sub x17,sp,#N; cmp x17,x16; b.ls M` (or with the frame size in X27 or
    through `mov x17, #N`...). Accepted when they end in one conditional branch to a morestack
    block (a run of F that calls and comes back to F's entry), and the ones before it write
    nothing but X16, X17, X27 and the flags."""
    insns = code.insns
    if not insns or int.from_bytes(insns[0].code, "little") != _CHECK_LOAD:
        return 0
    for k, i in enumerate(insns[:6]):
        if i.flow == "cond":
            return k + 1 if _comes_back(code, i.target) else 0
        if i.flow != "next" or not _writes_only_scratch(i):
            return 0
    return 0


def _writes_only_scratch(i) -> bool:
    if i.text.split(" ")[0] in ("cmp", "cmn", "tst"):
        return True  # flags only (capstone 5 lists the compared SP as written)
    try:
        _, w = i.raw.regs_access()
    except Exception:  # capstone without details for it: do not guess
        return False
    return all(i.raw.reg_name(x) in ("x16", "w16", "x17", "w17", "x27", "w27", "nzcv")
               for x in w) and i.text.split(" ")[0] not in ("str", "stur", "stp", "strb", "strh")


def _comes_back(code, target) -> bool:
    """The straight run of F's code at `target` makes a call and ends branching to F's entry."""
    run = [i for i in code.insns if target is not None and i.addr >= target]
    called = False
    for i in run[:64]:
        if i.flow == "call":
            called = True
        elif i.flow == "branch":
            return called and i.target == code.addr
        elif i.flow not in ("next",):
            return False
    return False


def return_sites(code) -> list:
    """Each `ret` of F as a one-instruction site; refuses F that leaves by a branch out of F
    (a tail call) as conditions_return does."""
    refuse_after_without_rets(code)
    rets = code.return_sites()
    for i in code.insns:
        if i.flow == "ret" and int.from_bytes(i.code, "little") != 0xD65F03C0:
            raise BladeError(Code.PARAMETER_INVALID,
                             f"--after: {code.name} returns through {i.text} at {i.addr:#x}, "
                             "not LR")
    return [code._site(a, ROUTE_LEN, start_target_ok=True, where=f"at its return {a:#x}")
            for a in rets]


# ----------------------------------------------------------------------------- the plan

def plan_conditional_return(results: Sequence[ResultLocation], values: Sequence[V.Value],
                            conds: Conditions, arch: str, ptrsize: int, resolve,
                            allocate: Callable[[int], int],
                            allocate_data: Callable[[int, int], int], code,
                            read_original: Callable[[int, int], bytes],
                            after: bool = False) -> ConditionalPlan:
    """conditions_return.plan_conditional_return for arm64 (same arguments and result);
    `code` is a placement_arm64.FunctionCodeARM64."""
    from .placement_arm64 import falls_through, jump, relocate
    if arch != "arm64" or ptrsize != 8:
        raise ValueError(f"arm64 planner asked for {arch}/{ptrsize}")
    if after and conds.matches:
        raise BladeError(Code.PARAMETER_ILLEGAL,
                         "--match cannot be combined with --after: F's arguments are overwritten "
                         "by the time it returns (registers are reused); match at the entry "
                         "instead, or use --effect-count/--effect-percent with --after")
    first = 0 if after else check_run(code)
    if after:
        sites = return_sites(code)
    else:
        sites = [code.entry_site(4 * first if first else ROUTE_LEN)]

    # the values: return_arm64.result_code, as for an unconditional return (the words that
    # point into the stub's data are those that differ between two dummy layouts)
    from .return_arm64 import _BASE_A, _BASE_B, _pointer_words, result_code
    img_a, _ = build_images(results, values, ptrsize, resolve, _BASE_A)
    img_b, _ = build_images(results, values, ptrsize, resolve, _BASE_B)
    pointers = [_pointer_words(x, y) for x, y in zip(img_a, img_b)]
    n_words = len(result_code(results, img_a, pointers, _BASE_A - 0x1000))
    shown = ", ".join(v.text for v in values)

    def build(images) -> Asm64:
        a = Asm64()
        for k, site in enumerate(sites):
            skip = f"{SKIP}{k}"
            a.label(f"site{k}")
            if first:
                a.raw(lambda at, s=site: relocate(s, at), site.relocated_len,
                      f"(F's stack check, relocated: {'; '.join(i.text for i in site.instructions)})")
            emit_prefix(a, conds, skip)
            a.ins(lambda at, sym, im=images: result_code(results, im, pointers, at), n_words,
                  f"(the results: {shown}; then ret)")
            a.label(skip)
            if after:
                a.op(E.ret(), "ret   (F's own results)")
                continue
            if not first:
                a.raw(lambda at, s=site: relocate(s, at), site.relocated_len,
                      f"(F's entry, relocated: {'; '.join(i.text for i in site.instructions)})")
            if falls_through(site):
                a.b(site.end)
        return a

    images, vdata = build_images(results, values, ptrsize, resolve, _DUMMY)
    consts = conds.constants()
    code_len = build(images).size()
    data_len = len(vdata) + sum(len(b) + 8 for _, b in consts) + 8
    stub = allocate(_align(code_len) + data_len)
    counters = allocate_data(conds.counters_size, COUNTERS_ALIGN)

    data_addr = stub + _align(code_len)
    images, vdata2 = build_images(results, values, ptrsize, resolve, data_addr)
    area = DataArea(data_addr)
    area.put(vdata2)
    symbols = {COUNTERS: counters}
    for name, b in consts:
        symbols[name] = area.put(b, align=8)
    body, listing = build(images).assemble(stub, symbols)
    if len(body) != code_len or len(vdata2) != len(vdata):
        raise AssertionError("stub size changed with its address")
    pad = _align(code_len) - code_len
    block = body + E.brk(0xB1AD) * (pad // 4) + bytes(area.buf)
    labels = {t[:-1]: a for a, c, t in listing if not c}

    patches = [*split_values(Patch(stub, bytes(read_original(stub, len(block))), block, CAVE),
                             data_addr),
               Patch(counters, bytes(conds.counters_size), conds.counters_image(ptrsize), DATA)]
    for k, site in enumerate(sites):
        route = jump(site.addr, labels[f"site{k}"])
        patches.append(Patch(site.addr, site.original[:ROUTE_LEN], route, ROUTE))
    text = listing_text(listing)
    text += f"\n{counters:#010x}  (counters: seen, faulted, count ticket, draw state" + \
        (", blast-radius table)" if conds.radius else ")")
    for k, site in enumerate(sites):
        text += f"\n{site.addr:#010x}  b {labels[f'site{k}']:#x}   (route)"
    return ConditionalPlan(patches, stub, code_len, len(area.buf), counters,
                           tuple(s.addr for s in sites), layout=conds.layout(arch), listing=text)
