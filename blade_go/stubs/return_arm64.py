"""Return stubs on arm64: results -> the instructions that put them in R0-R15 / F0-F15 (and on
the stack) as Go's ABIInternal expects, then `ret`; F's first word becomes `B stub`.

Same contract as planner.plan_return (same signature, a planner.StubPlan); the layout differs:
a pointer into the stub's own data (a string's bytes, an errorString) is one `ADR` (PC-relative,
+-1 MB: the data follows the code), every other constant the fewest MOVZ/MOVN/MOVK
(encoder_arm64.mov_imm), whose count depends on the value only, so the stub has one length
wherever it lands. Which words are pointers into the data is found by laying the values out at
two different dummy addresses: exactly those words differ.

Worked example: `func Get() (string, error)`, `--value '"chaos",error:db is down'`, REGABI_ARM64
puts the string in R0 (ptr), R1 (len) and the error in R2 (itab), R3 (data). Say the cave is at
0x10810 and the itab of *errors.errorString for error at 0xe07f8:

    0x10810  00 01 00 10   adr x0, #0x10830          ; -> "chaos"
    0x10814  a1 00 80 52   mov w1, #5                ; len("chaos") (a W write zeroes the top)
    0x10818  02 ff 80 52   mov w2, #0x7f8            ; itab *errorString,error
    0x1081c  c2 01 a0 72   movk w2, #0xe, lsl #16
    0x10820  03 01 00 10   adr x3, #0x10840          ; -> errorString{s: "db is down"}
    0x10824  c0 03 5f d6   ret
    0x10828  00 00 20 d4 (x2)   brk #0               ; fill to the 16-aligned data
    0x10830  63 68 61 6f 73 64 62 20 69 73 20 64 6f 77 6e 00   "chaos" "db is down" (align 8)
    0x10840  35 08 01 00 00 00 00 00  0a 00 00 00 00 00 00 00   s.ptr = 0x10835, s.len = 10

and F's first word (at 0xa7b00, say) becomes `44 a3 fd 17` (b 0x10810). Registers the stub
writes: the result registers and X16/X17 as scratch (Go keeps nothing in them at a function's
entry); never R18, R26-R29, SP.

The instance guard for generic shape functions is instance_guard_arm64.py.
"""
from typing import Callable, List, Optional, Sequence, Tuple

from ..abi import REG, ResultLocation
from ..errors import BladeError, Code
from ..patch import CAVE, ROUTE, Patch, split_values
from . import encoder_arm64 as E
from . import values as V
from .image import Const, Resolver, build_images
from .planner import ALIGN, StubPlan
from .placement_arm64 import ARM64, disassemble

ROUTE_LEN = 4
FILL = E.brk(0)
SCRATCH, VAR_BASE = E.IP0, E.IP1   # X16: constants/copies, X17: a variable's address
_BASE_A, _BASE_B = 0x7FF00000, 0x6EE00000   # two dummy data addresses (pointer detection)


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _reg(name: str) -> Tuple[int, bool]:
    """'R3' -> (3, False); 'F3' -> (3, True); anything else is not a result register."""
    n = name.upper()
    if n[:1] in "RF" and n[1:].isdigit() and 0 <= int(n[1:]) <= 15:
        return int(n[1:]), n[0] == "F"
    raise ValueError(f"{name} is not an arm64 result register (R0-R15, F0-F15)")


def _chunks(size: int, at: int):
    """(offset, width) pieces of `size` bytes stored at SP+`at`: each as wide as possible while
    SP+at+offset stays aligned to its width (the scaled STR form then always fits)."""
    off = 0
    while off < size:
        w = next(w for w in (8, 4, 2, 1) if w <= size - off and (at + off) % w == 0)
        yield off, w
        off += w


