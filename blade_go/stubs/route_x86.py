"""Reading a route back (trust.py): amd64 and 386 routes are `call rel32` / `jmp rel32`
(E8 / E9, the same encoding on both), then INT3/NOP fill.

    parse_route(bytes.fromhex("e9fb0f0000"), 0x401000)   # [0x402000]
    parse_route(bytes.fromhex("e8..e9..cc"), site)        # [H, H2] (delay's `call H; jmp H2`)
"""
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
