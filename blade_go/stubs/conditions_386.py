"""386 condition blocks (ABI0: every argument on the stack): scratch EAX/ECX and the flags.

EDX is the closure context and stays intact. Data operands are absolute disp32 addresses.
Counters are 64-bit: `lock add [lo],1; lock adc [hi],0` (each thread carries its own CF,
so the total is exact; a reader may see the two halves a moment apart). The count ticket is a
saturating `lock cmpxchg` loop on 32 bits, so it never wraps back to "fault again".
8-byte integers compare their high words (signed or not) and then their low words (unsigned).
"""
import iced_x86 as x86

from .conditions import CALLERS, COUNT, COUNTERS, ENTRY, FAIL_JCC, NEXT, RNG, SLOTS, TABLE, \
    Match, Mem, Reg, Stack, chunks, percent_threshold
from .conditions_x86 import Asm

R = x86.Register
C = x86.Code
I = x86.Instruction
MO = x86.MemoryOperand
A, X = R.EAX, R.ECX  # scratch: value, pointer/temporary

_JCC = {"e": C.JE_REL32_32, "ne": C.JNE_REL32_32, "l": C.JL_REL32_32, "le": C.JLE_REL32_32,
        "g": C.JG_REL32_32, "ge": C.JGE_REL32_32, "b": C.JB_REL32_32, "be": C.JBE_REL32_32,
        "a": C.JA_REL32_32, "ae": C.JAE_REL32_32}

WEYL = 0x9E3779B9
LOWBIAS = ((16, 0x7FEB352D), (15, 0x846CA68B), (16, None))

_LOAD = {(4, True): C.MOV_R32_RM32, (4, False): C.MOV_R32_RM32,
         (2, True): C.MOVSX_R32_RM16, (2, False): C.MOVZX_R32_RM16,
         (1, True): C.MOVSX_R32_RM8, (1, False): C.MOVZX_R32_RM8}


def _abs(sym: str, off: int = 0):
    return lambda s: MO(displ=s[sym] + off, displ_size=4)


def _mem_sp(off: int):
    return MO(R.ESP, displ=off, displ_size=4)


def _lock(ins):
    ins.has_lock_prefix = True
    return ins


