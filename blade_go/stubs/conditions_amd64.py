"""amd64 condition blocks (register ABI and ABI0): scratch R12/R13 and the flags only.

Data operands are RIP-relative (the counters and string constants are within rel32 of the
stub), branches rel32; lengths never depend on addresses.
"""
import iced_x86 as x86

from .conditions import CALLERS, COUNT, COUNTERS, ENTRY, FAIL_JCC, NEXT, RNG, SLOTS, TABLE, \
    Match, Mem, Reg, Stack, chunks, percent_threshold
from .conditions_x86 import Asm

R = x86.Register
C = x86.Code
I = x86.Instruction
MO = x86.MemoryOperand
S, T = R.R12, R.R13  # scratch: value, pointer/temporary

_GPR = {"RAX": R.RAX, "RBX": R.RBX, "RCX": R.RCX, "RDX": R.RDX, "RDI": R.RDI, "RSI": R.RSI,
        "R8": R.R8, "R9": R.R9, "R10": R.R10, "R11": R.R11}
_SUB = {  # 64-bit register -> (32, 16, 8)-bit names
    R.RAX: (R.EAX, R.AX, R.AL), R.RBX: (R.EBX, R.BX, R.BL), R.RCX: (R.ECX, R.CX, R.CL),
    R.RDX: (R.EDX, R.DX, R.DL), R.RDI: (R.EDI, R.DI, R.DIL), R.RSI: (R.ESI, R.SI, R.SIL),
    R.R8: (R.R8D, R.R8W, R.R8L), R.R9: (R.R9D, R.R9W, R.R9L), R.R10: (R.R10D, R.R10W, R.R10L),
    R.R11: (R.R11D, R.R11W, R.R11L), R.R12: (R.R12D, R.R12W, R.R12L),
    R.R13: (R.R13D, R.R13W, R.R13L)}

_JCC = {"e": C.JE_REL32_64, "ne": C.JNE_REL32_64, "l": C.JL_REL32_64, "le": C.JLE_REL32_64,
        "g": C.JG_REL32_64, "ge": C.JGE_REL32_64, "b": C.JB_REL32_64, "be": C.JBE_REL32_64,
        "a": C.JA_REL32_64, "ae": C.JAE_REL32_64}

from .conditions import GOLDEN  # noqa: E402 (SplitMix64's Weyl increment)
MIX1, MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _sized(r, size):
    return r if size == 8 else _SUB[r][{4: 0, 2: 1, 1: 2}[size]]


def _rip(sym: str, off: int = 0):
    return lambda s: MO(R.RIP, displ=s[sym] + off)


def _mem_sp(off: int):
    return MO(R.RSP, displ=off, displ_size=8)


# (size, signed) -> instruction code loading into a 64-bit register, from r/m of that size
_LOAD = {(8, True): C.MOV_R64_RM64, (8, False): C.MOV_R64_RM64,
         (4, True): C.MOVSXD_R64_RM32, (4, False): C.MOV_R32_RM32,
         (2, True): C.MOVSX_R64_RM16, (2, False): C.MOVZX_R32_RM16,
         (1, True): C.MOVSX_R64_RM8, (1, False): C.MOVZX_R32_RM8}


