"""Function lookup by the name a user writes (symbol tables: symtab.py, pclntab.py).

Go symbol names are what users write (`pkg.F`, `pkg.(*T).M`, `pkg.T.M`, `pkg.F.func1`,
`github.com/acme/app/db.(*Client).Query`), except generic functions, compiled once per shape:
`pkg.F[int]` lives in the binary as `pkg.F[go.shape.int_0]` (Go 1.18-1.20) or
`pkg.F[go.shape.int]` (newer). Since Go 1.17 a function that also has an ABI0 wrapper appears
twice in .symtab: `X` (ABIInternal) and `X.abi0`; the ABIInternal one is the one we want.
"""
import difflib
import re
from typing import Dict, List, Optional, Tuple

from ..errors import BladeError, Code
from .symtab import ABI_SUFFIXES, names_containing


# -- user spelling -> symbol name ------------------------------------------------------------
def _split_type_args(name: str):
    """('pkg.F', ['int', 'string']) segments: every [...] group is cut out and its arguments
    returned in order; nested brackets stay inside their argument."""
    base, args, depth, cur, groups = [], [], 0, "", []
    for ch in name:
        if ch == "[":
            depth += 1
            if depth == 1:
                cur = ""
                base.append("[]")
                continue
        elif ch == "]":
            depth -= 1
            if depth == 0:
                groups.append(cur)
                continue
        if depth == 0:
            base.append(ch)
        else:
            cur += ch
    for g in groups:
        args.extend(_split_args(g))
    return "".join(base), args


def _split_args(group: str) -> List[str]:
    out, depth, cur = [], 0, ""
    for ch in group:
        if ch in "[({":
            depth += 1
        elif ch in "])}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


_SHAPE_INDEX = re.compile(r"_\d+$")


def _arg_matches(user: str, sym: str) -> bool:
    if user.replace(" ", "") == sym.replace(" ", ""):
        return True
    if not sym.startswith("go.shape."):
        return False
    shape = _SHAPE_INDEX.sub("", sym[len("go.shape."):])
    user = user.replace(" ", "")
    shape_ns = shape.replace(" ", "")
    if user == shape_ns:
        return True
    if user.startswith("*") and shape_ns == "*uint8":  # every pointer shares one shape
        return True
    return user in ("any", "interface{}") and shape_ns == "interface{}"


def _generic_candidates(name: str, funcs) -> List[str]:
    base, args = _split_type_args(name)
    out = []
    for sym in names_containing(funcs, "["):
        sbase, sargs = _split_type_args(sym)
        if not args:  # `pkg.F` for a generic function: every instance is a candidate
            if sbase.replace("[]", "") == base:
                out.append(sym)
        elif sbase == base and (sargs == ["..."] or  # pclntab elides type arguments
                                len(args) == len(sargs) and all(map(_arg_matches, args, sargs))):
            out.append(sym)
    return out


MAX_NAME_SHOWN = 300  # characters of a name echoed in a message
MAX_NAME_CLOSEST = 1024  # longer names get no "closest" search (difflib is quadratic)


def shown_name(name: str) -> str:
    if len(name) <= MAX_NAME_SHOWN:
        return name
    return f"{name[:MAX_NAME_SHOWN]}... ({len(name)} characters)"


def resolve_function(name: str, funcs: Dict[str, List[Tuple[int, int]]], where: str):
    """(symbol name, entry, end) for a user-written function name, or BladeError."""
    name = name.strip()
    if len(name) > MAX_NAME_CLOSEST and name not in funcs:
        raise BladeError(Code.PARAMETER_INVALID,
                         f"function {shown_name(name)} not found in {where}")
    spans = funcs.get(name)
    if spans is None and not name.endswith(ABI_SUFFIXES):
        matches = _generic_candidates(name, funcs)
        if len(matches) > 1:
            raise BladeError(Code.PARAMETER_INVALID,
                             f"function {name} is ambiguous in {where}; candidates: "
                             + ", ".join(sorted(matches)))
        if matches:
            name = matches[0]
            spans = funcs[name]
    if spans is None:
        raise BladeError(Code.PARAMETER_INVALID,
                         f"function {shown_name(name)} not found in {where}"
                         + _closest_text(name, funcs))
    if len(spans) > 1 and "[...]" in name:
        raise BladeError(Code.PARAMETER_INVALID,
                         f"function {name} is ambiguous in {where}: .gopclntab names every "
                         f"instance of a generic function {name}, and there are {len(spans)} "
                         "(at " + ", ".join(hex(e) for e, _ in spans) + "); use a binary "
                         "with a symbol table")
    if len(spans) > 1:
        # same name twice: an ABI wrapper next to the body (pclntab does not mangle names);
        # the body is the larger one
        spans = sorted(spans, key=lambda s: s[1] - s[0], reverse=True)
    entry, end = spans[0]
    return name, entry, end


def closest_names(name: str, names, n: int = 5) -> List[str]:
    names = [x for x in names if not x.endswith(ABI_SUFFIXES)]
    # compare within the package first: much faster and usually what the user meant
    pkg = name.rsplit("/", 1)[-1].split(".", 1)[0]
    prefix = name[:len(name) - len(name.rsplit("/", 1)[-1])] + pkg + "."
    local = [x for x in names if x.startswith(prefix)]
    found = difflib.get_close_matches(name, local, n=n, cutoff=0.5) if local else []
    if len(found) < n:
        rest = difflib.get_close_matches(name, names, n=n, cutoff=0.6)
        found += [x for x in rest if x not in found][:n - len(found)]
    return found


def _closest_text(name, funcs) -> str:
    found = closest_names(name, funcs.keys())
    return "; closest: " + ", ".join(found) if found else ""


def lookup_data(name: str, data: Dict[str, Tuple[int, int]],
                spellings: Tuple[str, ...] = ()) -> Optional[Tuple[str, int, int]]:
    """(name, addr, size) of the first spelling that exists."""
    for n in spellings or (name,):
        if n in data:
            addr, size = data[n]
            return n, addr, size
    return None
