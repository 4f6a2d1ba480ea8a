"""Plan a return stub: results + parsed values -> the patches that make F return those values.

Worked example: `func Get() (string, error)` under the amd64 register ABI with
`--value '"chaos",error:db is down'`. The ABI says: string -> RAX (ptr), RBX (len);
error -> RCX (itab), RDI (data). Say the cave is at 0x401000 and the binary's itab of
*errors.errorString for error is at 0x4e1f28. The stub is 4 `movabs` of 10 bytes (40 bytes of
code + `ret`); the data area starts at the next 16-byte boundary (0x401030):

    0x401000  48 b8 30 10 40 00 00 00 00 00   movabs rax, 0x401030     ; -> "chaos"
    0x40100a  48 bb 05 00 00 00 00 00 00 00   movabs rbx, 0x5          ; len("chaos")
    0x401014  48 b9 28 1f 4e 00 00 00 00 00   movabs rcx, 0x4e1f28     ; itab *errorString,error
    0x40101e  48 bf 40 10 40 00 00 00 00 00   movabs rdi, 0x401040     ; -> errorString struct
    0x401028  c3                              ret
    0x401029  cc cc cc cc cc cc cc            (padding to 16)
    0x401030  63 68 61 6f 73                  "chaos"
    0x401035  64 62 20 69 73 20 64 6f 77 6e   "db is down"
    0x40103f  00                              (align the struct to 8)
    0x401040  35 10 40 00 00 00 00 00         errorString.s.ptr = 0x401035
    0x401048  0a 00 00 00 00 00 00 00         errorString.s.len = 10

and F's first 5 bytes become `e9 <rel32>` = jmp 0x401000. F's caller then sees exactly what
`return "chaos", errors.New("db is down")` would have produced.

Sizing before placing: every instruction's length depends only on whether its constant is zero
(pointers to cave data never are), so the stub is emitted once against a dummy data address to
learn its size, the cave is allocated, and the stub is emitted again at its real address.
"""
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

from ..abi import REG, ResultLocation
from ..errors import BladeError, Code
from ..patch import CAVE, ROUTE, Patch, split_values
from . import values as V
from .image import Const, Resolver, build_images

ALIGN = 16
_DUMMY_DATA_BASE = 0x7FFF0000  # nonzero, fits 32 bits: only used to size the stub


@dataclass(frozen=True)
class StubPlan:
    patches: List[Patch]        # [cave (stub code), value (its data, if any), route (jmp at entry)]
    stub_addr: int
    stub_size: int              # code bytes
    data_size: int              # data bytes after the 16-aligned code
    listing: str = field(repr=False, default="")
    instructions: tuple = field(repr=False, default=())  # ((addr, code bytes, text), ...)


def encoder_for(arch: str, ptrsize: int):
    """The return-stub encoder of `arch` (encoder_amd64 / _386 / _arm64), chosen by select.py."""
    from .select import return_encoder
    enc = return_encoder(arch)
    if enc.ptrsize != ptrsize:
        raise ValueError(f"{arch} has {enc.ptrsize}-byte pointers, not {ptrsize}")
    return enc()


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def stub_code(enc, results: Sequence[ResultLocation], images) -> list:
    """The instructions that put every result where the ABI expects it, then `ret`."""
    out: list = []
    for loc, img in zip(results, images):
        if not isinstance(img, Const):
            out += enc.var_base(img.addr)
        for p in loc.pieces:
            is_float = p.where == REG and enc.is_float(p.reg)
            if p.where == REG and not enc.has_registers:
                raise ValueError(f"{enc.name} has no register results ({loc.name} in {p.reg})")
            if isinstance(img, Const):
                raw = img.data[p.value_offset:p.value_offset + p.size]
                v = int.from_bytes(raw, "little")
                if p.where != REG:
                    out += enc.stack_const(p.sp_offset, raw)
                elif is_float:
                    out += enc.xmm_const(p.reg, v, p.size)
                else:
                    out += enc.reg_const(p.reg, v)
            elif p.where != REG:
                out += enc.stack_from_var(p.sp_offset, p.value_offset, p.size)
            elif is_float:
                out += enc.xmm_from_var(p.reg, p.value_offset, p.size)
            else:
                out += enc.reg_from_var(p.reg, p.value_offset, p.size)
    return out + enc.ret()


def _listing(addr: int, insns: list, data_addr: int, data: bytes, route: Patch) -> str:
    lines, stub = [], addr
    for i in insns:
        lines.append(f"{addr:#010x}  {i.code.hex(' '):<36} {i.text}")
        addr += len(i.code)
    for off in range(0, len(data), 16):
        chunk = data[off:off + 16]
        lines.append(f"{data_addr + off:#010x}  {chunk.hex(' '):<48} "
                     f"{''.join(chr(b) if 32 <= b < 127 else '.' for b in chunk)}")
    lines.append(f"{route.addr:#010x}  {route.replacement.hex(' '):<36} "
                 f"jmp {stub:#x}   (entry route)")
    return "\n".join(lines)


def plan_return(results: Sequence[ResultLocation], values: Sequence[V.Value], arch: str,
                ptrsize: int, resolve: Resolver, allocate: Callable[[int], int], entry: int,
                entry_original: bytes,
                read_original: Optional[Callable[[int, int], bytes]] = None) -> StubPlan:
    """Patches that make the function at runtime address `entry` return `values`.

    `allocate(n)` gives the runtime address of n free cave bytes within rel32 reach of entry;
    `read_original(addr, n)` the bytes there now (the file's bytes; zeros if not given — the
    session verifies live bytes against `original` before writing, so a wrong guess is refused,
    never written over).
    """
    if len(values) != len(results):
        raise ValueError("one value per result")
    enc = encoder_for(arch, ptrsize)
    if len(entry_original) < enc.route_len:
        raise ValueError(f"need the {enc.route_len} original bytes at the entry")

    images, data = build_images(results, values, ptrsize, resolve, _DUMMY_DATA_BASE)
    code_len = sum(len(i.code) for i in stub_code(enc, results, images))
    total = _align(code_len) + len(data) if data else code_len

    stub = allocate(total)
    data_addr = stub + _align(code_len)
    images, data2 = build_images(results, values, ptrsize, resolve, data_addr)
    insns = stub_code(enc, results, images)
    code = b"".join(i.code for i in insns)
    assert len(code) == code_len and len(data2) == len(data), "stub size changed with its address"
    block = code + (enc.fill * (_align(code_len) - code_len) + data2 if data2 else b"")

    try:
        jmp = enc.jmp(entry, stub)
    except ValueError:
        raise BladeError(Code.UNEXPECTED_STATUS,
                         f"no room for the stub: the cave at {stub:#x} is out of jmp reach of "
                         f"{entry:#x}") from None
    original = read_original(stub, len(block)) if read_original else bytes(len(block))
    cave = Patch(stub, bytes(original), block, CAVE)
    route = Patch(entry, bytes(entry_original[:enc.route_len]), jmp.code, ROUTE)
    addrs, at = [], stub
    for i in insns:
        addrs.append((at, i.code, i.text))
        at += len(i.code)
    # the data (values handed to the program) is a patch of its own (patch.VALUE)
    return StubPlan([*split_values(cave, data_addr), route], stub, code_len, len(data2),
                    _listing(stub, insns, data_addr, data2, route), tuple(addrs))
