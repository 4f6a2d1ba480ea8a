"""Patches read back from the state file are checked against the executable before any of
their bytes is written into a process.

Destroy (and a timeout) writes each patch's `original` back into the target, as root when
blade-go runs as root. The state file is data on disk: a forged or damaged record must not turn
destroy into "write these bytes there". So before a revert every patch must be what blade-go
itself would have planned for this executable:
- `original` equals the bytes the process maps from its executable file at that address
  (for a cave: zeros or INT3 padding; for a route: the function's own code), so a revert can
  only ever write back the file's own bytes;
- a cave patch, and a value patch (a stub's data, kept apart from its code; also what a
  record keeps as `retained` after destroy), lies entirely inside one real cave of the binary
  (header, text-end or INT3 padding) that the process maps executable;
- a route patch lies inside a function (the record's function when it names one) and its
  replacement is only direct branches (amd64/386: `jmp rel32` / `call rel32`, E9/E8; arm64:
  `B`/`BL`; the arch's parse_route, stubs/select.py) whose targets lie inside this record's own
  cave patches, then fill (INT3/NOP; arm64 BRK/NOP words);
- patches do not overlap, originals and replacements have the same non-zero length;
- an arm patch (delay's on/off byte) is one byte inside one of this record's cave patches, and
  its `original` is that cave patch's own byte there (revert only ever disarms);
- a data patch (condition counters) lies in the zero-filled tail of the last writable segment's
  page (stubs/conditions_data.py) and its `original` is zeros: it is not file-backed, and
  revert only ever writes zeros there.
Anything else is refused with 43000 Forbidden and nothing is written.
"""
from __future__ import annotations

from typing import List

from .errors import BladeError, Code
from .patch import ARM, CAVE, DATA, ROLES, ROUTE, VALUE, Patch
from .procfs import start_time

MAX_PATCH = 1 << 16  # no stub blade-go plans is anywhere near this


def _refuse(uid, why: str):
    raise BladeError(Code.FORBIDDEN,
                     f"forbidden: the state of experiment {uid} holds a patch blade-go would not "
                     f"have planned ({why}); the state file may have been tampered with, "
                     "nothing was written")


def parse_patches(record: dict, uid: str = "?") -> List[Patch]:
    """The record's patches as Patch objects; malformed entries are a clear 67001 error."""
    raw = record.get("patches") or []
    if not isinstance(raw, list):
        raise BladeError(Code.DATABASE_ERROR, f"experiment {uid}: 'patches' is not a list in "
                                              "the state file")
    out = []
    for i, d in enumerate(raw):
        try:
            p = Patch.from_json(d)
            if p.role not in ROLES:
                raise ValueError(f"unknown role {p.role!r}")
        except KeyError as e:
            raise BladeError(Code.DATABASE_ERROR, f"experiment {uid}: patch #{i} in the state "
                                                  f"file lacks the field {e}")
        except (TypeError, ValueError, AttributeError) as e:
            raise BladeError(Code.DATABASE_ERROR,
                             f"experiment {uid}: patch #{i} in the state file is malformed ({e})")
        out.append(p)
    return out


def trusted_patches(pid: int, record: dict, uid: str = "?") -> List[Patch]:
    """The record's patches, checked against the executable of process pid (module doc).

    When pid no longer names the process the record was made for (its start time differs), the
    patches are returned unchecked: callers write nothing into another process."""
    patches = parse_patches(record, uid)
    started = start_time(pid)
    if not patches or started is None or started != record.get("target_start_time"):
        return patches
    from .inspector import open_binary
    with open_binary(pid=pid) as binary:
        check_against(binary, patches, record.get("function"), uid)
    return patches