class _Code:
    """Instructions emitted from `base` on (ADR needs its own address). `var` is the address
    X17 holds while a var: copy runs (re-loaded after X17 served as a far store's address)."""

    def __init__(self, base: int):
        self.base, self.words, self.var = base, [], None

    @property
    def at(self) -> int:
        return self.base + 4 * len(self.words)

    def add(self, *words: bytes):
        self.words += words

    def const(self, rt: int, value: int, size: int, pointer: bool):
        if pointer:
            self.add(E.adr(rt, self.at, value))
        elif value == 0:
            self.add(E.mov_reg(rt, E.ZR))
        else:
            self.add(*E.mov_imm(rt, value))

    def var_base(self, addr: int):
        self.var = addr
        self.add(*E.mov_imm(VAR_BASE, addr))

    def address(self, rd: int, base: int, off: int):
        """rd = base + off for any offset below 16 MB (one or two ADDs)."""
        hi, lo = off & ~0xFFF, off & 0xFFF
        if hi:
            self.add(E.add_imm(rd, base, hi))
        if lo or not hi:
            self.add(E.add_imm(rd, rd if hi else base, lo))

    def load(self, rt: int, base: int, off: int, size: int, fp: bool = False):
        try:
            self.add(E.ldr(rt, base, off, size, fp))
        except E.EncodeError:   # a far field: address it through X16 (never X17, the base)
            self.address(SCRATCH, base, off)
            self.add(E.ldr(rt, SCRATCH, 0, size, fp))

    def store_sp(self, rt: int, off: int, size: int):
        try:
            self.add(E.str_(rt, E.SP, off, size))
        except E.EncodeError:   # a far slot: address it through X17, then restore X17
            self.address(VAR_BASE, E.SP, off)
            self.add(E.str_(rt, VAR_BASE, 0, size))
            if self.var is not None:
                self.add(*E.mov_imm(VAR_BASE, self.var))


def _pointer_words(img_a, img_b) -> set:
    """Offsets (within a Const image) of the 8-byte words that point into the stub's data."""
    if not isinstance(img_a, Const):
        return set()
    a, b = img_a.data, img_b.data
    return {off for off in range(0, len(a) - 7, 8) if a[off:off + 8] != b[off:off + 8]}


LOOP_MIN = 64   # a stack piece this large is zeroed / copied by a loop, not word by word


