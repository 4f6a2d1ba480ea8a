"""`return` under conditions: at F's entry, or at every return of F (`--after`).

At the entry (the route replaces F's first instructions, the "site"):

    stub:  [the site's instructions, relocated]   ; Go's stack check: cmp rsp,[r14+0x10];
                                                  ; jbe morestack (rel32 now)
           [condition prefix]          ; jumps to skip when the call must run untouched
           [load the values] ret       ; planner.stub_code, as for an unconditional return
    skip:  jmp site.end                ; back into F, which runs as if never patched

The stack check runs first because its slow path (morestack) comes back to F's entry, so a
prefix placed before it would decide (and count) a call that grows its stack twice. That order
needs displaced instructions that only check (see `check_first`); otherwise (a frameless leaf,
which has no stack check and so no second pass) the prefix comes first and `skip` runs the
relocated instructions.

After F's body (`--after`): every RET of F with the instructions before it that make up 5
bytes (the epilogue, e.g. `add rsp,0x18; pop rbp; ret`) is routed to its own stub:

    stub_i: [site_i's instructions but the RET, relocated]   ; F's epilogue: SP back at entry
            [condition prefix]  [load the values] ret
    skip_i: ret                                              ; F's own results stand

All stubs of one experiment share the counters and the value data. Matchers read arguments,
which are gone by the time F returns (the register ABI reuses their registers), so `--after`
takes --effect-count/--effect-percent only. F's return paths must all end in a RET of F: a
direct jump out of F (a tail call) is refused, as is a RET whose epilogue cannot be displaced
(a branch of F lands inside it).

Patches: [cave (code + read-only data), counters (writable, role DATA), routes...].
"""
from typing import Callable, List, Sequence

from ..abi import ResultLocation
from ..errors import BladeError, Code
from ..patch import CAVE, DATA, ROUTE, Patch, split_values
from . import values as V
from .conditions import COUNTERS, COUNTERS_ALIGN, SKIP, Conditions, \
    backend, emit_prefix, listing_text
from .conditions_x86 import Asm
from .image import DataArea, Resolver, build_images
from .placement import FunctionCode, Site, falls_through, jump, relocate
from .placement_x86 import JMP_LEN
from .planner import ALIGN, encoder_for, stub_code
from .plans import refuse_after_without_rets, ConditionalPlan

_DUMMY = 0x7FFF0000