def check_against(binary, patches: List[Patch], function=None, uid: str = "?") -> None:
    """Refuse (43000) patches that blade-go would not plan for this binary (module doc)."""
    bias = binary.load_bias
    arms = [p for p in patches if p.role == ARM]
    for d in (p for p in patches if p.role == DATA):
        _check_data(binary, d, uid)
    patches = [p for p in patches if p.role != ARM]
    spans = sorted((p.addr, p.end) for p in patches)
    for (_, hi), (lo, _) in zip(spans, spans[1:]):
        if lo < hi:
            _refuse(uid, f"patches overlap at {lo:#x}")
    caves = binary.caves(int3=False)  # INT3 padding (a pass over .text) only when needed
    cave_patches = [p for p in patches if p.role == CAVE]
    for p in patches:
        n = len(p.replacement)
        if n == 0 or n != len(p.original) or n > MAX_PATCH or p.addr < bias:
            _refuse(uid, f"patch at {p.addr:#x}: {len(p.original)} original and {n} replacement "
                         "bytes")
        lo = p.addr - bias
        if p.role == DATA:
            continue  # checked above: not file-backed
        try:
            file_bytes = binary.read(lo, n)
        except BladeError:
            _refuse(uid, f"{p.addr:#x}+{n} is not mapped from {binary.path}")
        if file_bytes != p.original:
            _refuse(uid, f"the original bytes at {p.addr:#x} differ from {binary.path}'s")
        if p.role in (CAVE, VALUE):
            inside = any(c.start <= lo and lo + n <= c.end for c in caves)
            if not inside and caves is not None and all(c.kind != "int3-pad" for c in caves):
                caves = binary.caves(int3=True)
                inside = any(c.start <= lo and lo + n <= c.end for c in caves)
            if not inside:
                _refuse(uid, f"{p.role} patch {p.addr:#x}+{n} is not inside a cave of {binary.path}")
        else:
            _check_route(binary, p, cave_patches, function, uid)
    for a in arms:
        _check_arm(a, cave_patches, uid)


def _check_data(binary, d: Patch, uid):
    from .stubs.conditions_data import data_cave
    cave = data_cave(binary.image)
    lo = d.addr - binary.load_bias
    n = len(d.replacement)
    if (cave is None or not (cave[0] <= lo and lo + n <= cave[1]) or n != len(d.original)
            or any(d.original)):
        _refuse(uid, f"the data patch at {d.addr:#x}+{n} is not zeroed bytes in the free tail "
                     "of the writable segment")


def _check_arm(a: Patch, caves: List[Patch], uid):
    home = next((c for c in caves if c.addr <= a.addr and a.end <= c.end), None)
    if len(a.replacement) != 1 or len(a.original) != 1 or home is None:
        _refuse(uid, f"the arm byte at {a.addr:#x} is not one byte inside the experiment's caves")
    if a.original != home.replacement[a.addr - home.addr:a.end - home.addr]:
        _refuse(uid, f"the arm byte at {a.addr:#x} would not restore its cave's own byte")


def _check_route(binary, p: Patch, caves: List[Patch], function, uid):
    from .stubs.select import stub_arch  # the arch's route encoding (x86 rel32, arm64 B/BL)
    impl = stub_arch(binary.goarch)
    bias = binary.load_bias
    targets = impl.parse_route(p.replacement, p.addr)
    for dest in targets or ():
        if not any(c.addr <= dest < c.end for c in caves):
            _refuse(uid, f"the route at {p.addr:#x} branches to {dest:#x}, outside the "
                         "experiment's own caves")
    if not targets:
        _refuse(uid, f"the route at {p.addr:#x} is not a {impl.route_kind} into the "
                     "experiment's caves")
    lo, hi = p.addr - bias, p.end - bias
    if function is not None:
        try:
            fn = binary.find_function(str(function))
        except BladeError:
            _refuse(uid, f"function {function} is not in {binary.path}")
        inside = fn.entry <= lo < fn.end
    else:
        inside = any(e <= lo < end for spans in binary._function_table().values()
                     for e, end in spans)
        fn = None
    if not inside:
        _refuse(uid, f"the route at {p.addr:#x} is not inside "
                     + (f"function {function}" if function else "a function"))
    # A route may run past a function shorter than it only over the linker's padding (INT3 on
    # x86; return_._route_original); the original check above already pinned those bytes.
    if fn is not None and hi > fn.end and any(b != impl.pad_byte for b in p.original[fn.end - lo:]):
        _refuse(uid, f"the route at {p.addr:#x} runs past the end of {function}")
