"""The `--value` grammar: one comma-separated element per result, checked against its Go type.

    ints     42  -7  0x2a  0o52  0b101010  052 (Go octal)  1_000    (range-checked)
    floats   1.5  -2e3  0x1p-2  inf  +inf  -inf  nan               (float32 rounded)
    complex  1+2i  -0.5-3i  2i                                    (complex64 parts rounded)
    bools    true  false
    strings  "quoted, with \\n \\t \\xNN \\u1234 escapes"  or bare text without commas/quotes
    nil      pointers, slices, maps, chans, funcs, interfaces
    zero     the zero value of any type
    error:<message> / error:"msg, with comma"   a new error (results of type `error` only)
    var:<pkg>.<Name>                            a copy of a package-level variable

Leading/trailing blanks around an element are dropped (quote a string to keep them). For a
string result, bare text is the string itself except the words `zero`, `nil` and `var:...`;
quote them ("zero") to mean the text. Result indexes in messages count from 0.
"""
import math
import re
import struct
from dataclasses import dataclass, replace
from typing import List, Optional, Sequence, Tuple

from ..errors import BladeError, Code
from ..inspector.gotypes import NILABLE, GoType, Kind

INT = "int"
FLOAT = "float"
COMPLEX = "complex"
BOOL = "bool"
STRING = "string"
NIL = "nil"
ZERO = "zero"
ERROR = "error"
VAR = "var"


@dataclass(frozen=True)
class Value:
    """One parsed element: `kind` says how to read `data`.

    INT -> int, FLOAT -> float (already rounded to float32 when the type is), COMPLEX -> complex,
    BOOL -> bool, STRING/ERROR -> bytes (UTF-8), VAR -> "pkg.Name", NIL/ZERO -> None.
    """
    kind: str
    data: object
    text: str       # the element as given (for messages)
    type: GoType    # the result type it was checked against
    index: int = -1  # the result's index


# ----------------------------------------------------------------------------------- split

def split_outside_quotes(text: str, sep: str, flag: str) -> List[str]:
    """Split on `sep` outside double quotes; backslash escapes inside quotes are kept.
    (--value elements on ",", --match terms on "&&".)"""
    out, cur, quoted, i = [], [], False, 0
    while i < len(text):
        c = text[i]
        if quoted and c == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif not quoted and text.startswith(sep, i):
            out.append("".join(cur))
            cur = []
            i += len(sep)
            continue
        cur.append(c)
        i += 1
    if quoted:
        raise BladeError(Code.PARAMETER_ILLEGAL, f"{flag}: unterminated quote in {text!r}")
    out.append("".join(cur))
    return out


def split_elements(text: str) -> List[str]:
    """Split --value on commas outside double quotes."""
    return split_outside_quotes(text, ",", "--value")


_SIMPLE_ESC = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, "'": 39,
               '"': 34}


def _bytes(text: str) -> bytes:
    """The bytes of command-line text. A Go string may hold any bytes: bytes that are not
    UTF-8 reach Python as surrogate escapes (PEP 383) and are given back as they were."""
    return text.encode("utf-8", "surrogateescape")


def unquote(lit: str) -> bytes:
    """A Go interpreted string literal ("...") to its bytes; ValueError when malformed."""
    if len(lit) < 2 or lit[0] != '"' or lit[-1] != '"':
        raise ValueError("not a quoted string")
    body, out, i = lit[1:-1], bytearray(), 0
    while i < len(body):
        c = body[i]
        if c == '"':
            raise ValueError("unescaped quote inside string")
        if c != "\\":
            out += _bytes(c)
            i += 1
            continue
        if i + 1 >= len(body):
            raise ValueError("string ends with a backslash")
        e = body[i + 1]
        if e in _SIMPLE_ESC:
            out.append(_SIMPLE_ESC[e])
            i += 2
        elif e in "xuU":
            n = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i + 2:i + 2 + n]
            if len(digits) != n or not re.fullmatch(r"[0-9a-fA-F]+", digits):
                raise ValueError(f"\\{e} needs {n} hex digits")
            v = int(digits, 16)
            if e == "x":
                out.append(v)
            else:
                if v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
                    raise ValueError(f"\\{e}{digits} is not a valid Unicode code point")
                out += chr(v).encode("utf-8")
            i += 2 + n
        elif e in "01234567":
            digits = body[i + 1:i + 4]
            if not re.fullmatch(r"[0-7]{3}", digits) or int(digits, 8) > 255:
                raise ValueError("octal escape needs 3 digits <= \\377")
            out.append(int(digits, 8))
            i += 4
        else:
            raise ValueError(f"unknown escape \\{e}")
    return bytes(out)


