"""arm64 condition blocks (Go's register ABI and ABI0): the prefix of conditions.py on A64.

Scratch registers: X16, X17 (IP0/IP1) and X19-X21 (X22 too in the compact form: "permanent
scratch registers" in Go's abi-internal.md, arm64 section), and the flags. Argument registers R0-R15/F0-F15, R26 (closure
context), R27, R28 (g), R29 (frame pointer), R30 (LR) and SP are never written, so a call the
prefix rejects runs F as if untouched; R18 is never touched at all.

Counters are updated with exclusive load/store loops (LDAXR/STLXR, ARMv8.0: Graviton 1 too,
no LSE needed): a call's update is never lost under concurrency, and the old value comes back
as with amd64's `lock xadd`, so the draw's state and the count's ticket count the calls exactly
as on amd64 (conditions.seen_source). Data (counters, string constants, --caller ranges) is
addressed with ADRP+ADD (+-4 GB from the stub).

Worked example: `--match 'id==42' --effect-count 2` on `func F(id int)` (id in R0), the stub
at 0x10800, the counters at 0x20000 (listing abridged):

    adrp+add x17, counters+0x0      ; seen += 1 (an exclusive loop)
    ldaxr x16,[x17]; add x19,x16,#1; stlxr w21,x19,[x17]; cbnz w21, <ldaxr>
    mov x16, x0                     ; id
    cmp x16, #0x2a ; b.ne skip
    adrp+add x17, counters+0x10     ; the count's ticket
    ldaxr x16,[x17]; add x19,x16,#1; stlxr w21,x19,[x17]; cbnz w21, <ldaxr>
    cmp x16, #2 ; b.hs skip         ; tickets 0 and 1 fault
    adrp+add x17, counters+0x8      ; faulted += 1
    ...

The return address into F's caller is LR (X30) in a prefix that runs at F's entry or at a
return, and F's saved LR at [SP] in one that runs after F's frame setup (delay, panic: LR
then points back into F). Deeper frames follow the frame-pointer chain: at F's entry R29 is
the caller's frame pointer fp, [fp] the next fp and [fp+8] the caller's saved LR (its return
address), as on amd64 (Go's arm64 frame: LR at 0(SP), the caller's R29 at -8(SP)).

The --caller range check is one short loop over the sorted table per frame. The compact form
(`conds.compact`, for small caves) makes the range check, the frame step and the blast-radius
lookup subroutines, emitted once per prefix: a BL would overwrite LR (F's return address at its
entry), so they are reached with `adr x22, back; b sub` and return with `br x22` (X22 is one
more of Go's scratch registers); they may also branch straight to the prefix's own labels
(nothing is pushed anywhere).
"""
from . import encoder_arm64 as E
from .asm_arm64 import Asm64, eor_lsr, extend, ldrs, tst_low3
from .conditions import CALLERS, COUNT, COUNTERS, ENTRY, FAIL_JCC, GOLDEN, NEXT, TABLE, \
    Match, Mem, Reg, Stack, chunks, percent_threshold

S, T, U, V, W = 16, 17, 19, 20, 21  # value, pointer, temporaries, exclusive-store status
LINK = 22  # the compact form's subroutine return address (BL would overwrite LR)
MIX1, MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
G_STACK_LO, G_STACK_HI = 0, 8  # runtime.g: stack.lo, stack.hi

# x86 condition names of conditions.FAIL_JCC -> A64 condition codes
_COND = {"e": "eq", "ne": "ne", "l": "lt", "le": "le", "g": "gt", "ge": "ge", "b": "lo",
         "be": "ls", "a": "hi", "ae": "hs"}


def _gpr(name: str) -> int:
    n = name.upper()
    if not (n.startswith("R") and n[1:].isdigit() and int(n[1:]) < 16):
        raise ValueError(f"{name} is not an arm64 integer argument register")
    return int(n[1:])


