"""x86 direct branches as data: reading a route back (trust.py: amd64 and 386 routes are
`call rel32` / `jmp rel32`, E8 / E9, the same encoding on both, then INT3/NOP fill) and finding
the code that reaches a function (inspector/references.py).

    parse_route(bytes.fromhex("e9fb0f0000"), 0x401000)   # [0x402000]
    parse_route(bytes.fromhex("e8..e9..cc"), site)        # [H, H2] (delay's `call H; jmp H2`)
"""
import re
from typing import List, Optional

REL32_OPS = (0xE8, 0xE9)  # call rel32, jmp rel32
FILL = (0xCC, 0x90)       # int3, nop


def parse_route(code: bytes, addr: int) -> Optional[List[int]]:
    """The targets of the direct branches `code` (at runtime address addr) starts with, when
    it is nothing but such branches and fill; None otherwise."""
    i, targets = 0, []
    while i + 5 <= len(code) and code[i] in REL32_OPS:
        rel = int.from_bytes(code[i + 1:i + 5], "little", signed=True)
        targets.append(addr + i + 5 + rel)
        i += 5
    if not targets or any(b not in FILL for b in code[i:]):
        return None
    return targets


_REL32 = re.compile(rb"[\xe8\xe9]")
# lea reg, [rip+disp32] (amd64): how closures and method values take a function's address
_LEA_RIP = re.compile(rb"\x8d[\x05\x0d\x15\x1d\x25\x2d\x35\x3d]")


def _rel32_references(text: bytes, base: int, entry: int, lo: int, hi: int) -> int:
    """Direct `call rel32` / `jmp rel32` (E8/E9) to entry from outside [lo, hi) (F's own
    morestack block jumps back to its entry). Every E8/E9 byte is tried as an opcode: a hit may
    be a false positive."""
    fb, n = int.from_bytes, 0
    for m in _REL32.finditer(text, 0, max(0, len(text) - 4)):
        p = m.start()
        if fb(text[p + 1:p + 5], "little", signed=True) + base + p + 5 == entry and \
                not lo <= base + p < hi:
            n += 1
    return n


def code_references_amd64(text: bytes, base: int, entry: int, lo: int, hi: int) -> int:
    """rel32 branches to entry, and its address taken by `lea reg, [rip+disp32]`."""
    n = _rel32_references(text, base, entry, lo, hi)
    for m in _LEA_RIP.finditer(text, 0, max(0, len(text) - 6)):
        p = m.start()
        if int.from_bytes(text[p + 2:p + 6], "little", signed=True) + base + p + 6 == entry:
            n += 1
    return n


def code_references_386(text: bytes, base: int, entry: int, lo: int, hi: int) -> int:
    """rel32 branches to entry, and its absolute address as an immediate."""
    return _rel32_references(text, base, entry, lo, hi) + text.count(entry.to_bytes(4, "little"))
