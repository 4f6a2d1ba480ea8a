"""A patch: bytes written into the target, with the bytes they replaced.

Every action expresses its effect on the target as a list of patches, so that destroy (and the
session supervisor acting on --timeout, and a fresh session after a crash) can revert any
experiment without knowing which action made it.

Roles decide the order of application and removal:
- ``cave``: code/data written into unused executable bytes. Applied first, removed last.
- ``route``: the few bytes at a function's entry that send execution into the cave. Applied
  last, removed first; after removing routes the supervisor lets the target run briefly before
  removing caves, so no thread that was already inside a stub is left executing freed bytes.
- ``data``: writable bytes a stub updates while it runs (condition counters). Applied with the
  caves' group, before routes; restored with the caves, whatever the stub left there.
- ``value``: the data part of a stub's cave that the program may be handed (a returned
  string's bytes, the ``errors.errorString`` of an ``error:`` value, an args string, a panic
  value): kept apart from the code (its own patch, right after the code's 16-aligned end), so
  code is always restored at once while a value the program may still reach is restored only
  when no reference to it is found, else *retained* (session/patching.py, session/reclaim.py).
  Applied with the caves.
- ``arm``: a byte inside a cave that the stub reads on every call to decide whether to act
  (delay). Its `original` equals the cave's own byte there (disarmed), so it is written after
  the cave and restored first: revert disarms, waits until no goroutine is still inside the
  fault (a drain: return addresses on stacks), and only then restores routes and caves.
"""
from dataclasses import dataclass

ROUTE = "route"
CAVE = "cave"
DATA = "data"
ARM = "arm"
VALUE = "value"
ROLES = (CAVE, ROUTE, DATA, ARM, VALUE)


@dataclass(frozen=True)
class Patch:
    addr: int  # runtime address in the target (load bias applied)
    original: bytes  # what the target held there before (from the executable file, verified live)
    replacement: bytes  # what the experiment writes
    role: str = CAVE

    @property
    def end(self) -> int:
        return self.addr + len(self.replacement)

    def to_json(self) -> dict:
        return {"addr": self.addr, "original": self.original.hex(),
                "replacement": self.replacement.hex(), "role": self.role}

    @classmethod
    def from_json(cls, d: dict) -> "Patch":
        return cls(int(d["addr"]), bytes.fromhex(d["original"]), bytes.fromhex(d["replacement"]),
                   d.get("role", CAVE))


def split_values(cave: Patch, data_at: int) -> list:
    """A stub's cave patch as [code] or [code, value]: the bytes from `data_at` on (the values
    handed to the program) become a `value` patch of their own.

    >>> code, value = split_values(Patch(0x1000, bytes(32), b"\\xc3" + b"\\xcc" * 15 + b"chaos" + bytes(11)), 0x1010)
    >>> (hex(code.addr), len(code.replacement), value.role, value.replacement[:5])
    ('0x1000', 16, 'value', b'chaos')
    """
    k = data_at - cave.addr
    if k <= 0 or k >= len(cave.replacement):
        return [cave]
    return [Patch(cave.addr, cave.original[:k], cave.replacement[:k], cave.role),
            Patch(data_at, cave.original[k:], cave.replacement[k:], VALUE)]