# ----------------------------------------------------------------------------------- numbers

_GO_OCTAL = re.compile(r"[+-]?0[0-7_]+")


def _ascii(s: str) -> str:
    # Python's int() and float() read any Unicode digit ("١٢" is 12); Go reads ASCII only
    if not s.isascii():
        raise ValueError(f"{s!r} is not a number (only ASCII digits are)")
    return s


def parse_int(s: str) -> int:
    _ascii(s)
    if _GO_OCTAL.fullmatch(s):  # Go reads 052 as octal; Python refuses leading zeros
        sign = -1 if s[0] == "-" else 1
        return sign * int(s.lstrip("+-").replace("_", ""), 8)
    return int(s, 0)


def parse_float(s: str) -> float:
    low = _ascii(s).lower()
    if low in ("inf", "+inf", "infinity", "+infinity"):
        return math.inf
    if low in ("-inf", "-infinity"):
        return -math.inf
    if low in ("nan", "+nan", "-nan"):
        return math.nan
    if re.fullmatch(r"[+-]?0x[0-9a-f_.]+p[+-]?\d+", low):
        return float.fromhex(low.replace("_", ""))
    if re.fullmatch(r"[+-]?(\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(e[+-]?\d+)?", low):
        return float(low.replace("_", ""))
    try:
        return float(parse_int(s))
    except ValueError:
        raise ValueError(f"{s!r} is not a number") from None


def round_float32(x: float) -> float:
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:
        raise ValueError("out of range for float32") from None


def parse_complex(s: str) -> complex:
    """Go-style complex literal: `1+2i`, `-0.5-3i`, `2i`, `-i` or a plain real number."""
    if not s.lower().endswith("i"):
        return complex(parse_float(s), 0.0)
    body = s[:-1]
    split = 0  # where the imaginary part's sign starts (0: no real part)
    for k in range(len(body) - 1, 0, -1):
        if body[k] in "+-" and body[k - 1].lower() not in "ep":
            split = k
            break
    real = parse_float(body[:split]) if split else 0.0
    im = body[split:]
    imag = {"": 1.0, "+": 1.0, "-": -1.0}.get(im)
    if imag is None:
        imag = parse_float(im)
    return complex(real, imag)


# ----------------------------------------------------------------------------------- checks

def _expected(t: GoType) -> str:
    """What a result of type t accepts, for messages."""
    k = t.kind
    if k in (Kind.INT, Kind.UINT):
        lo, hi = int_range(t)
        forms = f"an integer in [{lo}, {hi}]"
    elif k in (Kind.FLOAT32, Kind.FLOAT64):
        forms = "a number (or inf, -inf, nan)"
    elif k in (Kind.COMPLEX64, Kind.COMPLEX128):
        forms = "a complex number like 1+2i"
    elif k == Kind.BOOL:
        forms = "true, false"
    elif k == Kind.STRING:
        forms = "a string (\"quoted\" or bare text)"
    elif k == Kind.IFACE and t.name == "error":
        return "nil, zero, error:<msg> or var:<pkg.Name>"
    elif k in NILABLE:
        forms = "nil"
    else:
        return "zero or var:<pkg.Name>"
    return f"{forms}, zero or var:<pkg.Name>"


def int_range(t: GoType) -> Tuple[int, int]:
    bits = 8 * t.size
    if t.kind == Kind.INT:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _fail(index: int, t: GoType, elem: str, why: str = "") -> BladeError:
    shown = elem if len(elem) <= 200 else f"{elem[:200]}... ({len(elem)} characters)"
    msg = f'--value: result {index} ({t.name}) expects {_expected(t)}; got "{shown}"'
    if why:
        msg += f" ({why})"
    return BladeError(Code.PARAMETER_ILLEGAL, msg)