def _align(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


def return_sites(code: FunctionCode) -> List[Site]:
    """For each RET of F, the whole instructions ending with it that cover a 5-byte jmp."""
    refuse_after_without_rets(code)
    rets = code.return_sites()
    index = {i.addr: k for k, i in enumerate(code.insns)}
    sites = []
    for ret in rets:
        k = index[ret]
        start, length = k, len(code.insns[k].code)
        while length < JMP_LEN and start > 0:
            start -= 1
            length += len(code.insns[start].code)
        if length < JMP_LEN:
            raise BladeError(Code.PARAMETER_INVALID,
                             f"--after: {code.name} is too short before its return at {ret:#x}")
        first = code.insns[start].addr
        try:
            # placement's own checks: whole instructions, no call inside, no branch of F
            # landing strictly inside the bytes the jmp replaces
            site = code._site(first, length, start_target_ok=True,
                              where=f"before its return at {ret:#x}")
        except BladeError as e:
            raise BladeError(Code.PARAMETER_INVALID,
                             f"--after: every return of F must be patched, but {e.message}") from None
        if site.instructions[-1].addr != ret:
            raise BladeError(Code.PARAMETER_INVALID, f"--after: the site before {ret:#x} does "
                                                     "not end with its RET")
        sites.append(site)
    return sites


def check_first(code: FunctionCode, site: Site) -> bool:
    """Whether the displaced instructions are F's stack check and may run before the prefix:
    they fall through, write no memory and no register but the prefix's scratch ones (the
    check's `lea r12` on big frames, ECX on 386), so the prefix and the action still see F's
    arguments untouched; and each conditional branch among them goes to a morestack block (a
    run of F's code that calls and then jumps back to F's entry), never into F's body, which
    would bypass the prefix."""
    import iced_x86 as x86
    R = x86.Register
    scratch = ({R.R12, R.R12D, R.R12W, R.R12L, R.R13, R.R13D, R.R13W, R.R13L}
               if site.arch.bitness == 64 else {R.EAX, R.AX, R.AL, R.AH, R.ECX, R.CX, R.CL, R.CH})
    writes = (x86.OpAccess.WRITE, x86.OpAccess.READ_WRITE, x86.OpAccess.COND_WRITE,
              x86.OpAccess.READ_COND_WRITE)
    if site.instructions[-1].flow != "cond":
        return False  # the check must end the displaced run (what it computes dies there)
    info = x86.InstructionInfoFactory()
    for i in site.instructions:
        if i.flow not in ("next", "cond"):
            return False
        used = info.info(i.raw)
        if any(m.access in writes for m in used.used_memory()):
            return False
        if any(u.access in writes and u.register not in scratch for u in used.used_registers()):
            return False
        if i.flow == "cond" and not _comes_back(code, i.target):
            return False
    return True


def entry_site(code: FunctionCode) -> Site:
    """The entry site for a conditional stub: F's whole stack check when check_first accepts
    it (on 386, `mov ecx,gs:[0]; mov ecx,[ecx-4]; cmp esp,[ecx+8]; jbe`, and on amd64 big frames
    `lea r12,[rsp-N]; cmp r12,[r14+0x10]; jbe`, are longer than the 5-byte jmp), else the first
    5 bytes. The route still writes 5 bytes: the rest of the check stays as it was."""
    run = []
    for i in code.insns[:6]:
        run.append(i)
        if i.flow != "next":
            break
    length = sum(len(i.code) for i in run)
    if run and run[-1].flow == "cond" and length >= JMP_LEN:
        try:
            site = code.entry_site(length)
        except BladeError:
            site = None
        if site is not None and check_first(code, site):
            return site
    return code.entry_site(JMP_LEN)


def _comes_back(code: FunctionCode, target: int) -> bool:
    """The straight run of F's code at `target` makes a call and ends jumping to F's entry."""
    run = [i for i in code.insns if i.addr >= target]
    called = False
    for i in run[:64]:
        if i.flow == "call":
            called = True
        elif i.flow == "branch":
            return called and i.target == code.addr
        elif i.flow != "next":
            return False
    return False


def _without_ret(site: Site) -> Site:
    return Site(site.addr, site.need, site.instructions[:-1], site.arch)


def plan_conditional_return(results: Sequence[ResultLocation], values: Sequence[V.Value],
                            conds: Conditions, arch: str, ptrsize: int, resolve: Resolver,
                            allocate: Callable[[int], int],
                            allocate_data: Callable[[int, int], int], code: FunctionCode,
                            read_original: Callable[[int, int], bytes],
                            after: bool = False) -> ConditionalPlan:
    """Patches for `return values` under `conds`, at F's entry or (after=True) at its returns.

    `allocate(n)` gives n executable cave bytes within rel32 reach of F; `allocate_data(n,
    align)` n writable bytes (zeros) within rel32 reach of the cave; `read_original(addr, n)`
    the bytes there in the executable (the session verifies them live before writing).
    """
    if after and conds.matches:
        raise BladeError(Code.PARAMETER_ILLEGAL,
                         "--match cannot be combined with --after: F's arguments are overwritten "
                         "by the time it returns (registers are reused); match at the entry "
                         "instead, or use --effect-count/--effect-percent with --after")
    enc = encoder_for(arch, ptrsize)
    backend(arch)  # refuses an unsupported arch early
    sites = return_sites(code) if after else [entry_site(code)]

    def build(images) -> Asm:
        asm = Asm(arch)
        values_code = stub_code(enc, results, images)
        for k, site in enumerate(sites):
            skip = f"{SKIP}{k}"
            asm.label(f"site{k}")
            first = not after and check_first(code, site)
            if first:
                asm.raw(lambda at, s=site: relocate(s, at), "(F's entry, relocated: "
                        f"{'; '.join(i.text for i in site.instructions)})")
            if after:
                head = _without_ret(site)
                if head.instructions:
                    asm.raw(lambda at, s=head: relocate(s, at), f"(F's epilogue, relocated: "
                            f"{'; '.join(i.text for i in head.instructions)})")
            emit_prefix(asm, conds, skip)
            for insn in values_code:
                asm.raw(lambda at, c=insn.code: c, insn.text)
            asm.label(skip)
            if after:
                asm.raw(lambda at: b"\xC3", "ret   (F's own results)")
            else:
                if not first:
                    asm.raw(lambda at, s=site: relocate(s, at), "(F's entry, relocated: "
                            f"{'; '.join(i.text for i in site.instructions)})")
                if falls_through(site):
                    asm.ins(lambda sym, s=site: _jmp(arch, s.end))
        return asm

    # pass 1: sizes (the value images' data lengths do not depend on where it lives)
    images, vdata = build_images(results, values, ptrsize, resolve, _DUMMY)
    consts = conds.constants()
    code_len = build(images).size(near=code.addr)
    data_len = len(vdata) + sum(len(b) + 8 for _, b in consts) + 8
    stub = allocate(_align(code_len) + data_len)
    counters = allocate_data(conds.counters_size, COUNTERS_ALIGN)

    # pass 2: real addresses
    data_addr = stub + _align(code_len)
    images, vdata2 = build_images(results, values, ptrsize, resolve, data_addr)
    area = DataArea(data_addr)
    area.put(vdata2)
    symbols = {COUNTERS: counters}
    for name, b in consts:
        symbols[name] = area.put(b, align=8)
    asm = build(images)
    body, listing = asm.assemble(stub, symbols)
    if len(body) != code_len or len(vdata2) != len(vdata):
        raise AssertionError("stub size changed with its address")
    block = body + b"\xCC" * (_align(code_len) - code_len) + bytes(area.buf)
    labels = {t[:-1]: a for a, c, t in listing if not c}

    # code, then the data (values handed out, match constants) as a patch of its own
    patches = [*split_values(Patch(stub, bytes(read_original(stub, len(block))), block, CAVE),
                             data_addr),
               Patch(counters, bytes(conds.counters_size), conds.counters_image(ptrsize), DATA)]
    for k, site in enumerate(sites):
        try:
            jmp = jump(site.addr, labels[f"site{k}"], site.arch)
        except BladeError:
            raise BladeError(Code.UNEXPECTED_STATUS, f"no room for the stub: the cave at "
                             f"{stub:#x} is out of jmp reach of {site.addr:#x}") from None
        patches.append(Patch(site.addr, site.original[:JMP_LEN], jmp, ROUTE))
    text = listing_text(listing)
    text += f"\n{counters:#010x}  (counters: seen, faulted, count ticket, draw state" + \
        (", blast-radius table)" if conds.radius else ")")
    for k, site in enumerate(sites):
        text += f"\n{site.addr:#010x}  jmp {labels[f'site{k}']:#x}   (route)"
    return ConditionalPlan(patches, stub, code_len, len(area.buf), counters,
                           tuple(s.addr for s in sites), layout=conds.layout(arch), listing=text)


def _jmp(arch: str, dst: int):
    import iced_x86 as x86
    code = x86.Code.JMP_REL32_64 if arch == "amd64" else x86.Code.JMP_REL32_32
    return x86.Instruction.create_branch(code, dst)
