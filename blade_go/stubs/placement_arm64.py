"""arm64 placement: F decoded with capstone, its frame setup, sites, and relocation.

The same decisions as placement.py makes for x86 (read its docstring first), with A64's shape:
every instruction is 4 bytes, so a route is one `B cave` (+-128 MB) that displaces exactly one
instruction at the entry, and a linear decode is exact: the only data inside a Go function is
the literal pool older toolchains put after an unconditional branch (decode() marks it, see
there) and the zero words the linker pads functions with (`udf #0`, never reached).

    code = FunctionCode.decode(binary.read(fn.entry, fn.end - fn.entry), fn.entry + bias,
                               "arm64", name=fn.name)      # placement.py's, with ARM64 below
    code.frame                    # FrameSetup (None for a frameless leaf)
    site = code.entry_site()      # the first instruction (4 bytes: one `B`)
    site = code.after_frame_setup_site(4)
    code.return_sites()           # address of every `ret`
    tail = relocate(site, new_addr); len(tail) == site.relocated_len
    jump(src, dst, ARM64) / call(src, dst, ARM64)   # B / BL, BladeError beyond +-128 MB

Go's prologue (cmd/internal/obj/arm64/obj7.go), after the stack check `ldr x16,[x28,#16];
cmp sp,x16; b.ls <morestack>` (absent in NOSPLIT functions):

    frame <= 0xf0:  str x30,[sp,#-N]!;  stur x29,[sp,#-8];  sub x29,sp,#8
    larger:         sub x20,sp,#N [; sub x20,x20,#M, lsl 12]  (or: mov(k) x27,#N; sub x20,sp,x27);
                    stp x29,x30,[x20,#-8];  mov sp,x20;  sub x29,sp,#8

After it, [SP] holds F's return address (the saved LR), [SP-8] the caller's frame pointer and
X29 points at it; F's locals and its callees' argument area are [SP+8, SP+N). So FrameSetup is
(end, sp_delta=N, scratch=N-8, saved_bp=True, sets_bp=True), with the scratch bytes starting at
SP+8 on arm64 (`SCRATCH_AT`), not at SP.

Relocation keeps every absolute target and has a length that depends only on the instruction
(never on where it goes), provided the new place is within +-128 MB of F (the route's own reach)
and +-4 GB of what F's ADRPs address:

    ADRP xd, T                 -> adrp xd, T                               (1)
    ADR xd, T                  -> adrp xd, T; add xd, xd, #lo12(T)          (2)
    LDR wt/xt, =T (literal)    -> adrp xt, T; ldr xt, [xt, #lo12(T)]        (2; 3 with an add
                                                                             when lo12 is not a
                                                                             multiple of the size)
    LDRSW xt / LDR st,dt,qt, =T-> adrp x17, T; add x17, x17, #lo12; ldr ..., [x17]   (3)
    PRFM =T                    -> nop                                       (1: a hint)
    B T                        -> b T                                       (1)
    B.cond / CBZ / CBNZ /
    TBZ / TBNZ T               -> <inverse> .+8; b T                        (2)
    BL T  (last only)          -> adrp x30, R; add x30, x30, #lo12(R); b T  (3; R = the BL's
                                  return address in F: the callee returns straight into F, and
                                  no cave address is ever saved on a goroutine's stack)
    BLR xn (last only)         -> adrp x30, R; add x30, x30, #lo12(R); br xn (3)
    anything else              -> itself                                    (1)

The scratch register of the FP/LDRSW literal form is X17 (or X16): Go keeps nothing in them
across the sites we patch (entry, after the frame setup, before a `ret`), and one that a
displaced instruction itself mentions is never chosen.

Worked example (a frameless leaf, `if x < 0 { return -x }; ...`, at 0xab630, its first
instruction relocated to 0x10200):

    0xab630  60 00 f8 b6  tbz x0, #0x3f, #0xab63c
      ->  0x10200  40 00 f8 b7  tbnz x0, #0x3f, #0x10208     (inverse, over the next word)
          0x10204  0e 6d 02 14  b #0xab63c

>>> from blade_go.stubs.placement import FunctionCode
>>> f = FunctionCode.decode(bytes.fromhex("6000f8b6 e00300cb c0035fd6"), 0xab630, "arm64")
>>> relocate(f.entry_site(), 0x10200).hex(" ")
'40 00 f8 b7 0e 6d 02 14'
"""
import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