class Arm64Conditions:
    name = "arm64"
    ptrsize = 8

    # -- operands ----------------------------------------------------------------------
    def _pointer(self, asm: Asm64, op, skip: str):
        """Leave in T the pointer `op` names (following Mem chains, nil -> skip)."""
        if isinstance(op, Reg):
            asm.op(E.mov_reg(T, _gpr(op.name)), f"mov x{T}, {op.name.lower()}")
        elif isinstance(op, Stack):
            off = asm.sp_bias + op.sp_offset
            asm.op(E.ldr(T, E.SP, off), f"ldr x{T}, [sp, #{off:#x}]")
        else:
            self._deref_base(asm, op, skip)
            asm.op(E.ldr(T, T, op.offset), f"ldr x{T}, [x{T}, #{op.offset:#x}]")

    def _deref_base(self, asm: Asm64, op: Mem, skip: str):
        self._pointer(asm, op.base, skip)
        asm.cbz(T, skip)

    def _load(self, asm: Asm64, op, size: int, signed: bool, skip: str, into=S):
        """Load the `size`-byte value `op` names into `into`, sign/zero-extended to 64 bits."""
        kind = f"{'s' if signed else 'u'}{8 * size}"
        if isinstance(op, Reg):
            r = _gpr(op.name)
            if size == 8:
                asm.op(E.mov_reg(into, r), f"mov x{into}, {op.name.lower()}")
            else:
                asm.op(extend(into, r, size, signed), f"x{into} = {kind}({op.name.lower()})")
            return
        if isinstance(op, Stack):
            base, off = E.SP, asm.sp_bias + op.sp_offset
        else:
            self._deref_base(asm, op, skip)
            base, off = T, op.offset
        if signed and size < 8:
            asm.op(ldrs(into, base, off, size), f"ldrs{kind} x{into}, [{base}, #{off:#x}]")
        else:
            asm.op(E.ldr(into, base, off, size), f"ldr{kind} x{into}, [{base}, #{off:#x}]")

    def _cmp_imm(self, asm: Asm64, k: int, r=S):
        """cmp r, k (k as a 64-bit two's complement constant); may use U."""
        k &= (1 << 64) - 1
        sk = k - (1 << 64) if k >> 63 else k
        if -4096 < sk < 4096:
            asm.op(E.cmp_imm(r, sk), f"cmp x{r}, #{sk}")
        else:
            asm.mov64(U, k)
            asm.op(E.cmp_reg(r, U), f"cmp x{r}, x{U}")

    def _fetch_add(self, asm: Asm64, addr_sym: str, off: int, inc: int = 1, old=S,
                   new=U, inc_reg=None):
        """old = [sym+off]; [sym+off] = old + inc (or + inc_reg), atomically: an exclusive
        loop. T holds the address afterwards."""
        asm.adr_sym(T, addr_sym, off)
        self._fetch_add_at(asm, inc, old, new, inc_reg)

    def _fetch_add_at(self, asm: Asm64, inc: int = 1, old=S, new=U, inc_reg=None):
        again = asm.fresh("excl")
        asm.label(again)
        asm.op(E.ldaxr(old, T), f"ldaxr x{old}, [x{T}]")
        if inc_reg is None:
            asm.op(E.add_imm(new, old, inc), f"add x{new}, x{old}, #{inc}")
        else:
            asm.op(E.add_reg(new, old, inc_reg), f"add x{new}, x{old}, x{inc_reg}")
        asm.op(E.stlxr(W, new, T), f"stlxr w{W}, x{new}, [x{T}]")
        asm.cbnz(W, again, size=4)

    # -- blocks ------------------------------------------------------------------------
    def bump(self, asm: Asm64, offset: int):
        self._fetch_add(asm, COUNTERS, offset)

    def match_int(self, asm: Asm64, m: Match, skip: str):
        self._load(asm, m.operands[0], m.size, m.signed, skip)
        self._cmp_imm(asm, m.value)
        asm.bcond(_COND[FAIL_JCC[m.op][0 if m.signed else 1]], skip)

    def match_string(self, asm: Asm64, m: Match, sym: str, skip: str):
        ptr, length = m.operands
        n = len(m.value)
        differ = asm.fresh("neq")  # != : leave the matcher (true) at the first difference
        self._load(asm, length, 8, False, skip)
        self._cmp_imm(asm, n)
        if m.op == "!=":
            asm.bcond("ne", differ)
        else:
            asm.bcond("ne" if m.op == "==" else "lo", skip)
        if n:
            self._pointer(asm, ptr, skip)
            for off, w in chunks(n, 8):
                asm.op(E.ldr(S, T, off, w), f"ldr{8 * w} x{S}, [x{T}, #{off}]   ; its bytes")
                asm.adr_sym(U, sym, off)
                asm.op(E.ldr(U, U, 0, w), f"ldr{8 * w} x{U}, [x{U}]   ; the literal's")
                asm.op(E.cmp_reg(S, U), f"cmp x{S}, x{U}")
                asm.bcond("ne", differ if m.op == "!=" else skip)
        if m.op == "!=":
            asm.b(skip)
            asm.label(differ)

    def percent(self, asm: Asm64, percent: int, skip: str):
        # z = state; state += GOLDEN (atomically); z = splitmix64_mix(z); fault when z < P
        asm.mov64(V, GOLDEN, f"mov x{V}, #GOLDEN")
        self._fetch_add(asm, COUNTERS, 24, old=S, new=U, inc_reg=V)
        for shift, mix in ((30, MIX1), (27, MIX2), (31, None)):
            asm.op(eor_lsr(S, S, S, shift), f"eor x{S}, x{S}, x{S}, lsr #{shift}")
            if mix:
                asm.mov64(U, mix)
                asm.op(E.mul(S, S, U), f"mul x{S}, x{S}, x{U}")
        asm.mov64(U, percent_threshold(percent, 64), f"mov x{U}, #threshold({percent}%)")
        asm.op(E.cmp_reg(S, U), f"cmp x{S}, x{U}")
        asm.bcond("hs", skip)

    def count(self, asm: Asm64, n: int, skip: str):
        # ticket = count++ (atomically); fault while ticket < n. 64 bits never wrap.
        self._fetch_add(asm, COUNTERS, COUNT)
        self._cmp_imm(asm, n)
        asm.bcond("hs", skip)

    def jmp(self, asm: Asm64, label: str):
        asm.b(label)

    def _call_sub(self, asm: Asm64, name: str, emit):
        """adr x22, back; b <sub>; back: -- the sub `name` (emitted once per prefix by
        emit_subroutines) ends with br x22."""
        subs = asm.__dict__.setdefault("_subs", {})
        if name not in subs:
            subs[name] = (asm.fresh(name), emit)
        back = asm.fresh("back")
        asm.ins(lambda at, s: E.adr(LINK, at, s[back]), 1, f"adr x{LINK}, {back}")
        asm.b(subs[name][0])
        asm.label(back)

    def emit_subroutines(self, asm: Asm64):
        for label, emit in (asm.__dict__.pop("_subs", None) or {}).values():
            asm.label(label)
            emit(asm)
            asm.op(E.br(LINK), f"br x{LINK}")

    # -- --caller and the blast radius (issue 19) ------------------------------------------
    def _return_address(self, asm: Asm64, into=S):
        """The direct caller's return address: LR, or F's saved LR at [SP] after its frame
        setup (asm.lr_saved)."""
        if asm.lr_saved:
            asm.op(E.ldr(into, E.SP, 0), f"ldr x{into}, [sp]   ; F's saved LR")
        else:
            asm.op(E.mov_reg(into, E.LR), f"mov x{into}, x30   ; LR")

    def _in_ranges(self, asm: Asm64, found: str):
        """Jump to `found` when S lies in one of the CALLERS ranges (conditions.caller_table:
        the highest end first, then sorted [lo, hi) pairs, each bound + 1). A loop: below a
        range's lo means below every later one too (not a caller); the walk ends at the latest
        at the range holding the highest end. Uses T, U."""
        out, loop = asm.fresh("notcaller"), asm.fresh("ranges")
        asm.adr_sym(T, CALLERS)
        asm.op(E.ldr(U, T, 0), f"ldr x{U}, [x{T}]   ; highest end")
        asm.op(E.cmp_reg(S, U), f"cmp x{S}, x{U}")
        asm.bcond("hs", out)
        asm.label(loop)
        asm.op(E.ldr(U, T, 8), f"ldr x{U}, [x{T}, #8]   ; lo")
        asm.op(E.cmp_reg(S, U), f"cmp x{S}, x{U}")
        asm.bcond("lo", out)
        asm.op(E.ldr(U, T, 16), f"ldr x{U}, [x{T}, #16]   ; hi")
        asm.op(E.add_imm(T, T, 16), f"add x{T}, x{T}, #16")
        asm.op(E.cmp_reg(S, U), f"cmp x{S}, x{U}")
        asm.bcond("lo", found)
        asm.b(loop)
        asm.label(out)

    @staticmethod
    def _step(asm: Asm64, fail: str):
        """One step up the frame-pointer chain. In: V = fp of the frame just looked at. Jumps
        to `fail` when fp is not a frame of this goroutine's stack (zero, unaligned, outside
        g.stack from the g in R28, or [fp], [fp+8] not both inside); else S = the next return
        address [fp+8] and V = the next fp [fp], or 0 when it does not lie above fp (a looping
        chain: the next step then stops). Reads only inside [g.stack.lo, g.stack.hi)."""
        up = asm.fresh("up")
        asm.op(tst_low3(V), f"tst x{V}, #7")
        asm.bcond("ne", fail)                               # unaligned
        asm.op(E.ldr(U, E.reg("R28"), G_STACK_LO), f"ldr x{U}, [x28]   ; g.stack.lo")
        asm.op(E.cmp_reg(V, U), f"cmp x{V}, x{U}")
        asm.bcond("lo", fail)                               # below the stack (0 too)
        asm.op(E.ldr(U, E.reg("R28"), G_STACK_HI), f"ldr x{U}, [x28, #8]   ; g.stack.hi")
        asm.op(E.cmp_reg(V, U), f"cmp x{V}, x{U}")
        asm.bcond("hs", fail)                               # above it
        asm.op(E.add_imm(S, V, 16), f"add x{S}, x{V}, #16")
        asm.op(E.cmp_reg(S, U), f"cmp x{S}, x{U}")
        asm.bcond("hi", fail)                               # [fp], [fp+8] not both inside
        asm.op(E.ldr(S, V, 8), f"ldr x{S}, [x{V}, #8]   ; its return address")
        asm.op(E.ldr(U, V, 0), f"ldr x{U}, [x{V}]   ; the next fp")
        asm.op(E.cmp_reg(U, V), f"cmp x{U}, x{V}")
        asm.op(E.mov_reg(V, U), f"mov x{V}, x{U}")
        asm.bcond("hi", up)
        asm.op(E.mov_reg(V, E.ZR), f"mov x{V}, xzr   ; not above: the next step stops")
        asm.label(up)

    def caller(self, asm: Asm64, conds, fail: str):
        """Fall through when a --caller range holds the return address of one of the first
        caller_depth frames, else jump to `fail`. Frame 1: LR (or F's saved LR); frame k+1:
        [fp + 8], fp the frame pointer of frame k (R29 at F's entry, or [R29] once F's frame
        setup ran), each proven inside the goroutine's stack first (_step)."""
        found = asm.fresh("caller")
        depth = conds.caller_depth
        self._return_address(asm)
        if depth > 1:
            if asm.bp_saved:
                asm.op(E.ldr(V, E.FP, 0), f"ldr x{V}, [x29]   ; the caller's fp")
            else:
                asm.op(E.mov_reg(V, E.FP), f"mov x{V}, x29   ; the caller's fp")
        compact = getattr(asm, "compact", False)
        for k in range(depth):
            if k and compact:
                self._call_sub(asm, "step", lambda a: self._step(a, fail))
            elif k:
                self._step(asm, fail)
            if compact:
                self._call_sub(asm, "inranges", lambda a: self._in_ranges(a, found))
            else:
                self._in_ranges(asm, found)
        asm.b(fail)
        asm.label(found)

    def radius(self, asm: Asm64, field: int):
        """Count this call in its call site's entry, at `field`: find the entry of the return
        address (a few compares), else claim the next free one (an exclusive loop on NEXT), or
        the overflow entry when all are taken; then add 1 to the field atomically. Compact:
        the lookup is a subroutine."""
        if getattr(asm, "compact", False):
            self._call_sub(asm, "site", self._lookup)
        else:
            self._lookup(asm)
        asm.op(E.add_imm(T, V, field), f"add x{T}, x{V}, #{field}")
        self._fetch_add_at(asm, 1)

    def _lookup(self, asm: Asm64):
        """V = the blast-radius entry of this call's return address (claimed when new)."""
        scan, claim, found, over = (asm.fresh(x) for x in ("scan", "claim", "site", "full"))
        slots = asm.radius_slots
        self._return_address(asm)
        asm.adr_sym(V, COUNTERS, TABLE)
        asm.label(scan)
        asm.op(E.ldr(U, V, 0), f"ldr x{U}, [x{V}]   ; the entry's return address")
        asm.op(E.cmp_reg(U, S), f"cmp x{U}, x{S}")
        asm.bcond("eq", found)
        asm.op(E.cmp_imm(U, 1), f"cmp x{U}, #1")
        asm.bcond("lo", claim)                              # 0: free from here on
        asm.bcond("eq", found)                              # OVERFLOW_RA: the overflow entry
        asm.op(E.add_imm(V, V, ENTRY), f"add x{V}, x{V}, #{ENTRY}")
        asm.b(scan)
        asm.label(claim)
        asm.adr_sym(T, COUNTERS, NEXT)
        self._fetch_add_at(asm, 1, old=U, new=V)
        asm.op(E.cmp_imm(U, slots), f"cmp x{U}, #{slots}")
        asm.bcond("hs", over)
        asm.adr_sym(V, COUNTERS, TABLE)
        asm.op(E.add_reg(V, V, U, shift=5), f"add x{V}, x{V}, x{U}, lsl #5   ; * ENTRY")
        asm.op(E.str_(S, V, 0), f"str x{S}, [x{V}]   ; claimed for this return address")
        asm.b(found)
        asm.label(over)
        asm.adr_sym(V, COUNTERS, TABLE + slots * ENTRY)
        asm.label(found)
