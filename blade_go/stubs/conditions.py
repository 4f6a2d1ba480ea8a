"""Conditions decided inside the injected code: `--effect-count`, `--effect-percent`, `--match`.

A condition prefix is shared by every action: it runs first in the stub, jumps to the label
SKIP when the call must run untouched, and otherwise falls through into the action's code.

    conds = Conditions(count=3, percent=50, matches=parse_match('id==42', params, ptrsize))
    asm = Asm(arch)                  # conditions_x86.Asm (amd64/386); arm64: its own assembler
    emit_prefix(asm, conds)          # seen++, matchers, percent draw, count, faulted++
    ...action code...; asm.label(SKIP); ...what runs when the condition does not hold...
    code, listing = asm.assemble(stub_addr, {COUNTERS: rw_addr, **constants})

Order (each block jumps to SKIP when it fails): `seen += 1`; every matcher (`&&`); the percent
draw; the count (`lock xadd`, so N racing calls take exactly N tickets); `faulted += 1`. The
count block is last, so only calls that will fault consume it. On amd64 one locked operation on
a shared line per call is the main cost of an armed condition under concurrency, so the prefix
makes at most one: with a percent draw, the draw comes first (before the matchers: still one
independent draw per call) and its state counts the calls; with a count and no matcher, every
call takes a ticket and the ticket counts them; otherwise `seen += 1` (see seen_source).

Worked example (amd64 register ABI): `func F(id int, name string) int` at 0x4a1840 with
`--value -1 --match 'id==42 && name^="ten"' --effect-count 2`, the cave at 0x400810, the
counters at 0x5c18e0 (id in RAX, name in RBX/RCX; listing from conditions_return). F's stack
check runs first (conditions_return.check_first), then the prefix, then the action:

    0x400810  49 3b 66 10 0f 86 44 10 0a 00   cmp rsp,[r14+0x10]; jbe 0x4a185e  ; F's stack
                                              ; check, relocated (morestack block of F)
    0x40081a  f0 48 ff 05 be 10 1c 00         lock inc qword ptr [0x5c18e0]  ; seen
    0x400822  4c 8b e0                        mov r12, rax                   ; id
    0x400825  49 81 fc 2a 00 00 00            cmp r12, 0x2a
    0x40082c  0f 85 6c 00 00 00               jne 0x40089e                   ; -> skip
    0x400832  4c 8b e1                        mov r12, rcx                   ; len(name)
    0x400835  49 81 fc 03 00 00 00            cmp r12, 3
    0x40083c  0f 82 5c 00 00 00               jb 0x40089e
    0x400842  4c 8b eb                        mov r13, rbx                   ; name's bytes
    0x400845  66 45 8b a5 00 00 00 00         mov r12w, [r13]
    0x40084d  66 44 3b 25 5b 00 00 00         cmp r12w, [0x4008b0]           ; "te" (cave data)
    0x400855  0f 85 43 00 00 00               jne 0x40089e
    0x40085b  45 8a a5 02 00 00 00            mov r12b, [r13+2]
    0x400862  44 3a 25 49 00 00 00            cmp r12b, [0x4008b2]           ; "n"
    0x400869  0f 85 2f 00 00 00               jne 0x40089e
    0x40086f  41 bc 01 00 00 00               mov r12d, 1
    0x400875  f0 4c 0f c1 25 72 10 1c 00      lock xadd [0x5c18f0], r12      ; count ticket
    0x40087e  49 81 fc 02 00 00 00            cmp r12, 2
    0x400885  0f 83 13 00 00 00               jae 0x40089e                   ; tickets 0, 1 fault
    0x40088b  f0 48 ff 05 55 10 1c 00         lock inc qword ptr [0x5c18e8]  ; faulted
    0x400893  48 b8 ff ff ff ff ff ff ff ff   movabs rax, 0xffffffffffffffff ; the action
    0x40089d  c3                              ret
    0x40089e  e9 a3 0f 0a 00                  jmp 0x4a1846      ; skip: back into F after the
                                                                ; displaced check

--caller and the blast radius (issue 19): the --caller check comes right after `seen` (a
cheap reject before any matcher): the return address of each of the first caller_depth frames
(the direct caller's at [SP at entry]; deeper ones through the frame-pointer chain, bounded by
the goroutine's stack: conditions_amd64.caller) is compared with the sorted code ranges of the
named callers (caller_table). With the blast-radius table (every armed experiment, when there
is room) each way out of the prefix counts the call in its site's entry instead of `seen` and
`faulted`: excluded by --caller, rejected by another condition, or faulted (TABLE below).

Counters live in writable memory (the stub's code and constants are in an executable cave,
which is read-only to the target): COUNTERS_SIZE bytes laid out as below, little endian, so
`status` reads them from /proc/PID/mem. Registers: the prefix writes only the arch's scratch
registers (amd64 R12/R13, 386 EAX/ECX) and the flags; every argument register, RDX/EDX (the
closure context), R14 (g) and R15 stay intact, so the skip path can run F as if untouched.

Statistics of the percent draw: a shared state advanced by a Weyl step with `lock xadd` (no
lost update under concurrency: every call gets its own state value) and hashed by a bijective
mixer (amd64: SplitMix64's finalizer on 64 bits; 386: the "lowbias32" mixer on 32 bits). The
call faults when the hash is below floor(P/100 * 2^bits): over a full period the hashes are each
value exactly once, so the share is P/100 to within 2^-32, and the mixers' avalanche makes
consecutive calls behave as independent draws (tests/test_conditions_exec.py checks the count
and the pairs of consecutive calls against binomial bounds at 1e-6). The state starts at a
random seed per experiment.
"""
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