from ..errors import BladeError, Code
from . import encoder_arm64 as E
from .placement import ArchCode, FrameSetup, FunctionCode, Insn, Site, falls_through

ROUTE_LEN = 4           # one B
B_REACH = E.B_RANGE     # +-128 MB
SCRATCH_AT = 8          # arm64: a frame's scratch bytes start at SP+8 ([SP] is the saved LR)
CONTEXT_REGS = ("x26", "w26")
SCAN = 16               # the frame setup is among F's first instructions


# --------------------------------------------------------------------------- decoding

_MD = None


def _capstone():
    global _MD
    if _MD is None:
        import capstone
        _MD = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
        _MD.detail = True
    return _MD


def _sext(v: int, bits: int) -> int:
    return v - (1 << bits) if v >> (bits - 1) & 1 else v


@dataclass(frozen=True)
class PCRel:
    """What a PC-relative instruction is, from its fixed fields."""
    kind: str        # "b", "bl", "bcond", "cbz", "tbz", "adr", "adrp", "literal"
    target: int
    word: int


def pc_relative(word: int, pc: int) -> Optional[PCRel]:
    """Classify an A64 word by its opcode fields; None when it does not address relative to PC.

    >>> pc_relative(0x17ffffdc, 0xaaaf0)   # b #0xaaa60
    PCRel(kind='b', target=698976, word=402653148)
    """
    if word & 0x7C000000 == 0x14000000:                      # B / BL
        kind = "bl" if word >> 31 else "b"
        return PCRel(kind, pc + _sext(word & 0x3FFFFFF, 26) * 4, word)
    if word & 0xFF000010 == 0x54000000:                      # B.cond
        return PCRel("bcond", pc + _sext(word >> 5 & 0x7FFFF, 19) * 4, word)
    if word & 0x7E000000 == 0x34000000:                      # CBZ / CBNZ
        return PCRel("cbz", pc + _sext(word >> 5 & 0x7FFFF, 19) * 4, word)
    if word & 0x7E000000 == 0x36000000:                      # TBZ / TBNZ
        return PCRel("tbz", pc + _sext(word >> 5 & 0x3FFF, 14) * 4, word)
    if word & 0x1F000000 == 0x10000000:                      # ADR / ADRP
        imm = _sext((word >> 5 & 0x7FFFF) << 2 | (word >> 29 & 3), 21)
        if word >> 31:
            return PCRel("adrp", (pc & ~0xFFF) + (imm << 12), word)
        return PCRel("adr", pc + imm, word)
    if word & 0x3B000000 == 0x18000000:                      # LDR (literal), LDRSW, PRFM
        return PCRel("literal", pc + _sext(word >> 5 & 0x7FFFF, 19) * 4, word)
    return None


def _flow(word: int, rel: Optional[PCRel]) -> str:
    if rel is not None:
        if rel.kind == "bcond" and word & 0xE == 0xE:
            return "branch"   # b.al / b.nv: always taken
        return {"b": "branch", "bl": "call", "bcond": "cond", "cbz": "cond",
                "tbz": "cond"}.get(rel.kind, "next")   # adr/adrp/literal: "next"
    masked = word & 0xFFFFFC1F
    if masked == 0xD65F0000:
        return "ret"
    if masked == 0xD63F0000:
        return "call"
    if masked == 0xD61F0000:
        return "indirect"
    if word & 0xFFE0001F == 0xD4200000 or word & 0xFFFF0000 == 0:  # BRK, UDF
        return "other"
    return "next"


GO_UNDEF = 0xBEA71700   # what Go's assembler emits for UNDEF on arm64 (capstone: undecodable)
_LITERAL_SIZE = {(0, 0): 4, (1, 0): 8, (2, 0): 4, (0, 1): 4, (1, 1): 8, (2, 1): 16}  # (opc, V)


