"""`blade-go inspect`: what blade-go knows about a target, as one JSON-able dict.

It is what a user runs when an injection is refused, so every part that can fail on its own
(no DWARF, unsupported ABI) is reported in place instead of failing the whole report.
"""
import os
from typing import Optional

from ..errors import BladeError
from .typed import open_typed_binary
from .caves import INT3_PAD, CaveAllocator, route_reach


def _attempt(fn):
    """(value, None) or (None, error text) for the parts that need DWARF or a supported ABI."""
    try:
        return fn(), None
    except BladeError as e:
        return None, e.message
    except ImportError as e:  # the DWARF reader or an ABI module is missing from this install
        return None, f"not available: {e}"


def _type_json(t) -> dict:
    return {"name": t.name, "kind": t.kind.value, "size": t.size, "align": t.align}


def _signature_json(sig) -> dict:
    return {"params": [dict(name=p.name, type=_type_json(p.type)) for p in sig.params],
            "results": [dict(name=p.name, type=_type_json(p.type)) for p in sig.results]}


def _caves_json(binary, near: Optional[int]) -> dict:
    caves = binary.caves()
    usable = [c for c in caves if c.kind != INT3_PAD]
    int3 = [c for c in caves if c.kind == INT3_PAD]
    out = {"caves": [dict(c.to_json(), start=hex(c.start), end=hex(c.end)) for c in usable],
           "int3_pad": {"count": len(int3), "bytes": sum(c.size for c in int3),
                        "largest": max((c.size for c in int3), default=0)}}
    reach, _ = _attempt(lambda: route_reach(binary.goarch))  # arm64: B reaches 128 MB
    if near is not None and reach is not None:  # (no stubs for an unknown arch)
        alloc = CaveAllocator(caves, **reach)
        # the largest stub that would fit near the function right now
        out["largest_stub_near_func"] = max(
            (c.size - (-c.start % 16) for c in usable
             if _reachable(alloc, c, near)), default=0)
    return out


def _reachable(alloc: CaveAllocator, cave, near: int) -> bool:
    try:
        CaveAllocator([cave], alloc.taken, alloc.reach, alloc.reach_name).allocate(1, near=near)
        return True
    except BladeError:
        return False


def inspect_report(pid: Optional[int] = None, binary: Optional[str] = None,
                   func: Optional[str] = None, signature: Optional[str] = None,
                   debug_binary: Optional[str] = None) -> dict:
    with open_typed_binary(path=binary, pid=pid, signature=signature,
                           debug_binary=debug_binary, func=func) as b:
        report = {"binary": b.facts()}
        fn = None
        if func:
            try:
                fn = b.find_function(func)
            except BladeError:
                # fully inlined functions have no symbol: still say where their copies are
                sites, _ = _attempt(lambda: b.inlined_sites(func))
                if not sites:
                    raise
                report["function"] = {"requested": func, "has_out_of_line_copy": False,
                                      "inlined_sites": [dict(caller=s.caller, file=s.file,
                                                             line=s.line) for s in sites]}
        if fn is not None:
            entry = {"name": fn.name, "requested": func, "file_address": hex(fn.entry),
                     "size": fn.size, "end": hex(fn.end)}
            if pid is not None:
                entry["runtime_address"] = hex(fn.entry + b.load_bias)
            sig, err = _attempt(lambda: b.signature(fn))
            entry["signature"] = _signature_json(sig) if sig else None
            if err:
                entry["signature_error"] = err
            locs, err = _attempt(lambda: b.result_locations(fn)) if sig else (None, err)
            entry["result_locations"] = [r.to_json() for r in locs] if locs is not None else None
            if err:
                entry["result_locations_error"] = err
            sites, err = _attempt(lambda: b.inlined_sites(fn.name))
            if sites == [] and getattr(b, "warnings", None):  # no DWARF: unknown, not none
                sites, err = None, b.warnings[-1]
            entry["inlined_sites"] = ([dict(caller=s.caller, file=s.file, line=s.line)
                                       for s in sites] if sites is not None else None)
            if err:
                entry["inlined_sites_error"] = err
            entry["has_out_of_line_copy"] = True  # find_function found it
            from ..denylist import check_injectable
            _, refused = _attempt(lambda: check_injectable(b, fn, func))
            entry["refused"] = refused  # why create would refuse it (runtime, generic shape)
            report["function"] = entry
        report.update(_caves_json(b, fn.entry if fn else None))
        report["dlv"] = _dlv_report(pid, binary)
        return report


def _dlv_report(pid, path) -> dict:
    """The dlv a create on this target would start, and the pause its first attach costs
    (session/dlvinfo.py): a stock dlv stops the target while it loads the executable."""
    from ..session import dlvinfo, launcher
    try:
        exe = path or f"/proc/{pid}/exe"
        with open(exe, "rb") as f:
            machine = int.from_bytes(f.read(20)[18:20], "little")
        size = os.stat(exe).st_size
        return dlvinfo.describe(launcher.find_dlv(machine), size)
    except BladeError as e:
        return {"error": e.message}
    except OSError as e:
        return {"error": f"{e.filename}: {e.strerror}"}