def _stack_piece(c: "_Code", p, img, ptrs, var: Optional[int]):
    """Store one stack-assigned piece at SP+p.sp_offset: a constant (word by word, or a loop of
    zero stores), or a copy of the variable at `var` (word by word, or a copy loop). Runs before
    any result register is set, so X0-X3 serve the loops."""
    data = None if var is not None else img.data[p.value_offset:p.value_offset + p.size]
    if p.size >= LOOP_MIN and (data is None or not any(data)):
        bulk = p.size // 8 * 8
        c.address(1, E.SP, p.sp_offset)                     # x1: destination
        if data is None:
            c.add(*E.mov_imm(0, var + p.value_offset))      # x0: source
        c.add(*E.mov_imm(3, bulk // 8))                      # x3: words left
        loop = c.at
        if data is None:
            c.add(E.ldr_post(2, 0, 8), E.str_post(2, 1, 8))
        else:
            c.add(E.str_post(E.ZR, 1, 8))
        c.add(E.subs_imm(3, 3, 1), E.b_cond("ne", c.at + 4, loop))
        for off, w in _chunks(p.size - bulk, p.sp_offset + bulk):   # the tail, from x1
            if data is None:
                c.add(E.ldr(2, 0, off, w), E.str_(2, 1, off, w))
            else:
                c.add(E.str_(E.ZR, 1, off, w))
        return
    for off, w in _chunks(p.size, p.sp_offset):
        src = p.value_offset + off
        if data is not None:
            v = int.from_bytes(img.data[src:src + w], "little")
            if v == 0:
                c.store_sp(E.ZR, p.sp_offset + off, w)
                continue
            c.const(SCRATCH, v, w, src in ptrs and w == 8)
        else:
            c.load(SCRATCH, VAR_BASE, src, w)
        c.store_sp(SCRATCH, p.sp_offset + off, w)


def result_code(results: Sequence[ResultLocation], images, pointers, base: int) -> List[bytes]:
    """The words that put every result where REGABI_ARM64 says, then `ret`, placed at `base`.
    `pointers[k]`: offsets of result k's words that are addresses in the stub's data. Stack
    slots are written first (their loops may use X0-X3), then the registers."""
    c = _Code(base)
    for loc, img, ptrs in zip(results, images, pointers):   # stack-assigned pieces
        stack = [p for p in loc.pieces if p.where != REG]
        if not stack:
            continue
        var = None if isinstance(img, Const) else img.addr
        c.var = None
        if var is not None:
            c.var_base(var)
        for p in stack:
            _stack_piece(c, p, img, ptrs, var)
    for loc, img, ptrs in zip(results, images, pointers):   # register-assigned pieces
        regs = [p for p in loc.pieces if p.where == REG]
        if not regs:
            continue
        is_const = isinstance(img, Const)
        c.var = None
        if not is_const:
            c.var_base(img.addr)
        for p in regs:
            n, fp = _reg(p.reg)
            if fp and p.size not in (4, 8):
                raise ValueError(f"{p.size}-byte float piece in {p.reg}")
            if not is_const:
                c.load(n, VAR_BASE, p.value_offset, p.size, fp)
                continue
            v = int.from_bytes(img.data[p.value_offset:p.value_offset + p.size], "little")
            if fp:
                if v == 0:
                    c.add(E.fmov_to_fp(n, E.ZR, p.size))
                else:
                    c.add(*E.mov_imm(SCRATCH, v, 8), E.fmov_to_fp(n, SCRATCH, p.size))
            else:
                c.const(n, v, p.size, p.value_offset in ptrs and p.size == 8)
    c.add(E.ret())
    return c.words


def _listing(insns, data_addr: int, data: bytes, route: Patch) -> str:
    lines = [f"{a:#010x}  {code.hex(' '):<14} {text}" for a, code, text in insns]
    for off in range(0, len(data), 16):
        chunk = data[off:off + 16]
        lines.append(f"{data_addr + off:#010x}  {chunk.hex(' '):<48} "
                     f"{''.join(chr(b) if 32 <= b < 127 else '.' for b in chunk)}")
    lines.append(f"{route.addr:#010x}  {route.replacement.hex(' '):<14} "
                 f"b {insns[0][0]:#x}   (entry route)")
    return "\n".join(lines)


def plan_return(results: Sequence[ResultLocation], values: Sequence[V.Value], arch: str,
                ptrsize: int, resolve: Resolver, allocate: Callable[[int], int], entry: int,
                entry_original: bytes,
                read_original: Optional[Callable[[int, int], bytes]] = None) -> StubPlan:
    """Patches that make the arm64 function at runtime address `entry` return `values`
    (planner.plan_return's contract; `allocate(n)` must give bytes within +-128 MB of entry,
    else the plan is refused)."""
    if arch != "arm64" or ptrsize != 8:
        raise ValueError(f"return_arm64 plans arm64 stubs, not {arch}/{ptrsize}")
    if len(values) != len(results):
        raise ValueError("one value per result")
    if len(entry_original) < ROUTE_LEN:
        raise ValueError(f"need the {ROUTE_LEN} original bytes at the entry")
    if entry % 4:
        raise ValueError(f"arm64 function entry {entry:#x} is not 4-aligned")

    img_a, data = build_images(results, values, ptrsize, resolve, _BASE_A)
    img_b, _ = build_images(results, values, ptrsize, resolve, _BASE_B)
    pointers = [_pointer_words(a, b) for a, b in zip(img_a, img_b)]
    code_len = 4 * len(result_code(results, img_a, pointers, _BASE_A - 0x1000))
    total = _align(code_len) + len(data) if data else code_len

    stub = allocate(total)
    if stub % 4:
        raise BladeError(Code.UNEXPECTED_STATUS, f"cave at {stub:#x} is not 4-aligned")
    data_addr = stub + _align(code_len)
    images, data2 = build_images(results, values, ptrsize, resolve, data_addr)
    try:
        words = result_code(results, images, pointers, stub)
    except E.EncodeError as e:
        raise BladeError(Code.UNEXPECTED_STATUS, f"cannot encode the return stub: {e}") from None
    code = b"".join(words)
    assert len(code) == code_len and len(data2) == len(data), "stub size changed with its address"
    pad = _align(code_len) - code_len
    block = code + (FILL * (pad // 4) + data2 if data2 else b"")

    route_code = ARM64.jump(entry, stub)   # BladeError beyond +-128 MB
    original = read_original(stub, len(block)) if read_original else bytes(len(block))
    cave = Patch(stub, bytes(original), block, CAVE)
    route = Patch(entry, bytes(entry_original[:ROUTE_LEN]), route_code, ROUTE)
    insns = tuple(disassemble(code, stub))
    return StubPlan([*split_values(cave, data_addr), route], stub, code_len, len(data2),
                    _listing(insns, data_addr, data2, route), insns)