def decode(code: bytes, addr: int) -> List[Insn]:
    """Every instruction of `code` (F's bytes at runtime address `addr`), in order.

    Insn.raw is the capstone instruction; Insn.target the absolute target of a direct branch or
    call (ADR/ADRP/literal loads address data, not code: their target is pc_relative()'s).
    Data inside F -- the literal pools older toolchains (Go <= 1.21) put after an unconditional
    branch -- becomes Insn(flow="other", text=".word ...", raw=None): the words F's literal
    loads read, and every word of a run that holds a word capstone cannot decode (the run
    starts after the last unconditional branch/ret before it and ends where a branch of F lands
    or F ends). An undecodable word that code would fall into is refused."""
    if len(code) % 4 or addr % 4:
        raise BladeError(Code.PARAMETER_INVALID, f"arm64 code at {addr:#x} is not whole "
                                                 "4-byte instructions")
    md, out, data = _capstone(), [], set()
    bad = []
    for k in range(0, len(code), 4):
        chunk, pc = code[k:k + 4], addr + k
        word = int.from_bytes(chunk, "little")
        got = list(md.disasm(chunk, pc)) if pc not in data else None
        if word == GO_UNDEF:   # a trap after calls that never return (runtime assembly)
            out.append(Insn(pc, bytes(chunk), "undef (Go's UNDEF)", "other", None, None))
            continue
        if not got:
            if got is not None:
                bad.append(len(out))
            out.append(Insn(pc, bytes(chunk), f".word {word:#010x}", "other", None, None))
            continue
        ins = got[0]
        rel = pc_relative(word, pc)
        if rel is not None and rel.kind == "literal":
            size = _LITERAL_SIZE.get((word >> 30, word >> 26 & 1), 0)
            data.update(range(rel.target & ~3, rel.target + size, 4))
        text = f"{ins.mnemonic} {ins.op_str}".strip()
        flow = _flow(word, rel)
        target = rel.target if rel and flow in ("branch", "cond", "call") else None
        out.append(Insn(pc, bytes(chunk), text, flow, target, ins))
    for k in sorted(data):   # pool words read before their load was seen: data all the same
        j = (k - addr) // 4
        if 0 <= j < len(out) and out[j].raw is not None:
            out[j] = _data_word(out[j])
    return _pools(out, bad, addr) if bad else out


def _data_word(i: Insn) -> Insn:
    return Insn(i.addr, i.code, f".word {int.from_bytes(i.code, 'little'):#010x}", "other",
                None, None)


def _ends_flow(i: Insn) -> bool:
    """An unconditional transfer; `b .` is not one here: the compiler never emits it, while a
    pool's 8-aligned constant can start with its word (0x14000000)."""
    return i.flow in ("ret", "indirect") or i.flow == "branch" and i.target != i.addr


def _pools(out: List[Insn], bad: List[int], addr: int) -> List[Insn]:
    """Mark the runs holding undecodable words as data (decode's docstring). A run reaches to
    the next address a branch of F lands at: code after a pool reached only through a jump
    table would be taken for data too, which can only hide a site (a missed `ret`), never make
    blade-go write over a constant it took for code."""
    targets = {i.target for i in out if i.target is not None and i.target != i.addr}
    for j in bad:
        start = j
        while start and not _ends_flow(out[start - 1]):
            start -= 1
        if start == 0 or any(out[m].addr in targets for m in range(start, j + 1)):
            raise BladeError(Code.PARAMETER_INVALID,
                             f"undecodable word {out[j].code.hex()} at {out[j].addr:#x}: not "
                             "machine code of a Go function")
        end = j + 1
        while end < len(out) and out[end].addr not in targets:
            end += 1
        for m in range(start, end):
            if out[m].raw is not None:
                out[m] = _data_word(out[m])
    return out


def disassemble(code: bytes, addr: int) -> List[Tuple[int, bytes, str]]:
    """[(address, word, capstone's text)] of arm64 code (listings of planned stubs)."""
    return [(i.addr, i.code, i.text) for i in decode(code, addr)]


def _mentions(i: Insn, names) -> bool:
    """Whether instruction i reads or writes any register in `names` (x17, w17, ...); capstone's
    access lists plus its text, so a gap in either cannot hide a use."""
    words = set(re.findall(r"[a-z]+[0-9]*", i.text.split(" ", 1)[-1])) if " " in i.text else set()
    if words & set(names):
        return True
    try:
        r, w = i.raw.regs_access()
        return any(i.raw.reg_name(x) in names for x in (*r, *w))
    except Exception:  # pragma: no cover - capstone without access info
        return False


# --------------------------------------------------------------------------- the arch

