"""Reading and writing target memory through a halted delve session.

delve has no raw "write bytes" call; ``Set`` on a dereferenced pointer expression writes a value
of that type with PTRACE_POKEDATA (which also works on read-only code pages). We write 8-byte
words where the address is 8-aligned and single bytes for the unaligned head and tail, so every
store covers exactly the bytes of the patch and nothing beside it.
"""


def _set_word(client, addr: int, chunk: bytes):
    ctype = {1: "uint8", 8: "uint64"}[len(chunk)]
    client.set(f"*(*{ctype})({addr:#x})", str(int.from_bytes(chunk, "little")))


def write_plan(addr: int, size: int) -> list[tuple[int, int]]:
    """(address, width) stores covering [addr, addr+size): bytes to alignment, words, bytes."""
    plan, pos, end = [], addr, addr + size
    while pos < end and (pos % 8 or end - pos < 8):
        plan.append((pos, 1))
        pos += 1
    while end - pos >= 8:
        plan.append((pos, 8))
        pos += 8
    while pos < end:
        plan.append((pos, 1))
        pos += 1
    return plan


def write_bytes(client, addr: int, data: bytes):
    word = addr & ~7
    if data and (addr + len(data) - 1) & ~7 == word and len(data) > 1:
        # Within one aligned word: one store of the whole word, its other bytes as they are
        # (the target is halted). A route (5 bytes at a function entry, which Go aligns to
        # 32 bytes) is then never left half written, whenever the writer dies.
        live = bytearray(read_bytes(client, word, 8))
        live[addr - word:addr - word + len(data)] = data
        _set_word(client, word, bytes(live))
        return
    for pos, width in write_plan(addr, len(data)):
        off = pos - addr
        _set_word(client, pos, data[off:off + width])


def read_bytes(client, addr: int, size: int) -> bytes:
    return client.read_memory(addr, size)
