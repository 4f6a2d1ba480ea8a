"""Reading a route back (trust.py) on arm64: every instruction is one little-endian 32-bit
word; a route is `B imm26` / `BL imm26` words (target = address + 4 * sign-extended imm26,
+-128 MB), then fill words (BRK #0 or NOP).

    parse_route(bytes.fromhex("00040014"), 0x400000)   # B +0x1000 -> [0x401000]
"""
from typing import List, Optional

B, BL = 0x14000000, 0x94000000
OP_MASK = 0xFC000000
BRK0, NOP = 0xD4200000, 0xD503201F
FILL = (BRK0, NOP)
REACH = 1 << 27  # +-128 MB


def branch_target(word: int, addr: int) -> Optional[int]:
    """Target of the B/BL `word` at addr; None when it is neither."""
    if word & OP_MASK not in (B, BL):
        return None
    imm = word & 0x3FFFFFF
    if imm & (1 << 25):
        imm -= 1 << 26
    return (addr + 4 * imm) & ((1 << 64) - 1)


def encode_b(src: int, dst: int, link: bool = False) -> bytes:
    """`B dst` (`BL dst`) at src; ValueError when dst is unaligned or out of reach."""
    off = dst - src
    if off % 4 or not -REACH <= off < REACH:
        raise ValueError(f"no B from {src:#x} to {dst:#x} (+-128 MB, 4-aligned)")
    return ((BL if link else B) | ((off >> 2) & 0x3FFFFFF)).to_bytes(4, "little")


def parse_route(code: bytes, addr: int) -> Optional[List[int]]:
    """As route_x86.parse_route: targets of the leading B/BL words, the rest fill; else None."""
    if len(code) % 4 or addr % 4:
        return None
    words = [int.from_bytes(code[i:i + 4], "little") for i in range(0, len(code), 4)]
    targets = []
    for k, w in enumerate(words):
        t = branch_target(w, addr + 4 * k)
        if t is None:
            break
        targets.append(t)
    if not targets or any(w not in FILL for w in words[len(targets):]):
        return None
    return targets