class Arm64Code(ArchCode):
    name = "arm64"
    bitness = 64
    ptrsize = 8
    route_len = ROUTE_LEN    # B
    call_len = 4             # BL
    context_registers = CONTEXT_REGS

    def decode(self, code: bytes, addr: int) -> List[Insn]:
        return decode(code, addr)

    def relocate(self, site: Site, new_addr: int) -> bytes:
        return relocate(site, new_addr)

    def jump(self, src: int, dst: int) -> bytes:
        """`b dst` at src (4 bytes); BladeError beyond +-128 MB (see route_refusal)."""
        if not in_reach(src, dst):
            raise route_refusal(src, dst)
        return E.b(src, dst)

    def call(self, src: int, dst: int) -> bytes:
        """`bl dst` at src (4 bytes); BladeError beyond +-128 MB."""
        if not in_reach(src, dst):
            raise route_refusal(src, dst)
        return E.bl(src, dst)

    def displace_problem(self, insn: Insn) -> Optional[str]:
        if insn.flow == "call" and insn.target is None and \
                int.from_bytes(insn.code, "little") >> 5 & 31 == E.LR:
            return (f"the call at {insn.addr:#x} ({insn.text}) jumps through the link register "
                    "its relocation must set")
        if insn.flow == "other":
            return f"{insn.text} at {insn.addr:#x} is not code that runs"
        return None

    def reads_context_register(self, fc, start: int) -> bool:
        """Whether some path of F from `start` reads X26 (the closure context) before writing
        it; a call (it clobbers every register) or a write (any write of W26 zeroes the upper
        half too) ends the path."""
        insns = fc.insns
        index = {i.addr: k for k, i in enumerate(insns)}
        todo, seen = [index.get(start)], set()
        while todo:
            k = todo.pop()
            if k is None or k in seen or k >= len(insns):
                continue
            seen.add(k)
            i = insns[k]
            if _mentions(i, CONTEXT_REGS):
                try:
                    r, w = i.raw.regs_access()
                    reads = {i.raw.reg_name(x) for x in r}
                    writes = {i.raw.reg_name(x) for x in w}
                except Exception:   # no access lists: take it for a read
                    reads, writes = set(CONTEXT_REGS), set()
                if reads & set(CONTEXT_REGS) or not writes & set(CONTEXT_REGS):
                    return True   # a read, or a use capstone could not classify: assume a read
                continue          # written first: this path no longer needs the caller's X26
            if i.flow == "call":
                continue
            if i.flow in ("next", "cond"):
                todo.append(k + 1)
            if i.flow in ("branch", "cond") and i.target is not None:
                todo.append(index.get(i.target))
        return False

    def frame_setup(self, insns: List[Insn]) -> Optional[FrameSetup]:
        """Go's arm64 frame setup among F's first instructions (module doc), None when F has
        none. Only the stack check (loads, compares, moves into X27/X17, conditional branches:
        no store) and the large frame's computation of X20 may come before it."""
        head = insns[:SCAN]
        words = [int.from_bytes(i.code, "little") for i in head]
        x27, x20 = None, None   # X27's constant; SP minus X20 (the large frame's new SP)
        for k, w in enumerate(words):
            nxt = words[k + 1:k + 3]
            # small frame: str x30, [sp, #-N]!; stur x29, [sp, #-8]; sub x29, sp, #8
            if w & 0xFFE00FFF == 0xF8000FFE:
                n = -_sext(w >> 12 & 0x1FF, 9)
                if nxt == [0xF81F83FD, 0xD10023FD] and n > 0 and x20 is None:
                    return FrameSetup(head[k + 2].end, n, n - 8, saved_bp=True, sets_bp=True)
                return None
            # large frame: stp x29, x30, [x20, #-8]; mov sp, x20; sub x29, sp, #8
            if w == 0xA93FFA9D:
                if nxt == [0x9100029F, 0xD10023FD] and x20:
                    return FrameSetup(head[k + 2].end, x20, x20 - 8, saved_bp=True, sets_bp=True)
                return None
            if w & 0xFF80001F == 0xD280001B:                 # movz x27, #imm, lsl #s
                x27 = (w >> 5 & 0xFFFF) << (16 * (w >> 21 & 3))
            elif w & 0xFF80001F == 0xF280001B and x27 is not None:   # movk x27
                s = 16 * (w >> 21 & 3)
                x27 = x27 & ~(0xFFFF << s) | (w >> 5 & 0xFFFF) << s
            elif w & 0xFF8003FF == 0xD10003F4:               # sub x20, sp, #imm{, lsl 12}
                x20 = (w >> 10 & 0xFFF) << (12 if w >> 22 & 1 else 0)
            elif w & 0xFF8003FF == 0xD1000294 and x20 is not None:   # sub x20, x20, #imm
                x20 += (w >> 10 & 0xFFF) << (12 if w >> 22 & 1 else 0)
            elif w == 0xCB3B63F4 and x27 is not None:        # sub x20, sp, x27
                x20 = x27
            elif not _stack_check(head[k]):
                return None
        return None