def parse_element(index: int, t: GoType, elem: str) -> Value:
    """Parse one element against result `index` of type `t`."""
    s = elem.strip()
    k = t.kind

    if s == "zero":
        return Value(ZERO, None, s, t)
    if s.startswith("var:"):
        name = s[4:].strip()
        if not re.fullmatch(r"[\w./\-]+\.[^\W\d]\w*", name):
            raise _fail(index, t, elem, "var: needs a package-level variable like io.EOF")
        return Value(VAR, name, s, t)
    if s == "nil":
        if k in NILABLE:
            return Value(NIL, None, s, t)
        raise _fail(index, t, elem, f"{t.name} cannot be nil")

    if k == Kind.STRING:
        if s.startswith('"'):
            try:
                return Value(STRING, unquote(s), s, t)
            except ValueError as e:
                raise _fail(index, t, elem, str(e)) from None
        if '"' in s:
            raise _fail(index, t, elem, "bare text cannot contain quotes; quote the whole string")
        return Value(STRING, _bytes(s), s, t)

    if k == Kind.IFACE and t.name == "error" and s.startswith("error:"):
        msg = s[len("error:"):]
        if msg.strip().startswith('"'):
            try:
                data = unquote(msg.strip())
            except ValueError as e:
                raise _fail(index, t, elem, str(e)) from None
        elif '"' in msg:
            raise _fail(index, t, elem, "quote the whole message: error:\"...\"")
        else:
            data = _bytes(msg)
        return Value(ERROR, data, s, t)

    try:
        if k in (Kind.INT, Kind.UINT):
            v = parse_int(s)
            lo, hi = int_range(t)
            if not lo <= v <= hi:
                raise ValueError(f"out of range for {t.size * 8}-bit "
                                 f"{'signed' if k == Kind.INT else 'unsigned'}")
            return Value(INT, v, s, t)
        if k in (Kind.FLOAT32, Kind.FLOAT64):
            v = parse_float(s)
            return Value(FLOAT, round_float32(v) if k == Kind.FLOAT32 else v, s, t)
        if k in (Kind.COMPLEX64, Kind.COMPLEX128):
            c = parse_complex(s)
            if k == Kind.COMPLEX64:
                c = complex(round_float32(c.real), round_float32(c.imag))
            return Value(COMPLEX, c, s, t)
        if k == Kind.BOOL and s in ("true", "false"):
            return Value(BOOL, s == "true", s, t)
    except ValueError as e:
        raise _fail(index, t, elem, str(e)) from None
    raise _fail(index, t, elem)


def _results(results) -> List[Tuple[int, str, GoType]]:
    out = []
    for i, r in enumerate(results):
        if hasattr(r, "type") and hasattr(r, "pieces"):
            out.append((r.index, r.name, r.type))
        else:
            name, t = r
            out.append((i, name, t))
    return out


def parse_values(text: Optional[str], results: Sequence, binary=None, *, func: str = "the function"
                 ) -> List[Value]:
    """Parse `--value` text for `results` (ResultLocations or (name, GoType) pairs).

    With `binary` (a GoBinary) var: names are looked up now so a typo fails early; the planner
    checks them again against the live addresses.
    """
    try:
        _bytes(text or "")
    except UnicodeEncodeError as e:
        raise BladeError(Code.PARAMETER_ILLEGAL, f"--value: character {e.start} is not "
                                                 "valid text (a lone surrogate)") from None
    rs = _results(results)
    if not rs:  # no results: the stub only returns (the body is skipped)
        if (text or "").strip():
            raise BladeError(Code.PARAMETER_ILLEGAL,
                             f"--value: {func} returns no results; give no --value (or '') to "
                             "skip its body")
        return []
    if text is None:  # absent (chaosblade passes no empty flags)
        types = ", ".join(t.name for _, _, t in rs)
        raise BladeError(Code.PARAMETER_LESS,
                         f"less parameter: --value is required: {func} returns ({types})")
    elems = split_elements(text)
    if len(elems) != len(rs):
        types = ", ".join(t.name for _, _, t in rs)
        noun = "result" if len(rs) == 1 else "results"
        raise BladeError(Code.PARAMETER_ILLEGAL,
                         f"--value: {func} returns {len(rs)} {noun} ({types}); "
                         f"got {len(elems)} value{'' if len(elems) == 1 else 's'}")
    values = [replace(parse_element(i, t, e), index=i) for (i, _, t), e in zip(rs, elems)]
    if binary is not None and hasattr(binary, "variable"):
        for v in values:
            if v.kind == VAR:
                var = binary.variable(v.data)
                check_var_type(v, getattr(var, "type", None))
    return values


def check_var_type(v: Value, var_type: Optional[GoType]):
    """A var: copy is a byte copy, so the variable must have exactly the result's type."""
    where = f"--value: result {v.index} ({v.type.name}): {v.text}"
    if var_type is None:
        raise BladeError(Code.PARAMETER_ILLEGAL,
                         f"{where}: no package-level variable {v.data} with a known type")
    if var_type.name != v.type.name or var_type.size != v.type.size:
        raise BladeError(Code.PARAMETER_ILLEGAL,
                         f"{where} has type {var_type.name}, but the result is "
                         f"{v.type.name}; the types must be identical")