SKIP = "skip"
COUNTERS = "counters"
CALLERS = "callers"  # read-only table of the --caller code ranges (cave data)
SEEN, FAULTED, COUNT, RNG = 0, 8, 16, 24
COUNTERS_SIZE = 32
COUNTERS_ALIGN = 32
MAX_STRING = 256  # longest string a matcher compares (the compare is unrolled)

# Blast radius (issue 19): after the four counters, a claim ticket and a fixed table of call
# sites. Each entry: the direct caller's return address, then how many of its calls the
# --caller check excluded, how many another condition rejected, how many were faulted (seen is
# their sum: every call bumps exactly one of them, one atomic per call). Entries are claimed
# in order with `lock xadd` on NEXT; a site seen first by two racing calls may get two entries
# (the reader adds them up). When the SLOTS entries are taken, calls of new sites go to the
# overflow entry after them (its address word is OVERFLOW_RA), counted but not told apart.
NEXT = 32
TABLE = 64
SLOTS = 16
ENTRY = 32
E_RA, E_EXCLUDED, E_OTHER, E_FAULTED = 0, 8, 16, 24
OVERFLOW_RA = 1
RADIUS_SIZE = TABLE + (SLOTS + 1) * ENTRY
SMALL_SLOTS = 4  # the table where the writable page's free tail has no room for SLOTS
MAX_DEPTH = 8           # --caller-depth: the walk is unrolled, one block per frame
MAX_CALLER_RANGES = 64  # code ranges of the --caller functions (out-of-line + inlined copies)


# ----------------------------------------------------------------------------- operands

@dataclass(frozen=True)
class Reg:
    """A register holding the value at F's entry ("RAX".."R11")."""
    name: str


@dataclass(frozen=True)
class Stack:
    """Bytes at [SP + sp_offset] at F's entry (SP points at the return address)."""
    sp_offset: int


@dataclass(frozen=True)
class Mem:
    """Bytes at [p + offset] where p is the pointer held by `base` (a nil p: no match)."""
    base: "Operand"
    offset: int


Operand = Union[Reg, Stack, Mem]


@dataclass(frozen=True)
class Match:
    """One `ref op literal` term. Integers, bools and pointers (against nil) are `INT` terms of
    `size` bytes; strings are `STRING` terms over their (ptr, len) operands."""
    text: str                 # the term as written, for listings and messages
    kind: str                 # INT or STRING
    op: str                   # == != < <= > >= ^=
    value: Union[int, bytes]
    operands: Tuple[Operand, ...]  # INT: (value,) or (lo, hi) for 8 bytes on 386; STRING: (ptr, len)
    size: int = 0             # INT: bytes of the value
    signed: bool = False


INT, STRING = "int", "string"