def _stack_check(i: Insn) -> bool:
    """May precede the frame setup: `ldr x16,[x28,#16]`, `cmp sp,x16`, `b.ls`, and the large
    frame's `sub x17, sp, #N` / `mov x27, ...` / `cmp x17, x16` variants: they write no memory."""
    if i.flow == "cond":
        return True
    return i.flow == "next" and i.text.split(" ")[0] in (
        "ldr", "ldur", "cmp", "cmn", "sub", "subs", "add", "adds", "mov", "movk", "movz", "movn")


# --------------------------------------------------------------------------- relocation

def _scratch(site: Site) -> int:
    for n in (E.IP1, E.IP0):
        if not any(_mentions(i, (f"x{n}", f"w{n}")) for i in site.instructions):
            return n
    raise BladeError(Code.PARAMETER_INVALID, "the displaced instructions use both X16 and X17: "
                                             "no scratch register is left to relocate them")


def _lo12(t: int) -> int:
    return t & 0xFFF


def _relocate_one(i: Insn, at: int, scratch: int) -> List[bytes]:
    """i re-encoded as the instructions that run at `at` with the same effect."""
    w = int.from_bytes(i.code, "little")
    rel = pc_relative(w, i.addr)
    rt = w & 31
    if rel is None:
        if i.flow == "call":   # BLR xn: LR := i's return address in F, then br xn
            return [E.adrp(E.LR, at, i.end), E.add_imm(E.LR, E.LR, _lo12(i.end)),
                    E.br(w >> 5 & 31)]
        return [i.code]
    t = rel.target
    if rel.kind == "b":
        return [E.b(at, t)]
    if rel.kind == "bl":
        return [E.adrp(E.LR, at, i.end), E.add_imm(E.LR, E.LR, _lo12(i.end)),
                E.b(at + 8, t)]
    if rel.kind == "bcond":
        cond = w & 0xF
        if cond & 0xE == 0xE:   # b.al / b.nv: always taken
            return [E.b(at, t)]
        return [E.b_cond(cond ^ 1, at, at + 8), E.b(at + 4, t)]
    if rel.kind == "cbz":
        size = 8 if w >> 31 else 4
        inv = E.cbz if w >> 24 & 1 else E.cbnz
        return [inv(rt, at, at + 8, size), E.b(at + 4, t)]
    if rel.kind == "tbz":
        bit = (w >> 31) << 5 | (w >> 19 & 31)
        inv = E.tbz if w >> 24 & 1 else E.tbnz
        return [inv(rt, bit, at, at + 8), E.b(at + 4, t)]
    if rel.kind == "adrp":
        return [E.adrp(rt, at, t)] if rt != E.ZR else [E.nop()]
    if rel.kind == "adr":
        if rt == E.ZR:
            return [E.nop()]
        return [E.adrp(rt, at, t), E.add_imm(rt, rt, _lo12(t))]
    # LDR (literal) family: opc (bits 31-30) and V (bit 26)
    opc, v = w >> 30, w >> 26 & 1
    if not v and opc == 3:   # PRFM: a hint, nothing to keep
        return [E.nop()]
    if not v and opc in (0, 1):
        size = 4 if opc == 0 else 8
        if _lo12(t) % size == 0:
            return [E.adrp(rt, at, t), E.ldr(rt, rt, _lo12(t), size)]
        return [E.adrp(rt, at, t), E.add_imm(rt, rt, _lo12(t)), E.ldr(rt, rt, 0, size)]
    s = scratch
    head = [E.adrp(s, at, t), E.add_imm(s, s, _lo12(t))]
    if not v:   # opc 2: LDRSW
        return head + [E.ldrsw(rt, s, 0)]
    if opc == 3:
        raise BladeError(Code.PARAMETER_INVALID, f"undefined literal load {i.text} at {i.addr:#x}")
    return head + [E.ldr(rt, s, 0, {0: 4, 1: 8, 2: 16}[opc], fp=True)]


