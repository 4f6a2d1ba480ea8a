"""arm64 direct branches as data: reading a route back (trust.py) and finding the code that
reaches a function (inspector/references.py). Every instruction is one little-endian 32-bit
word; a route is `B imm26` / `BL imm26` words (target = address + 4 * sign-extended imm26,
+-128 MB), then fill words (BRK #0 or NOP).

    parse_route(bytes.fromhex("00040014"), 0x400000)   # B +0x1000 -> [0x401000]
    code_references(text, text_addr, fn.entry, fn.entry, fn.end)   # B/BL + ADRP/ADD to F
"""
import re
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


_TOP_B = re.compile(rb"[\x14-\x17\x94-\x97]")   # top byte of a B/BL word
_TOP_ADRP = re.compile(rb"[\x90\xb0\xd0\xf0]")  # top byte of an ADRP word


def code_references(text: bytes, base: int, entry: int, lo: int, hi: int) -> int:
    """How many instructions of `text` (at address base) reach `entry` directly: a B/BL to it
    from outside [lo, hi) (F's own morestack block branches back to its entry), or its address
    taken with `ADRP xN, page; ADD xN, xN, #lo12` (closures, method values). One regex pass per
    opcode's top byte, then the whole word is checked."""
    fb, n = int.from_bytes, 0
    last = len(text) - 4
    for m in _TOP_B.finditer(text):
        p = m.start() - 3
        if p % 4 or p < 0:
            continue
        at = base + p
        if branch_target(fb(text[p:p + 4], "little"), at) == entry and not lo <= at < hi:
            n += 1
    page, lo12 = entry & ~0xFFF, entry & 0xFFF
    for m in _TOP_ADRP.finditer(text):
        p = m.start() - 3
        if p % 4 or p < 0 or p + 4 > last:
            continue
        w = fb(text[p:p + 4], "little")
        if w & 0x9F000000 != 0x90000000:
            continue
        imm = ((w >> 3) & 0x1FFFFC) | ((w >> 29) & 3)
        if imm & (1 << 20):
            imm -= 1 << 21
        if ((base + p) & ~0xFFF) + (imm << 12) != page:
            continue
        add = fb(text[p + 4:p + 8], "little")
        rd = w & 31
        if add & 0xFFC00000 == 0x91000000 and (add >> 10) & 0xFFF == lo12 \
                and (add >> 5) & 31 == rd:
            n += 1
    return n