@dataclass(frozen=True)
class Conditions:
    count: Optional[int] = None     # fault the first `count` calls that pass every other check
    percent: Optional[int] = None   # 0..100
    matches: Tuple[Match, ...] = ()
    seed: int = field(default_factory=lambda: int.from_bytes(os.urandom(8), "little"))
    # --caller (issue 19): runtime [lo, hi) code ranges of the named callers (out-of-line
    # bodies and inlined copies), found within the first caller_depth frames
    callers: Tuple[Tuple[int, int], ...] = ()
    caller_depth: int = 1
    caller_names: Tuple[str, ...] = ()
    radius: bool = False  # keep the blast-radius table (call sites with their counts)
    radius_slots: int = SLOTS  # its entries (fewer where the writable page has less room)
    compact: bool = False  # --caller walk and table lookup as subroutines: a smaller stub

    @property
    def active(self) -> bool:
        return self.count is not None or self.percent is not None or bool(self.matches) \
            or bool(self.callers)

    def constants(self) -> List[Tuple[str, bytes]]:
        """Read-only data the prefix refers to: (symbol, bytes) of each string literal, and
        the --caller ranges (caller_table)."""
        out = [(f"m{i}", m.value) for i, m in enumerate(self.matches)
               if m.kind == STRING and m.value]
        if self.callers:
            out.append((CALLERS, caller_table(self.callers)))
        return out

    @property
    def counters_size(self) -> int:
        return TABLE + (self.radius_slots + 1) * ENTRY if self.radius else COUNTERS_SIZE

    def counters_image(self, ptrsize: int) -> bytes:
        """Initial bytes of the counter block: zeros and the draw's seed (and the blast-radius
        table: empty, its overflow entry marked)."""
        seed = self.seed & ((1 << (8 * ptrsize)) - 1)
        img = bytes(RNG) + seed.to_bytes(8, "little")
        if self.radius:
            img += bytes(TABLE - COUNTERS_SIZE + self.radius_slots * ENTRY)
            img += OVERFLOW_RA.to_bytes(8, "little") + bytes(ENTRY - 8)
        return img

    def layout(self, arch: str) -> dict:
        """What `read_counters` needs to know about this prefix's counter block."""
        d = {"seen": seen_source(self, arch), "seed": self.seed & ((1 << 64) - 1)}
        if self.radius:
            d.update(seen=SEEN_TABLE, size=self.counters_size,
                     radius={"table": TABLE, "slots": self.radius_slots, "entry": ENTRY})
        return d

    def describe(self) -> dict:
        d = {}
        if self.caller_names:
            d["caller"] = ",".join(self.caller_names)
            d["caller_depth"] = self.caller_depth
        if self.count is not None:
            d["effect_count"] = self.count
        if self.percent is not None:
            d["effect_percent"] = self.percent
        if self.matches:
            d["match"] = " && ".join(m.text for m in self.matches)
        return d


# How `calls seen` is kept. One atomic on a shared line per call is what an armed condition
# costs most under concurrency, so on amd64 a prefix that already makes one per call lets it
# count the calls too: the draw's state advances by GOLDEN per call (seen = (state - seed) /
# GOLDEN, GOLDEN odd so invertible mod 2^64), a lone count's ticket is taken by every call.
SEEN_COUNTER, SEEN_DRAW, SEEN_TICKET = "counter", "draw", "ticket"
SEEN_TABLE = "table"  # the blast-radius table's entries count every call (and every fault)
GOLDEN = 0x9E3779B97F4A7C15


def seen_source(conds: "Conditions", arch: str) -> str:
    from .select import stub_arch  # does the arch's draw / ticket count the calls too?
    if not stub_arch(arch).seen_shortcuts:
        return SEEN_COUNTER  # 386: the draw state is 32 bits and the ticket saturates
    if conds.percent is not None and conds.percent < 100:
        return SEEN_DRAW
    if conds.count is not None and not conds.matches:
        return SEEN_TICKET
    return SEEN_COUNTER


def read_counters(raw: bytes, layout: Optional[dict] = None) -> dict:
    """{"calls_seen": n, "calls_faulted": n} from the counter block's bytes; `layout` is
    Conditions.layout() as recorded at create (None: a plain seen counter)."""
    u64 = lambda off: int.from_bytes(raw[off:off + 8], "little")
    how = (layout or {}).get("seen", SEEN_COUNTER)
    if how == SEEN_TABLE:
        sites, overflow = read_radius(raw, layout)
        rows = sites + ([overflow] if overflow else [])
        return {"calls_seen": sum(r["calls"] for r in rows),
                "calls_faulted": sum(r["faulted"] for r in rows)}
    if how == SEEN_DRAW:
        seen = ((u64(RNG) - int(layout["seed"])) * pow(GOLDEN, -1, 1 << 64)) % (1 << 64)
    elif how == SEEN_TICKET:
        seen = u64(COUNT)
    else:
        seen = u64(SEEN)
    return {"calls_seen": seen, "calls_faulted": u64(FAULTED)}


def read_radius(raw: bytes, layout: dict):
    """([{return_address, calls, faulted, excluded, rejected}], overflow or None) from the
    counter block's bytes: entries of one address added up, most calls first."""
    r = layout["radius"]
    u64 = lambda off: int.from_bytes(raw[off:off + 8], "little")
    merged: Dict[int, List[int]] = {}
    overflow = None
    for k in range(r["slots"] + 1):
        at = r["table"] + k * r["entry"]
        if at + r["entry"] > len(raw):
            break
        ra = u64(at + E_RA)
        counts = [u64(at + E_EXCLUDED), u64(at + E_OTHER), u64(at + E_FAULTED)]
        if ra == OVERFLOW_RA and k == r["slots"]:
            if sum(counts):
                overflow = _site_row(None, counts)
            continue
        if ra == 0:
            continue  # free, or claimed an instant ago and not yet written (counts are 0)
        acc = merged.setdefault(ra, [0, 0, 0])
        for i in range(3):
            acc[i] += counts[i]
    rows = [_site_row(ra, c) for ra, c in merged.items()]
    rows.sort(key=lambda x: (-x["calls"], x["return_address"]))
    return rows, overflow