def relocate(site: Site, new_addr: int) -> bytes:
    """The displaced instructions re-encoded to run at `new_addr`, with the same effect (module
    doc); the length never depends on `new_addr`. BladeError when a target is out of reach."""
    if new_addr % 4:
        raise ValueError(f"arm64 code must be 4-aligned, not at {new_addr:#x}")
    scratch = None
    out, at = bytearray(), new_addr
    for i in site.instructions:
        w = int.from_bytes(i.code, "little")
        rel = pc_relative(w, i.addr)
        if rel is not None and rel.kind == "literal" and (w >> 26 & 1 or w >> 30 == 2) \
                and scratch is None:
            scratch = _scratch(site)
        try:
            words = _relocate_one(i, at, scratch)
        except E.EncodeError as e:
            raise BladeError(Code.UNEXPECTED_STATUS, f"cannot relocate {i.text} from {i.addr:#x} "
                                                     f"to {at:#x}: {e}") from None
        for word in words:
            out += word
            at += 4
    return bytes(out)


def relocated_len(site: Site) -> int:
    """Bytes relocate() emits for `site`, wherever it goes (module doc's table)."""
    total = 0
    for i in site.instructions:
        w = int.from_bytes(i.code, "little")
        rel = pc_relative(w, i.addr)
        if rel is None:
            total += 3 if i.flow == "call" else 1
        elif rel.kind in ("b", "adrp") or rel.kind == "bcond" and w & 0xE == 0xE:
            total += 1
        elif rel.kind == "bl":
            total += 3
        elif rel.kind in ("bcond", "cbz", "tbz", "adr"):
            total += 1 if rel.kind == "adr" and w & 31 == E.ZR else 2
        else:   # literal
            opc, v = w >> 30, w >> 26 & 1
            if not v and opc == 3:
                total += 1
            elif not v and opc in (0, 1):
                total += 2 if _lo12(rel.target) % (4 if opc == 0 else 8) == 0 else 3
            else:
                total += 3
    return total * 4


def in_reach(src: int, dst: int) -> bool:
    return -B_REACH <= dst - src < B_REACH


def route_refusal(src: int, dst: int) -> BladeError:
    return BladeError(Code.UNEXPECTED_STATUS,
                      f"no room for the stub: the cave at {dst:#x} is {abs(dst - src) >> 20} MB "
                      f"from {src:#x}, beyond an arm64 branch's reach (+-128 MB); blade-go does "
                      "not route through a veneer, which would displace more of F")


ARM64 = Arm64Code()


# --------------------------------------------------------------------------- arm64 shorthands
# (for the arm64 planners: the same as placement's functions with ARM64 filled in)

class FunctionCodeARM64(FunctionCode):
    """placement.FunctionCode over arm64 code: `FunctionCodeARM64.decode(code, addr, name=..)`
    is `FunctionCode.decode(code, addr, ARM64, name=..)`."""

    @classmethod
    def decode(cls, code: bytes, addr: int, goarch="arm64", name: str = "the function"):
        if goarch not in ("arm64", ARM64):
            raise ValueError(f"FunctionCodeARM64 decodes arm64, not {goarch}")
        return super().decode(code, addr, ARM64, name)


def jump(src: int, dst: int, arch: ArchCode = ARM64) -> bytes:
    """`b dst` at src; BladeError beyond +-128 MB."""
    return ARM64.jump(src, dst)


def call(src: int, dst: int, arch: ArchCode = ARM64) -> bytes:
    """`bl dst` at src; BladeError beyond +-128 MB."""
    return ARM64.call(src, dst)


__all__ = ["ARM64", "Arm64Code", "FunctionCodeARM64", "PCRel", "pc_relative", "decode",
           "disassemble", "relocate", "relocated_len", "falls_through", "jump", "call",
           "in_reach", "route_refusal", "ROUTE_LEN", "SCRATCH_AT"]
