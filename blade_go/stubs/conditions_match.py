"""The `--match` grammar: which calls a fault applies to, decided from F's arguments.

    match  := term ( "&&" term )*
    term   := ref op literal
    ref    := name ( "." field )*  |  "#" N ( "." field )*
    op     := ==  !=  <  <=  >  >=  ^=          (^= : string prefix)
    literal:= integer (Go forms: 42, -7, 0x2a, 0o52, 1_000) | true | false | nil | "Go string"

Names are the parameter names DWARF gives (the receiver included, first); `#N` counts
parameters from 0. A field path goes through struct values and through pointers to structs
(`s.region=="eu"` with a `*Server` receiver); a nil pointer on the way means "no match".
Integers of every width compare with their type's signedness; bools and pointer-shaped values
(pointers, maps, chans, funcs: against nil) take == and != only; strings ==, != and ^=.
"""
import re
from typing import List, Optional, Sequence, Tuple

from ..abi import REG
from ..errors import BladeError, Code
from ..inspector.gotypes import POINTER_SHAPED, GoType, Kind
from . import values as V
from .conditions import INT, MAX_STRING, STRING, Match, Mem, Reg, Stack

_TERM = re.compile(r"\s*(#\d+|[^\s=!<>^#][^\s=!<>^]*)\s*(==|!=|<=|>=|\^=|<|>)\s*(.*?)\s*\Z",
                   re.S)
_ORDER = ("==", "!=", "<", "<=", ">", ">=")


def _fail(msg: str) -> BladeError:
    return BladeError(Code.PARAMETER_ILLEGAL, "--match: " + msg)


def split_terms(text: str) -> List[str]:
    """Split on && outside double quotes."""
    return V.split_outside_quotes(text, "&&", "--match")


def _param_list(params) -> str:
    return ", ".join(f"{p.name or '#%d' % k} ({p.type.name})" for k, p in enumerate(params)) \
        or "none"


class _Place:
    """Where a value is: inside a parameter's location at `offset`, or in memory at
    [pointer named by `base`] + offset."""

    def __init__(self, loc=None, base=None, offset=0):
        self.loc, self.base, self.offset = loc, base, offset

    def operand(self, extra: int, size: int):
        if self.base is not None:
            return Mem(self.base, self.offset + extra)
        off = self.offset + extra
        for p in self.loc.pieces:
            if p.value_offset <= off and off + size <= p.value_offset + p.size:
                if p.where == REG:
                    if (p.value_offset, p.size) != (off, size):  # pragma: no cover
                        raise ValueError("a scalar split across registers")
                    return Reg(p.reg)
                return Stack(p.sp_offset + off - p.value_offset)
        raise ValueError(f"no location for bytes {off}..{off + size} of {self.loc.name}")


def _resolve(ref: str, params, func: str, ptrsize: int) -> Tuple[_Place, GoType]:
    head, *path = ref.split(".")
    if head.startswith("#"):
        k = int(head[1:])
        if k >= len(params):
            raise _fail(f"{func} has {len(params)} parameter(s), so {head} does not exist; "
                        f"its parameters: {_param_list(params)}")
        loc = params[k]
    else:
        loc = next((p for p in params if p.name == head), None)
        if loc is None:
            raise _fail(f"{func} has no parameter {head!r}; its parameters: "
                        f"{_param_list(params)}")
    if loc.type.size and not loc.pieces:
        raise _fail(f"parameter {head} has no known location")
    place, t, seen = _Place(loc=loc), loc.type, head
    for name in path:
        if t.kind == Kind.POINTER:
            elem = t.elem
            if elem is None or elem.kind != Kind.STRUCT or not elem.fields:
                raise _fail(f"{seen} is {t.name}: the layout of what it points to is unknown, "
                            f"so .{name} cannot be read")
            place = _Place(base=place.operand(0, ptrsize))
            t = elem
        if t.kind != Kind.STRUCT:
            raise _fail(f"{seen} is {t.name}, not a struct: it has no field .{name}")
        f = next((f for f in t.fields if f.name == name), None)
        if f is None:
            raise _fail(f"{seen} ({t.name}) has no field {name!r}; its fields: "
                        + ", ".join(f"{x.name} ({x.type.name})" for x in t.fields))
        place = _Place(loc=place.loc, base=place.base, offset=place.offset + f.offset)
        t, seen = f.type, f"{seen}.{name}"
    return place, t


def parse_term(term: str, params, func: str, ptrsize: int) -> Match:
    m = _TERM.match(term)
    if not m or not m.group(3):
        raise _fail(f"{term.strip()!r} is not `name op value` (ops: == != < <= > >= ^=)")
    ref, op, lit = m.groups()
    place, t = _resolve(ref, params, func, ptrsize)
    text = f"{ref}{op}{lit}"
    k = t.kind

    def wants(what):
        return _fail(f"{ref} is {t.name}; {text!r} needs {what}")

    if k == Kind.STRING:
        if op not in ("==", "!=", "^="):
            raise _fail(f"{ref} is {t.name}: strings take ==, != and ^= (prefix), not {op}")
        try:
            value = V.unquote(lit)
        except ValueError as e:
            raise wants(f'a quoted Go string ("...": {e})') from None
        if len(value) > MAX_STRING:
            raise _fail(f"{ref}: strings longer than {MAX_STRING} bytes cannot be matched")
        return Match(text, STRING, op, value,
                     (place.operand(0, ptrsize), place.operand(ptrsize, ptrsize)))
    if op == "^=":
        raise _fail(f"{ref} is {t.name}: ^= (prefix) applies to strings only")
    if k in (Kind.INT, Kind.UINT):
        try:
            value = V.parse_int(lit)
        except ValueError:
            raise wants("an integer") from None
        lo, hi = V.int_range(t)
        if not lo <= value <= hi:
            raise _fail(f"{ref} is {t.name}: {value} is out of its range [{lo}, {hi}]")
        signed = k == Kind.INT
    elif k == Kind.BOOL:
        if lit not in ("true", "false"):
            raise wants("true or false")
        if op not in ("==", "!="):
            raise _fail(f"{ref} is {t.name}: bools take == and != only")
        value, signed = int(lit == "true"), False
    elif k in POINTER_SHAPED:
        if lit != "nil" or op not in ("==", "!="):
            raise _fail(f"{ref} is {t.name}: it can only be compared with nil (== nil, != nil)")
        value, signed = 0, False
    else:
        raise _fail(f"{ref} is {t.name}: only integers, bools, strings and pointers (against "
                    "nil) can be matched")
    # one operand of t.size bytes (an 8-byte integer on 386: both words, stack or memory)
    return Match(text, INT, op, value, (place.operand(0, t.size),), t.size, signed)


def parse_match(text: Optional[str], params: Sequence, ptrsize: int,
                func: str = "the function") -> Tuple[Match, ...]:
    """Matches for `--match` text against F's ParamLocations; () for no text."""
    if text is None or not text.strip():
        return ()
    return tuple(parse_term(t, params, func, ptrsize) for t in split_terms(text))