def _site_row(ra, counts):
    excluded, other, faulted = counts
    return {"return_address": ra, "calls": excluded + other + faulted, "faulted": faulted,
            "excluded_by_caller": excluded, "rejected_by_other_conditions": other}


def caller_table(ranges) -> bytes:
    """The --caller check's data: the highest end, then each [lo, hi) pair, sorted, as 8-byte
    words, every bound plus one: the check compares return addresses, and a call that ends a
    range (a call to a function that never returns, e.g. panic) returns to its end."""
    ranges = sorted(ranges)
    words = [max(hi for _, hi in ranges) + 1]
    for lo, hi in ranges:
        words += [lo + 1, hi + 1]
    return b"".join(w.to_bytes(8, "little") for w in words)


def merge_ranges(ranges) -> Tuple[Tuple[int, int], ...]:
    """Sorted, disjoint [lo, hi) ranges covering the same addresses."""
    out: List[List[int]] = []
    for lo, hi in sorted(r for r in ranges if r[1] > r[0]):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def listing_text(listing) -> str:
    return "\n".join(f"{a:#010x}  {c.hex(' '):<36} {t}" if c else f"{a:#010x}  {t}"
                     for a, c, t in listing)


# ----------------------------------------------------------------------------- the prefix

def backend(arch: str):
    """The condition blocks of `arch` (conditions_amd64 / _386 / _arm64), chosen by select.py."""
    from .select import conditions_backend
    return conditions_backend(arch)


def percent_threshold(percent: int, bits: int) -> int:
    """Hashes below this fault: floor(P/100 * 2^bits)."""
    return (percent << bits) // 100


def emit_prefix(asm, conds: Conditions, skip: str = SKIP):
    """The shared condition prefix (see the module docstring); jumps to `skip` on no.

    With the blast-radius table every way out records the call in its site's entry (one
    atomic per call): a call the --caller check excludes, one another condition rejects, a
    faulted one. The separate seen and faulted counters are then not kept (the table has
    them)."""
    be = backend(asm.arch)
    seen = seen_source(conds, asm.arch)
    radius = conds.radius
    asm.radius_slots, asm.compact = conds.radius_slots, conds.compact
    reject = asm.fresh("rejected") if radius else skip
    exclude = asm.fresh("excluded") if radius else skip
    if seen == SEEN_DRAW:  # drawn first: the draw counts every call (independent of matches)
        be.percent(asm, conds.percent, reject)
    elif seen == SEEN_COUNTER and not radius:
        be.bump(asm, SEEN)
    if conds.callers:
        be.caller(asm, conds, exclude)
    for i, m in enumerate(conds.matches):
        if m.kind == STRING:
            be.match_string(asm, m, f"m{i}", reject)
        else:
            be.match_int(asm, m, reject)
    if seen != SEEN_DRAW and conds.percent is not None and conds.percent < 100:
        be.percent(asm, conds.percent, reject)
    if conds.count is not None:
        be.count(asm, conds.count, reject)
    if not radius:
        be.bump(asm, FAULTED)
        if getattr(asm, "_subs", None):  # --caller's subroutines, out of the way
            over = asm.fresh("fault")
            be.jmp(asm, over)
            be.emit_subroutines(asm)
            asm.label(over)
        return
    be.radius(asm, E_FAULTED)
    go_on = asm.fresh("fault")
    be.jmp(asm, go_on)
    asm.label(reject)
    be.radius(asm, E_OTHER)
    be.jmp(asm, skip)
    if conds.callers:
        asm.label(exclude)
        be.radius(asm, E_EXCLUDED)
        be.jmp(asm, skip)
    be.emit_subroutines(asm)
    asm.label(go_on)


def chunks(n: int, word: int) -> List[Tuple[int, int]]:
    """(offset, width) loads covering n bytes: whole words, the last one overlapping back when
    n is not a multiple (never reading past n); below a word, exact 4/2/1 pieces."""
    if n >= word:
        out = [(off, word) for off in range(0, n - word + 1, word)]
        if n % word:
            out.append((n - word, word))
        return out
    out, off = [], 0
    for w in (4, 2, 1):
        while n - off >= w:
            out.append((off, w))
            off += w
    return out


# jcc that leaves the matcher (to SKIP) when `value op k` is false; (signed, unsigned)
FAIL_JCC = {"==": ("ne", "ne"), "!=": ("e", "e"), "<": ("ge", "ae"), "<=": ("g", "a"),
            ">": ("le", "be"), ">=": ("l", "b")}