class Amd64Conditions:
    name = "amd64"
    ptrsize = 8

    # -- operands ----------------------------------------------------------------------
    def _pointer(self, asm: Asm, op, skip: str):
        """Leave in R13 the pointer `op` names (following Mem chains, nil -> skip)."""
        if isinstance(op, Reg):
            asm.fixed(I.create_reg_reg(C.MOV_R64_RM64, T, _GPR[op.name.upper()]))
        elif isinstance(op, Stack):
            asm.fixed(I.create_reg_mem(C.MOV_R64_RM64, T, _mem_sp(asm.sp_bias + op.sp_offset)))
        else:
            self._deref_base(asm, op, skip)
            asm.fixed(I.create_reg_mem(C.MOV_R64_RM64, T, MO(T, displ=op.offset, displ_size=8)))

    def _deref_base(self, asm: Asm, op: Mem, skip: str):
        self._pointer(asm, op.base, skip)
        asm.fixed(I.create_reg_reg(C.TEST_RM64_R64, T, T))
        asm.jcc(C.JE_REL32_64, skip)

    def _load(self, asm: Asm, op, size: int, signed: bool, skip: str, into=S):
        """Load the `size`-byte value `op` names into `into`, sign/zero-extended to 64 bits."""
        code = _LOAD[(size, signed)]
        dst = into if code in (C.MOV_R64_RM64, C.MOVSXD_R64_RM32, C.MOVSX_R64_RM16,
                               C.MOVSX_R64_RM8) else _SUB[into][0]
        if isinstance(op, Reg):
            asm.fixed(I.create_reg_reg(code, dst, _sized(_GPR[op.name.upper()], size)))
        elif isinstance(op, Stack):
            asm.fixed(I.create_reg_mem(code, dst, _mem_sp(asm.sp_bias + op.sp_offset)))
        else:
            self._deref_base(asm, op, skip)
            asm.fixed(I.create_reg_mem(code, dst, MO(T, displ=op.offset, displ_size=8)))

    def _cmp_imm(self, asm: Asm, k: int):
        """cmp r12, k (k as a 64-bit two's complement constant)."""
        k &= (1 << 64) - 1
        sk = k - (1 << 64) if k >> 63 else k
        if -(1 << 31) <= sk < (1 << 31):
            asm.fixed(I.create_reg_i32(C.CMP_RM64_IMM32, S, sk))
        else:
            asm.fixed(I.create_reg_u64(C.MOV_R64_IMM64, T, k))
            asm.fixed(I.create_reg_reg(C.CMP_RM64_R64, S, T))

    # -- blocks ------------------------------------------------------------------------
    def bump(self, asm: Asm, offset: int):
        ins = lambda s: _lock(I.create_mem(C.INC_RM64, MO(R.RIP, displ=s[COUNTERS] + offset)))
        asm.ins(ins)

    def match_int(self, asm: Asm, m: Match, skip: str):
        self._load(asm, m.operands[0], m.size, m.signed, skip)
        self._cmp_imm(asm, m.value)
        asm.jcc(_JCC[FAIL_JCC[m.op][0 if m.signed else 1]], skip)

    def match_string(self, asm: Asm, m: Match, sym: str, skip: str):
        ptr, length = m.operands
        n = len(m.value)
        equal = asm.fresh("neq")  # != : leave the matcher (true) at the first difference
        fail_len = {"==": C.JNE_REL32_64, "^=": C.JB_REL32_64}.get(m.op)
        self._load(asm, length, 8, False, skip)
        asm.fixed(I.create_reg_i32(C.CMP_RM64_IMM32, S, n))
        if m.op == "!=":
            asm.jcc(C.JNE_REL32_64, equal)
        else:
            asm.jcc(fail_len, skip)
        if n:
            self._pointer(asm, ptr, skip)
            for off, w in chunks(n, 8):
                r = _sized(S, w)
                mov = {8: C.MOV_R64_RM64, 4: C.MOV_R32_RM32, 2: C.MOV_R16_RM16, 1: C.MOV_R8_RM8}[w]
                cmp = {8: C.CMP_R64_RM64, 4: C.CMP_R32_RM32, 2: C.CMP_R16_RM16, 1: C.CMP_R8_RM8}[w]
                asm.fixed(I.create_reg_mem(mov, r, MO(T, displ=off, displ_size=8)))
                asm.ins(lambda s, r=r, cmp=cmp, off=off: I.create_reg_mem(
                    cmp, r, MO(R.RIP, displ=s[sym] + off)))
                asm.jcc(C.JNE_REL32_64, equal if m.op == "!=" else skip)
        if m.op == "!=":
            asm.jcc(C.JMP_REL32_64, skip)
            asm.label(equal)

    def percent(self, asm: Asm, percent: int, skip: str):
        # z = state; state += GOLDEN (atomically); z = splitmix64_mix(z)
        asm.fixed(I.create_reg_u64(C.MOV_R64_IMM64, S, GOLDEN))
        asm.ins(lambda s: _lock(I.create_mem_reg(C.XADD_RM64_R64,
                                                 MO(R.RIP, displ=s[COUNTERS] + RNG), S)))
        for shift, mul in ((30, MIX1), (27, MIX2), (31, None)):
            asm.fixed(I.create_reg_reg(C.MOV_R64_RM64, T, S))
            asm.fixed(I.create_reg_i32(C.SHR_RM64_IMM8, T, shift))
            asm.fixed(I.create_reg_reg(C.XOR_R64_RM64, S, T))
            if mul:
                asm.fixed(I.create_reg_u64(C.MOV_R64_IMM64, T, mul))
                asm.fixed(I.create_reg_reg(C.IMUL_R64_RM64, S, T))
        asm.fixed(I.create_reg_u64(C.MOV_R64_IMM64, T, percent_threshold(percent, 64)))
        asm.fixed(I.create_reg_reg(C.CMP_RM64_R64, S, T))
        asm.jcc(C.JAE_REL32_64, skip)

    def count(self, asm: Asm, n: int, skip: str):
        # ticket = count++ (atomically); fault while ticket < n. 64 bits never wrap.
        asm.fixed(I.create_reg_u32(C.MOV_R32_IMM32, _SUB[S][0], 1))
        asm.ins(lambda s: _lock(I.create_mem_reg(C.XADD_RM64_R64,
                                                 MO(R.RIP, displ=s[COUNTERS] + COUNT), S)))
        self._cmp_imm(asm, n)
        asm.jcc(C.JAE_REL32_64, skip)

    def jmp(self, asm: Asm, label: str):
        asm.jcc(C.JMP_REL32_64, label)

    # -- --caller and the blast radius (issue 19) ------------------------------------------
    # Their repeated parts are subroutines, emitted once out of line (emit_subroutines) and
    # reached with `call`: the 8-byte return address goes below SP, where the goroutine's
    # stack always has room (Go lets any function use StackSmall bytes below SP unchecked),
    # and nothing else runs on this stack while the stub does (a cave PC is never an
    # asynchronous preemption point; signals run on the signal stack). Stub sizes matter: the
    # caves are a few hundred bytes on some binaries.
    def _sub(self, asm: Asm, name: str, emit) -> str:
        subs = asm.__dict__.setdefault("_subs", {})
        if name not in subs:
            subs[name] = (asm.fresh(name), emit, asm.sp_bias)
        return subs[name][0]

    def emit_subroutines(self, asm: Asm):
        for label, emit, sp_bias in (asm.__dict__.pop("_subs", None) or {}).values():
            asm.label(label)
            saved, asm.sp_bias = asm.sp_bias, sp_bias + 8  # below the call's return address
            emit(asm)
            asm.sp_bias = saved

    def _return_address(self, asm: Asm, into=S):
        """The direct caller's return address: [SP at F's entry]."""
        asm.fixed(I.create_reg_mem(C.MOV_R64_RM64, into, _mem_sp(asm.sp_bias)))

    def _in_ranges_body(self, n: int):
        """Subroutine: CF=1 when R12 lies in one of the n ranges of the CALLERS table
        (conditions.caller_table: the highest end first, then sorted [lo, hi) pairs)."""
        def emit(asm: Asm):
            out = asm.fresh("notcaller")
            asm.ins(lambda s: I.create_reg_mem(C.CMP_R64_RM64, S, MO(R.RIP, displ=s[CALLERS])))
            asm.jcc(C.JAE_REL32_64, out)
            for k in range(n):
                lo, hi = 8 + 16 * k, 16 + 16 * k
                asm.ins(lambda s, o=lo: I.create_reg_mem(C.CMP_R64_RM64, S,
                                                         MO(R.RIP, displ=s[CALLERS] + o)))
                asm.jcc(C.JB_REL32_64, out)  # below this range: below every later one too
                asm.ins(lambda s, o=hi: I.create_reg_mem(C.CMP_R64_RM64, S,
                                                         MO(R.RIP, displ=s[CALLERS] + o)))
                asm.jcc(C.JB_REL32_64, out + "in")  # CF=1: inside
            asm.label(out)
            asm.fixed(I.create(C.CLC))
            asm.label(out + "in")
            asm.fixed(I.create(C.RETNQ))
        return emit

    @staticmethod
    def _advance(asm: Asm):
        """Subroutine: one step up the frame-pointer chain. In: R13 = fp of the frame just
        looked at. Out: CF=1 when fp is not a frame of this goroutine's stack (zero,
        unaligned, outside g.stack from the g in R14, or [fp], [fp+8] not both inside), else
        R12 = the next return address [fp+8] and R13 = the next fp [fp], or 0 when it does not
        lie above fp (a looping chain: the next step then stops). Reads only inside
        [g.stack.lo, g.stack.hi)."""
        fail = asm.fresh("nofp")
        up = asm.fresh("up")
        g_lo, g_hi = MO(R.R14, displ=0, displ_size=8), MO(R.R14, displ=8, displ_size=8)
        asm.fixed(I.create_reg_i32(C.TEST_RM64_IMM32, T, 7))
        asm.jcc(C.JNE_REL32_64, fail)                 # unaligned
        asm.fixed(I.create_reg_mem(C.CMP_R64_RM64, T, g_lo))
        asm.jcc(C.JB_REL32_64, fail)                  # below the stack (0 too)
        asm.fixed(I.create_reg_mem(C.CMP_R64_RM64, T, g_hi))
        asm.jcc(C.JAE_REL32_64, fail)                 # above it
        asm.fixed(I.create_reg_mem(C.LEA_R64_M, S, MO(T, displ=16, displ_size=8)))
        asm.fixed(I.create_reg_mem(C.CMP_R64_RM64, S, g_hi))
        asm.jcc(C.JA_REL32_64, fail)                  # [fp], [fp+8] not both inside
        asm.fixed(I.create_reg_mem(C.MOV_R64_RM64, S, MO(T, displ=8, displ_size=8)))
        asm.fixed(I.create_mem_reg(C.CMP_RM64_R64, MO(T, displ=0, displ_size=8), T))
        asm.fixed(I.create_reg_mem(C.MOV_R64_RM64, T, MO(T, displ=0, displ_size=8)))
        asm.jcc(C.JA_REL32_64, up)
        asm.fixed(I.create_reg_reg(C.XOR_R32_RM32, R.R13D, R.R13D))  # the next step stops
        asm.label(up)
        asm.fixed(I.create(C.CLC))
        asm.fixed(I.create(C.RETNQ))
        asm.label(fail)
        asm.fixed(I.create(C.STC))
        asm.fixed(I.create(C.RETNQ))

    def caller(self, asm: Asm, conds, fail: str):
        """Fall through when a --caller range holds the return address of one of the first
        caller_depth frames, else jump to `fail`.

        Frame 1: the return address at [SP at entry]. Frame k+1: [fp + 8], fp the frame
        pointer of frame k (RBP at F's entry, or [RBP] once F saved it). Before each read the
        walk proves fp is inside the goroutine's stack (_advance), and each step must go up
        the stack: a zero, unaligned, foreign or looping chain ends the walk (no match), never
        a fault. Reads only; writes R12/R13 and the flags. Inline, one block per frame (the
        fast form); conds.compact: the range check and the step are subroutines (a smaller
        stub for small caves, a call and a return more per frame)."""
        found = asm.fresh("caller")
        depth = conds.caller_depth
        n = len(conds.callers)
        compact = conds.compact
        if compact:
            in_ranges = self._sub(asm, "inranges", self._in_ranges_body(n))
            if depth > 1:
                advance = self._sub(asm, "advance", self._advance)
        self._return_address(asm)
        if depth > 1:
            if asm.bp_saved:
                asm.fixed(I.create_reg_mem(C.MOV_R64_RM64, T, MO(R.RBP, displ=0, displ_size=8)))
            else:
                asm.fixed(I.create_reg_reg(C.MOV_R64_RM64, T, R.RBP))
        for k in range(depth):
            if k and compact:
                asm.jcc(C.CALL_REL32_64, advance)
                asm.jcc(C.JB_REL32_64, fail)          # CF=1: the chain ends here
            elif k:
                self._step(asm, fail)
            if compact:
                asm.jcc(C.CALL_REL32_64, in_ranges)
                asm.jcc(C.JB_REL32_64, found)         # CF=1: a caller's code
            else:
                self._in_ranges_inline(asm, n, found)
        asm.jcc(C.JMP_REL32_64, fail)
        asm.label(found)

    def _in_ranges_inline(self, asm: Asm, n: int, found: str):
        """Jump to `found` when R12 lies in one of the n CALLERS ranges (flags only)."""
        out = asm.fresh("notcaller")
        asm.ins(lambda s: I.create_reg_mem(C.CMP_R64_RM64, S, MO(R.RIP, displ=s[CALLERS])))
        asm.jcc(C.JAE_REL32_64, out)
        for k in range(n):
            lo, hi = 8 + 16 * k, 16 + 16 * k
            asm.ins(lambda s, o=lo: I.create_reg_mem(C.CMP_R64_RM64, S,
                                                     MO(R.RIP, displ=s[CALLERS] + o)))
            asm.jcc(C.JB_REL32_64, out)
            asm.ins(lambda s, o=hi: I.create_reg_mem(C.CMP_R64_RM64, S,
                                                     MO(R.RIP, displ=s[CALLERS] + o)))
            asm.jcc(C.JB_REL32_64, found)
        asm.label(out)

    @staticmethod
    def _step(asm: Asm, fail: str):
        """_advance inline: jump to `fail` where it would return CF=1."""
        up = asm.fresh("up")
        g_lo, g_hi = MO(R.R14, displ=0, displ_size=8), MO(R.R14, displ=8, displ_size=8)
        asm.fixed(I.create_reg_i32(C.TEST_RM64_IMM32, T, 7))
        asm.jcc(C.JNE_REL32_64, fail)
        asm.fixed(I.create_reg_mem(C.CMP_R64_RM64, T, g_lo))
        asm.jcc(C.JB_REL32_64, fail)
        asm.fixed(I.create_reg_mem(C.CMP_R64_RM64, T, g_hi))
        asm.jcc(C.JAE_REL32_64, fail)
        asm.fixed(I.create_reg_mem(C.LEA_R64_M, S, MO(T, displ=16, displ_size=8)))
        asm.fixed(I.create_reg_mem(C.CMP_R64_RM64, S, g_hi))
        asm.jcc(C.JA_REL32_64, fail)
        asm.fixed(I.create_reg_mem(C.MOV_R64_RM64, S, MO(T, displ=8, displ_size=8)))
        asm.fixed(I.create_mem_reg(C.CMP_RM64_R64, MO(T, displ=0, displ_size=8), T))
        asm.fixed(I.create_reg_mem(C.MOV_R64_RM64, T, MO(T, displ=0, displ_size=8)))
        asm.jcc(C.JA_REL32_64, up)
        asm.fixed(I.create_reg_reg(C.XOR_R32_RM32, R.R13D, R.R13D))
        asm.label(up)

    # -- blast radius (issue 19) ----------------------------------------------------------
    def _find_site(self, asm: Asm):
        """Subroutine: R13 = the entry of this call's site (conditions.py, TABLE): the entry
        of the return address, or the next free one claimed with lock xadd, or the overflow
        entry when all are taken."""
        scan, claim, found, over = (asm.fresh(x) for x in ("scan", "claim", "site", "full"))
        self._return_address(asm)
        asm.ins(lambda s: I.create_reg_mem(C.LEA_R64_M, T, MO(R.RIP, displ=s[COUNTERS] + TABLE)))
        asm.label(scan)
        asm.fixed(I.create_mem_reg(C.CMP_RM64_R64, MO(T, displ=0, displ_size=8), S))
        asm.jcc(C.JE_REL32_64, found)
        asm.fixed(I.create_mem_i32(C.CMP_RM64_IMM8, MO(T, displ=0, displ_size=8), 1))
        asm.jcc(C.JB_REL32_64, claim)                     # 0: free from here on
        asm.jcc(C.JE_REL32_64, found)                     # OVERFLOW_RA: the overflow entry
        asm.fixed(I.create_reg_i32(C.ADD_RM64_IMM32, T, ENTRY))
        asm.jcc(C.JMP_REL32_64, scan)
        asm.label(claim)
        asm.fixed(I.create_reg_u32(C.MOV_R32_IMM32, R.R13D, 1))
        asm.ins(lambda s: _lock(I.create_mem_reg(C.XADD_RM64_R64,
                                                 MO(R.RIP, displ=s[COUNTERS] + NEXT), T)))
        slots = asm.radius_slots
        asm.fixed(I.create_reg_i32(C.CMP_RM64_IMM32, T, slots))
        asm.jcc(C.JAE_REL32_64, over)
        asm.fixed(I.create_reg_i32(C.SHL_RM64_IMM8, T, 5))  # * ENTRY
        asm.ins(lambda s: I.create_reg_mem(C.LEA_R64_M, S, MO(R.RIP, displ=s[COUNTERS] + TABLE)))
        asm.fixed(I.create_reg_reg(C.ADD_R64_RM64, T, S))
        self._return_address(asm)
        asm.fixed(I.create_mem_reg(C.MOV_RM64_R64, MO(T, displ=0, displ_size=8), S))
        asm.fixed(I.create(C.RETNQ))
        asm.label(over)
        asm.ins(lambda s: I.create_reg_mem(C.LEA_R64_M, T, MO(R.RIP, displ=s[COUNTERS] + TABLE
                                                             + slots * ENTRY)))
        asm.label(found)
        asm.fixed(I.create(C.RETNQ))

    def _claim(self, asm: Asm):
        """Subroutine: R13 = the next free entry, claimed with lock xadd, its return address
        written; the overflow entry when all are taken."""
        over, done = asm.fresh("full"), asm.fresh("claimed")
        slots = asm.radius_slots
        asm.fixed(I.create_reg_u32(C.MOV_R32_IMM32, R.R13D, 1))
        asm.ins(lambda s: _lock(I.create_mem_reg(C.XADD_RM64_R64,
                                                 MO(R.RIP, displ=s[COUNTERS] + NEXT), T)))
        asm.fixed(I.create_reg_i32(C.CMP_RM64_IMM32, T, slots))
        asm.jcc(C.JAE_REL32_64, over)
        asm.fixed(I.create_reg_i32(C.SHL_RM64_IMM8, T, 5))  # * ENTRY
        asm.ins(lambda s: I.create_reg_mem(C.LEA_R64_M, S, MO(R.RIP, displ=s[COUNTERS] + TABLE)))
        asm.fixed(I.create_reg_reg(C.ADD_R64_RM64, T, S))
        self._return_address(asm)
        asm.fixed(I.create_mem_reg(C.MOV_RM64_R64, MO(T, displ=0, displ_size=8), S))
        asm.fixed(I.create(C.RETNQ))
        asm.label(over)
        asm.ins(lambda s: I.create_reg_mem(C.LEA_R64_M, T, MO(R.RIP, displ=s[COUNTERS] + TABLE
                                                             + slots * ENTRY)))
        asm.label(done)
        asm.fixed(I.create(C.RETNQ))

    def radius(self, asm: Asm, field: int):
        """Count this call in its call site's entry, at `field`: find the entry of the return
        address (the common case: inline, a few compares), else claim one (_claim, out of
        line), then `lock inc` the field. conds.compact: the whole lookup is a subroutine."""
        if getattr(asm, "compact", False):
            asm.jcc(C.CALL_REL32_64, self._sub(asm, "site", self._find_site))
        else:
            scan, claim, found = (asm.fresh(x) for x in ("scan", "claim", "site"))
            self._return_address(asm)
            asm.ins(lambda s: I.create_reg_mem(C.LEA_R64_M, T,
                                               MO(R.RIP, displ=s[COUNTERS] + TABLE)))
            asm.label(scan)
            asm.fixed(I.create_mem_reg(C.CMP_RM64_R64, MO(T, displ=0, displ_size=8), S))
            asm.jcc(C.JE_REL32_64, found)
            asm.fixed(I.create_mem_i32(C.CMP_RM64_IMM8, MO(T, displ=0, displ_size=8), 1))
            asm.jcc(C.JB_REL32_64, claim)             # 0: free from here on
            asm.jcc(C.JE_REL32_64, found)             # OVERFLOW_RA: the overflow entry
            asm.fixed(I.create_reg_i32(C.ADD_RM64_IMM32, T, ENTRY))
            asm.jcc(C.JMP_REL32_64, scan)
            asm.label(claim)
            asm.jcc(C.CALL_REL32_64, self._sub(asm, "claim", self._claim))
            asm.label(found)
        asm.fixed(_lock(I.create_mem(C.INC_RM64, MO(T, displ=field, displ_size=1))))


def _lock(ins):
    ins.has_lock_prefix = True
    return ins
