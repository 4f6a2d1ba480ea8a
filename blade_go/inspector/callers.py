"""The code of the functions `--caller` names (issue 19): where a call of F counts as made
from them.

    code = caller_code(binary, "main.handleCheckout,main.(*Cart).Pay")
    code.ranges   # [(lo, hi), ...] file addresses: each out-of-line body and every place
                  # the compiler inlined one of them into another function
    code.detail   # per name: the symbol, its body, how many inlined copies

A call made from G's code returns to an address inside G's out-of-line body or inside a copy
of G that the compiler inlined into another function (DWARF: the DW_TAG_inlined_subroutine's
low/high pc or range list, nested copies included; without DWARF: the `.gopclntab` inline
trees, inltree.InlineTrees.ranges). Names are resolved like --func (closest names on a typo;
generic instances by shape: `main.Max[int]` is the shape function every instance of that shape
shares, said in the detail).
"""
from dataclasses import dataclass, field
from typing import List, Tuple

from ..errors import BladeError, Code


@dataclass(frozen=True)
class CallerCode:
    names: Tuple[str, ...]
    ranges: Tuple[Tuple[int, int], ...]
    detail: List[dict] = field(default_factory=list)


def split_names(text: str) -> List[str]:
    """Comma-separated names; commas inside [...], (...) or {...} (type arguments) do not
    split: symbols._split_args, the splitter of a name's type-argument list."""
    from .symbols import _split_args
    return [n for n in _split_args(text or "") if n]


def _inlined_ranges(binary, name: str) -> Tuple[List[Tuple[int, int]], str]:
    dwarf = None
    if binary.has_dwarf:
        dwarf = binary.dwarf
    elif getattr(binary, "debug_binary", None) is not None:
        dwarf = binary.dwarf  # typed binary: the debug binary's DWARF
    if dwarf is not None:
        return dwarf.inlined_ranges(name), "DWARF"
    from .inltree import pclntab_inlined_ranges
    return pclntab_inlined_ranges(binary, name), ".gopclntab inline trees"


def caller_code(binary, text: str) -> CallerCode:
    from ..stubs.conditions import MAX_CALLER_RANGES, merge_ranges
    names = split_names(text)
    if not names:
        raise BladeError(Code.PARAMETER_ILLEGAL, "--caller: give one or more function names, "
                                                 "comma-separated")
    resolved, ranges, detail = [], [], []
    for name in names:
        fn, not_found = None, None
        try:
            fn = binary.find_function(name)
        except BladeError as e:
            if " not found in " not in e.message and "no out-of-line copy" not in e.message:
                raise BladeError(e.code, f"--caller: {e.message}") from None
            not_found = e
        symbol = fn.name if fn is not None else name
        inl, source = _inlined_ranges(binary, symbol)
        if fn is None and not inl:
            raise BladeError(not_found.code, f"--caller: {not_found.message}") from None
        d = {"caller": symbol, "inlined_copies": len(inl), "inlined_from": source}
        if fn is not None:
            ranges.append((fn.entry, fn.end))
            d["body"] = [hex(fn.entry), hex(fn.end)]
            if symbol != name.strip():
                d["as_written"] = name.strip()
            if "go.shape." in symbol:
                d["note"] = (f"{name.strip()} runs as the shape function {symbol}: calls made "
                             "from every instance of that shape count")
        else:
            d["body"] = None  # exists only inlined
        ranges += inl
        resolved.append(symbol)
        detail.append(d)
    merged = merge_ranges(ranges)
    if len(merged) > MAX_CALLER_RANGES:
        raise BladeError(Code.PARAMETER_ILLEGAL,
                         f"--caller: {', '.join(resolved)} cover {len(merged)} separate code "
                         f"ranges (out-of-line bodies and inlined copies); the check in the "
                         f"stub compares at most {MAX_CALLER_RANGES}: name fewer functions")
    return CallerCode(tuple(resolved), merged, detail)


def check_depth(binary, depth: int):
    """--caller-depth N: 1 (the direct caller, from the return address) everywhere; deeper
    frames through the frame-pointer chain where the arch's stubs walk it (amd64: with the g,
    and so the goroutine's stack bounds, in R14 under the register ABI, Go 1.17+; the arch's
    no_deep_callers in stubs/select.py says why not elsewhere)."""
    from ..stubs.conditions import MAX_DEPTH
    if depth < 1 or depth > MAX_DEPTH:
        raise BladeError(Code.PARAMETER_ILLEGAL,
                         f"--caller-depth must be between 1 and {MAX_DEPTH}, not {depth}")
    if depth == 1:
        return
    from ..stubs.select import stub_arch
    why = stub_arch(binary.goarch).no_deep_callers
    if why:
        raise BladeError(Code.PARAMETER_ILLEGAL,
                         f"--caller-depth {depth}: {why}; use --caller-depth 1")
    if not binary.abi_name.startswith("abi-internal"):
        raise BladeError(Code.PARAMETER_ILLEGAL,
                         f"--caller-depth {depth}: this binary ({binary.go_version}) uses the "
                         "stack ABI, where the goroutine (and so the stack bounds that make "
                         "the frame-pointer walk safe) is not in a register; use "
                         "--caller-depth 1 (Go 1.17+ builds take deeper walks)")
