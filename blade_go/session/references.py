"""Does the target still hold a pointer into a value cave? A conservative scan, while halted.

A stub hands out pointers into its value cave (patch.VALUE): the bytes of a returned string,
the `errors.errorString` of an `error:` value, an args string, a panic value. After the route
is gone no new such pointer can be made; the ones already made live in registers (a goroutine
between the call and the use of its result), on goroutine stacks, or in heap objects the
program stored them in (a circuit breaker's last error, a cache). Before a value cave's bytes
go back to the file's (zeros), blade-go looks for any of them; one found, or no scan possible,
and the bytes are retained (session/reclaim.py), never overwritten:

- every thread's registers (general and vector: Go copies 16-byte values through XMM), from dlv;
- every writable private mapping of the process (Go heap arenas and goroutine stacks, data,
  bss, signal stacks), read from /proc/PID/mem: any aligned word whose value lies in a cave.

Goroutines that are not on a thread keep their registers in their `g` (heap) or on their
stack, so the memory scan covers them. The scan is conservative: an integer that happens to
equal a cave address, or a stale copy in a dead stack slot or freed heap memory, counts as a
reference, which only delays the restore.
"""
import re
import struct

CHUNK = 16 << 20
# Reading memory happens while the target is halted: past this much resident writable memory
# the scan would pause the target too long (the pause budget of one halt), so it is not
# attempted and the values stay retained (never restored on a guess).
SCAN_LIMIT = 256 << 20


class TooLarge(Exception):
    pass


def _groups(ranges, ptrsize):
    """(upper bytes pattern, [(lo, hi)]) per 256-byte block the ranges touch."""
    out = {}
    for lo, hi in ranges:
        for block in range(lo >> 8, ((hi - 1) >> 8) + 1):
            out.setdefault(block.to_bytes(ptrsize - 1, "little"), []).append((lo, hi))
    return out


def memory_references(pid: int, ranges, ptrsize: int = 8, limit: int = 4) -> list:
    """[(address, value)] of aligned words in pid's writable private memory pointing into
    `ranges` (half-open), at most `limit` of them."""
    return _scan(pid, ranges, ptrsize, lambda found: len(found) >= limit)


def referenced(pid: int, ranges, ptrsize: int = 8) -> dict:
    """{index in ranges: "the word at A holds V"} for every range some word points into; the
    scan ends once each range has one. Raises TooLarge past SCAN_LIMIT."""
    out = {}

    def enough(found):
        addr, value = found[-1]
        for i, (lo, hi) in enumerate(ranges):
            if lo <= value < hi and i not in out:
                out[i] = f"the word at {addr:#x} holds {value:#x}"
        return len(out) == len(ranges)
    _scan(pid, ranges, ptrsize, enough)
    return out


def _regions(pid: int) -> list:
    regions = []
    with open(f"/proc/{pid}/maps") as f:
        regions = []
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            perms = parts[1]
            name = parts[5] if len(parts) > 5 else ""
            if perms[0] == "r" and perms[1] == "w" and perms[3] == "p" and name not in (
                    "[vvar]", "[vsyscall]", "[vvar_vclock]"):
                regions.append((lo, hi))
    return regions


def _scan(pid: int, ranges, ptrsize: int, done) -> list:
    """Aligned words pointing into ranges, in address order, until done(found) says so."""
    groups = _groups(ranges, ptrsize)
    found = []
    runs = list(_resident_runs(pid, _regions(pid)))
    total = sum(hi - lo for lo, hi in runs)
    if total > SCAN_LIMIT:
        raise TooLarge(f"{total >> 20} MB of resident writable memory, more than the "
                       f"{SCAN_LIMIT >> 20} MB scanned while the target is halted")
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for lo, hi in runs:
            for start in range(lo, hi, CHUNK):
                n = min(CHUNK, hi - start)
                try:
                    mem.seek(start)
                    data = mem.read(n)
                except OSError:
                    continue  # guard pages and the like
                for pattern, spans in groups.items():
                    pos = data.find(pattern, 1)
                    while pos != -1:
                        word = pos - 1
                        if (start + word) % ptrsize == 0:
                            value = int.from_bytes(data[word:word + ptrsize], "little")
                            if any(a <= value < b for a, b in spans):
                                found.append((start + word, value))
                                if done(found):
                                    return found
                        pos = data.find(pattern, pos + 1)
    return found


PAGE = 4096
PRESENT_OR_SWAPPED = (1 << 63) | (1 << 62)


def _resident_runs(pid: int, regions):
    """The parts of `regions` whose pages are in memory or swap (/proc/PID/pagemap): Go maps
    its heap arenas 64 MB at a time, mostly never touched; untouched pages read as zeros and
    hold no pointer, and skipping them keeps the target's stop short. Without pagemap access
    every page is read."""
    try:
        pagemap = open(f"/proc/{pid}/pagemap", "rb", buffering=0)
    except OSError:
        yield from regions
        return
    with pagemap:
        for lo, hi in regions:
            try:
                pagemap.seek(lo // PAGE * 8)
                raw = pagemap.read((hi - lo) // PAGE * 8)
            except OSError:
                yield (lo, hi)
                continue
            start = None
            for i, (entry,) in enumerate(struct.iter_unpack("<Q", raw)):
                if entry & PRESENT_OR_SWAPPED:
                    if start is None:
                        start = lo + i * PAGE
                elif start is not None:
                    yield (start, lo + i * PAGE)
                    start = None
            if start is not None:
                yield (start, hi)


_REG = re.compile(r"^\s*(\w+) = 0x([0-9a-fA-F]+)", re.M)
# dlv prints an arm64 vector register as a block of its lane views, e.g.
#    V1 =  {
#       D = {u = {0x14bf024ac573fab2, 0xecc7131e96c2fd86}, s = {...}},
#       ...
#       Q = {u = {0xecc7131e96c2fd8614bf024ac573fab2}, s = {...}}
#       }
# (delve 1.27 pkg/proc/arm64_arch.go): the whole 128 bits are Q's unsigned view.
_VREG = re.compile(r"^\s*(V\d+) =\s*\{.*?\bQ = \{u = \{0x([0-9a-fA-F]+)\}", re.M | re.S)


def registers(text: str) -> list:
    """[(name, hex digits)] of every register in dlv's ListRegisters text: one-line registers
    (amd64's and 386's, arm64's X0-X30, SP, PC) and arm64's V0-V31 blocks (their 128 bits)."""
    return _REG.findall(text) + _VREG.findall(text)


def register_referenced(client, ranges) -> dict:
    """{index in ranges: "thread T register R = value"} for ranges some register of a stopped
    thread points into (general and vector registers, their 64- and 32-bit lanes)."""
    out = {}
    for t in client.list_threads():
        text = client.call("ListRegisters", {"ThreadID": t["id"], "IncludeFp": True})
        for name, hexval in registers(text.get("Registers", "")):
            values = {int(hexval, 16)}
            for width in (16, 8):
                values.update(int(hexval[max(0, i - width):i], 16)
                              for i in range(len(hexval), 0, -width))
            for v in values:
                for i, (lo, hi) in enumerate(ranges):
                    if lo <= v < hi and i not in out:
                        out[i] = f"thread {t['id']} {name} = {v:#x}"
        if len(out) == len(ranges):
            break
    return out