class I386Conditions:
    name = "386"
    ptrsize = 4

    def _pointer(self, asm: Asm, op, skip: str):
        """Leave in ECX the pointer `op` names (following Mem chains, nil -> skip)."""
        if isinstance(op, Reg):
            raise ValueError("386 ABI0 passes no argument in registers")
        if isinstance(op, Stack):
            asm.fixed(I.create_reg_mem(C.MOV_R32_RM32, X, _mem_sp(asm.sp_bias + op.sp_offset)))
        else:
            self._deref_base(asm, op, skip)
            asm.fixed(I.create_reg_mem(C.MOV_R32_RM32, X, MO(X, displ=op.offset, displ_size=4)))

    def _deref_base(self, asm: Asm, op: Mem, skip: str):
        self._pointer(asm, op.base, skip)
        asm.fixed(I.create_reg_reg(C.TEST_RM32_R32, X, X))
        asm.jcc(C.JE_REL32_32, skip)

    def _mem(self, asm: Asm, op, extra: int, skip: str):
        """Memory operand for the bytes of `op` (+extra); may load ECX with a base pointer."""
        if isinstance(op, Stack):
            return _mem_sp(asm.sp_bias + op.sp_offset + extra)
        if isinstance(op, Mem):
            self._deref_base(asm, op, skip)
            return MO(X, displ=op.offset + extra, displ_size=4)
        raise ValueError("386 ABI0 passes no argument in registers")

    def bump(self, asm: Asm, offset: int):
        asm.ins(lambda s: _lock(I.create_mem_i32(C.ADD_RM32_IMM32, _abs(COUNTERS, offset)(s), 1)))
        asm.ins(lambda s: _lock(I.create_mem_i32(C.ADC_RM32_IMM32,
                                                 _abs(COUNTERS, offset + 4)(s), 0)))

    def match_int(self, asm: Asm, m: Match, skip: str):
        op = m.operands[0]
        if m.size <= 4:
            asm.fixed(I.create_reg_mem(_LOAD[(m.size, m.signed)], A, self._mem(asm, op, 0, skip)))
            k = m.value & 0xFFFFFFFF
            asm.fixed(I.create_reg_i32(C.CMP_RM32_IMM32, A, k - (1 << 32) if k >> 31 else k))
            asm.jcc(_JCC[FAIL_JCC[m.op][0 if m.signed else 1]], skip)
            return
        # 8 bytes: EAX = low word, ECX = high word (ECX may first hold the base pointer)
        mem = self._mem(asm, op, 0, skip)
        asm.fixed(I.create_reg_mem(C.MOV_R32_RM32, A, mem))
        mem_hi = (_mem_sp(asm.sp_bias + op.sp_offset + 4) if isinstance(op, Stack)
                  else MO(X, displ=op.offset + 4, displ_size=4))
        asm.fixed(I.create_reg_mem(C.MOV_R32_RM32, X, mem_hi))
        k = m.value & ((1 << 64) - 1)
        lo, hi = k & 0xFFFFFFFF, k >> 32
        asm.fixed(I.create_reg_i32(C.CMP_RM32_IMM32, X, hi - (1 << 32) if hi >> 31 else hi))
        done = asm.fresh("hi")
        s = m.signed
        if m.op == "==":
            asm.jcc(C.JNE_REL32_32, skip)
        elif m.op == "!=":
            asm.jcc(C.JNE_REL32_32, done)
        else:  # the high words decide unless equal
            win, lose = {"<": ("l", "g"), "<=": ("l", "g"), ">": ("g", "l"),
                         ">=": ("g", "l")}[m.op]
            if not s:
                win, lose = {"l": "b", "g": "a"}[win], {"l": "b", "g": "a"}[lose]
            asm.jcc(_JCC[win], done)
            asm.jcc(_JCC[lose], skip)
        asm.fixed(I.create_reg_i32(C.CMP_RM32_IMM32, A, lo - (1 << 32) if lo >> 31 else lo))
        asm.jcc(_JCC[FAIL_JCC[m.op][1]], skip)
        asm.label(done)

    def match_string(self, asm: Asm, m: Match, sym: str, skip: str):
        ptr, length = m.operands
        n = len(m.value)
        equal = asm.fresh("neq")
        asm.fixed(I.create_reg_mem(C.MOV_R32_RM32, A, self._mem(asm, length, 0, skip)))
        asm.fixed(I.create_reg_i32(C.CMP_RM32_IMM32, A, n))
        if m.op == "!=":
            asm.jcc(C.JNE_REL32_32, equal)
        else:
            asm.jcc({"==": C.JNE_REL32_32, "^=": C.JB_REL32_32}[m.op], skip)
        if n:
            self._pointer(asm, ptr, skip)
            for off, w in chunks(n, 4):
                r = {4: R.EAX, 2: R.AX, 1: R.AL}[w]
                mov = {4: C.MOV_R32_RM32, 2: C.MOV_R16_RM16, 1: C.MOV_R8_RM8}[w]
                cmp = {4: C.CMP_R32_RM32, 2: C.CMP_R16_RM16, 1: C.CMP_R8_RM8}[w]
                asm.fixed(I.create_reg_mem(mov, r, MO(X, displ=off, displ_size=4)))
                asm.ins(lambda s, r=r, cmp=cmp, off=off: I.create_reg_mem(cmp, r, _abs(sym, off)(s)))
                asm.jcc(C.JNE_REL32_32, equal if m.op == "!=" else skip)
        if m.op == "!=":
            asm.jcc(C.JMP_REL32_32, skip)
            asm.label(equal)

    def percent(self, asm: Asm, percent: int, skip: str):
        # h = state; state += WEYL (atomically); h = lowbias32(h)
        asm.fixed(I.create_reg_u32(C.MOV_R32_IMM32, A, WEYL))
        asm.ins(lambda s: _lock(I.create_mem_reg(C.XADD_RM32_R32, _abs(COUNTERS, RNG)(s), A)))
        for shift, mul in LOWBIAS:
            asm.fixed(I.create_reg_reg(C.MOV_R32_RM32, X, A))
            asm.fixed(I.create_reg_i32(C.SHR_RM32_IMM8, X, shift))
            asm.fixed(I.create_reg_reg(C.XOR_R32_RM32, A, X))
            if mul:
                asm.fixed(I.create_reg_reg_i32(C.IMUL_R32_RM32_IMM32, A, A,
                                               mul - (1 << 32) if mul >> 31 else mul))
        t = percent_threshold(percent, 32)
        asm.fixed(I.create_reg_i32(C.CMP_RM32_IMM32, A, t - (1 << 32) if t >> 31 else t))
        asm.jcc(C.JAE_REL32_32, skip)

    def count(self, asm: Asm, n: int, skip: str):
        # while (t = count) < n: if cmpxchg(count, t, t+1) succeeds, fault. Saturates at n.
        retry = asm.fresh("ticket")
        asm.ins(lambda s: I.create_reg_mem(C.MOV_R32_RM32, A, _abs(COUNTERS, COUNT)(s)))
        asm.label(retry)
        asm.fixed(I.create_reg_i32(C.CMP_RM32_IMM32, A, n))
        asm.jcc(C.JAE_REL32_32, skip)
        asm.fixed(I.create_reg_mem(C.LEA_R32_M, X, MO(A, displ=1, displ_size=4)))
        asm.ins(lambda s: _lock(I.create_mem_reg(C.CMPXCHG_RM32_R32, _abs(COUNTERS, COUNT)(s), X)))
        asm.jcc(C.JNE_REL32_32, retry)

    def jmp(self, asm: Asm, label: str):
        asm.jcc(C.JMP_REL32_32, label)

    # -- --caller (issue 19): the direct caller only --------------------------------------
    def caller(self, asm: Asm, conds, fail: str):
        """Fall through when the return address at [ESP at entry] lies in a --caller range.
        Go keeps no frame pointers on 386, so deeper frames cannot be found (the create
        refuses --caller-depth > 1 there)."""
        if conds.caller_depth != 1:
            raise ValueError("386 has no frame-pointer chain: --caller-depth 1 only")
        found, out = asm.fresh("caller"), asm.fresh("notcaller")
        asm.fixed(I.create_reg_mem(C.MOV_R32_RM32, X, _mem_sp(asm.sp_bias)))
        asm.ins(lambda s: I.create_reg_mem(C.CMP_R32_RM32, X, _abs(CALLERS)(s)))
        asm.jcc(C.JAE_REL32_32, out)
        for k in range(len(conds.callers)):  # 8-byte words: compare their low halves
            asm.ins(lambda s, o=8 + 16 * k: I.create_reg_mem(C.CMP_R32_RM32, X, _abs(CALLERS, o)(s)))
            asm.jcc(C.JB_REL32_32, out)
            asm.ins(lambda s, o=16 + 16 * k: I.create_reg_mem(C.CMP_R32_RM32, X, _abs(CALLERS, o)(s)))
            asm.jcc(C.JB_REL32_32, found)
        asm.label(out)
        asm.jcc(C.JMP_REL32_32, fail)
        asm.label(found)

    # -- blast radius (issue 19) ----------------------------------------------------------
    def _sub(self, asm: Asm, name: str, emit) -> str:
        """conditions_amd64._sub: a subroutine emitted once, reached with `call`."""
        subs = asm.__dict__.setdefault("_subs", {})
        if name not in subs:
            subs[name] = (asm.fresh(name), emit, asm.sp_bias)
        return subs[name][0]

    def emit_subroutines(self, asm: Asm):
        for label, emit, sp_bias in (asm.__dict__.pop("_subs", None) or {}).values():
            asm.label(label)
            saved, asm.sp_bias = asm.sp_bias, sp_bias + 4  # below the call's return address
            emit(asm)
            asm.sp_bias = saved

    def _find_site(self, asm: Asm):
        """Subroutine: EAX = the entry of this call's site (conditions_amd64._find_site with
        ECX = return address)."""
        scan, claim, found, over = (asm.fresh(x) for x in ("scan", "claim", "site", "full"))
        slots = asm.radius_slots
        asm.fixed(I.create_reg_mem(C.MOV_R32_RM32, X, _mem_sp(asm.sp_bias)))
        asm.ins(lambda s: I.create_reg_u32(C.MOV_R32_IMM32, A, s[COUNTERS] + TABLE))
        asm.label(scan)
        asm.fixed(I.create_mem_reg(C.CMP_RM32_R32, MO(A, displ=0, displ_size=4), X))
        asm.jcc(C.JE_REL32_32, found)
        asm.fixed(I.create_mem_i32(C.CMP_RM32_IMM8, MO(A, displ=0, displ_size=4), 1))
        asm.jcc(C.JB_REL32_32, claim)
        asm.jcc(C.JE_REL32_32, found)
        asm.fixed(I.create_reg_i32(C.ADD_RM32_IMM32, A, ENTRY))
        asm.jcc(C.JMP_REL32_32, scan)
        asm.label(claim)
        asm.fixed(I.create_reg_u32(C.MOV_R32_IMM32, A, 1))
        asm.ins(lambda s: _lock(I.create_mem_reg(C.XADD_RM32_R32, _abs(COUNTERS, NEXT)(s), A)))
        asm.fixed(I.create_reg_i32(C.CMP_RM32_IMM32, A, slots))
        asm.jcc(C.JAE_REL32_32, over)
        asm.fixed(I.create_reg_i32(C.SHL_RM32_IMM8, A, 5))  # * ENTRY
        asm.ins(lambda s: I.create_reg_i32(C.ADD_RM32_IMM32, A, _s32(s[COUNTERS] + TABLE)))
        asm.fixed(I.create_mem_reg(C.MOV_RM32_R32, MO(A, displ=0, displ_size=4), X))
        asm.fixed(I.create(C.RETND))
        asm.label(over)
        asm.ins(lambda s: I.create_reg_u32(C.MOV_R32_IMM32, A, s[COUNTERS] + TABLE + slots * ENTRY))
        asm.label(found)
        asm.fixed(I.create(C.RETND))

    def radius(self, asm: Asm, field: int):
        """Count this call in its site's entry: 64-bit counts as two locked halves (bump)."""
        asm.jcc(C.CALL_REL32_32, self._sub(asm, "site", self._find_site))
        asm.fixed(_lock(I.create_mem_i32(C.ADD_RM32_IMM32, MO(A, displ=field, displ_size=1), 1)))
        asm.fixed(_lock(I.create_mem_i32(C.ADC_RM32_IMM32, MO(A, displ=field + 4, displ_size=1), 0)))


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v
