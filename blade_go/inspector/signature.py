"""`--signature`: a function's parameter and result types written in Go syntax, for binaries
without DWARF (`-ldflags="-s -w"`).

    func(int64) (*main.User, error)
    func(id int, name string) (u *main.User, err error)
    func() main.Point=struct{X, Y int; Z float64; Name string}
    func(s main.Store=struct{users map[int]*main.User}) int      (value receiver, see below)

Types: every predeclared type (bool, ints, uints, uintptr, byte, rune, floats, complexes, string,
error, any), unsafe.Pointer, `*T`, `[]T`, `[N]T`, `map[K]V`, `chan T` (and directions),
`func(...)...`, `interface{}` / `interface{ M() }`, `struct{...}` with Go's field syntax
(`a, b int; c string` or one field per line, embedded fields, tags ignored).

A named type is only a name to blade-go: its layout is not in a stripped binary. Pointers,
maps, chans and funcs to named types need nothing more (`*main.User` is one word). A named type
used by value needs its underlying type after `=`: `main.Celsius=float32`,
`main.Point=struct{X, Y int}`; a named type that is an interface is written
`pkg.Name=interface{ M() }`. Without it the signature is refused, naming the type. Struct
layouts follow Go's rules (each field aligned to its type, size rounded to the struct's
alignment; 64-bit values are 4-aligned on 386).

Parameters are the function's declared parameters, receiver excluded. A pointer receiver
(`pkg.(*T).M`) is one pointer, known from the name; a value receiver (`pkg.T.M`) is needed only
where parameters matter (the stack ABI, parameter-reading actions): write it as the first
parameter of a `func(recv T=..., ...)` form by passing receiver=True to parse_signature.
"""
import re
from typing import List, Optional, Tuple

from ..errors import BladeError, Code
from .gotypes import Field, GoType, Kind, Param, Signature

_TOKEN = re.compile(r"\s*(<-|\.\.\.|[A-Za-z_][A-Za-z0-9_]*(?:[./][A-Za-z_][A-Za-z0-9_.-]*)*"
                    r"|\d+|\"(?:[^\"\\]|\\.)*\"|`[^`]*`|[()\[\]{}*,;=\n])")

INTS = {"int8": 1, "int16": 2, "int32": 4, "int64": 8, "rune": 4}
UINTS = {"uint8": 1, "uint16": 2, "uint32": 4, "uint64": 8, "byte": 1}
CANONICAL = {"byte": "uint8", "rune": "int32", "any": "interface {}"}


class SignatureError(BladeError):
    def __init__(self, text: str, why: str):
        super().__init__(Code.PARAMETER_ILLEGAL, f"--signature {text!r}: {why}")


def _tokens(text: str) -> List[str]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise SignatureError(text, f"unexpected {text[pos:].strip()[:20]!r}")
        pos = m.end()
        tok = m.group(1)
        if tok == "\n":
            tok = ";"
        out.append(tok)
    return out


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


class _Parser:
    def __init__(self, text: str, ptrsize: int):
        self.text, self.w = text, ptrsize
        self.toks = _tokens(text)
        self.i = 0

    # -- token helpers ----------------------------------------------------------------------
    def peek(self, k: int = 0) -> Optional[str]:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def take(self, want: Optional[str] = None) -> str:
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            got = "the end" if tok is None else repr(tok)
            raise SignatureError(self.text, f"expected {want or 'more'}, found {got}")
        self.i += 1
        return tok

    def fail(self, why: str):
        raise SignatureError(self.text, why)

    # -- types --------------------------------------------------------------------------------
    def scalar(self, name, kind, size, align=None) -> GoType:
        if align is None:
            align = min(size, 4) if self.w == 4 and size == 8 else size
        return GoType(name, kind, size, align)

    def basic(self, name: str) -> Optional[GoType]:
        w = self.w
        canon = CANONICAL.get(name, name)
        if name in ("int", "uint", "uintptr"):
            return self.scalar(name, Kind.INT if name == "int" else Kind.UINT, w)
        if name in INTS:
            return self.scalar(canon, Kind.INT, INTS[name])
        if name in UINTS:
            return self.scalar(canon, Kind.UINT, UINTS[name])
        if name == "bool":
            return self.scalar(name, Kind.BOOL, 1)
        if name in ("float32", "float64"):
            return self.scalar(name, Kind[name.upper()], int(name[5:]) // 8)
        if name == "complex64":
            return GoType(name, Kind.COMPLEX64, 8, 4)
        if name == "complex128":
            return GoType(name, Kind.COMPLEX128, 16, 8 if w == 8 else 4)
        if name == "string":
            return GoType(name, Kind.STRING, 2 * w, w)
        if name == "error":
            return GoType(name, Kind.IFACE, 2 * w, w)
        if name == "any":
            return GoType(canon, Kind.EFACE, 2 * w, w)
        if name == "unsafe.Pointer":
            return GoType(name, Kind.POINTER, w, w)
        return None

    def param_type(self) -> GoType:
        """A parameter's type: `...T` is passed as a []T."""
        if self.peek() != "...":
            return self.type()
        self.take()
        t = self.type()
        return GoType("[]" + t.name, Kind.SLICE, 3 * self.w, self.w, elem=t)

    def type(self) -> GoType:
        tok = self.take()
        w = self.w
        if tok == "*":
            elem = self.type_ref()
            return GoType("*" + elem.name, Kind.POINTER, w, w, elem=elem)
        if tok == "[":
            if self.peek() == "]":
                self.take("]")
                elem = self.type()
                return GoType("[]" + elem.name, Kind.SLICE, 3 * w, w, elem=elem)
            n = self.take()
            if not n.isdigit():
                self.fail(f"array length must be a number, found {n!r}")
            self.take("]")
            elem = self.type()
            n = int(n)
            return GoType(f"[{n}]{elem.name}", Kind.ARRAY, elem.size * n, elem.align,
                          elem=elem, length=n)
        if tok == "map":
            self.take("[")
            key = self.type_ref()
            self.take("]")
            val = self.type_ref()
            return GoType(f"map[{key.name}]{val.name}", Kind.MAP, w, w, elem=val, key=key)
        if tok == "chan" or tok == "<-":
            prefix = "chan"
            if tok == "<-":
                self.take("chan")
                prefix = "<-chan"
            elif self.peek() == "<-":
                self.take()
                prefix = "chan<-"
            elem = self.type_ref()
            return GoType(f"{prefix} {elem.name}", Kind.CHAN, w, w, elem=elem)
        if tok == "func":
            self.func_rest()  # a func value is one pointer whatever its signature
            return GoType("func(...)", Kind.FUNC, w, w)
        if tok == "interface":
            empty = self.skip_braces()
            return GoType("interface {}" if empty else "interface {...}",
                          Kind.EFACE if empty else Kind.IFACE, 2 * w, w)
        if tok == "struct":
            return self.struct()
        if tok == "(":
            t = self.type()
            self.take(")")
            return t
        if not re.match(r"[A-Za-z_]", tok):
            self.fail(f"expected a type, found {tok!r}")
        known = self.basic(tok)
        if self.peek() == "=":
            self.take("=")
            under = self.type()
            if known is not None:
                self.fail(f"{tok} is a predeclared type; only named types take '='")
            return GoType(tok, under.kind, under.size, under.align, under.fields, under.elem,
                          under.key, under.length)
        if known is not None:
            return known
        return GoType(tok, None, -1, -1)  # a named type whose layout was not given

    def type_ref(self) -> GoType:
        """A type behind a pointer/map/chan: its layout is not needed."""
        t = self.type()
        return t

    def skip_braces(self) -> bool:
        self.take("{")
        depth, empty = 1, True
        while depth:
            tok = self.take()
            if tok == "{":
                depth += 1
            elif tok == "}":
                depth -= 1
            elif tok != ";":
                empty = False
        return empty

    def struct(self) -> GoType:
        self.take("{")
        fields: List[Tuple[str, GoType]] = []
        while self.peek() != "}":
            if self.peek() == ";":
                self.take()
                continue
            nxt = self.peek(1)
            if self.peek() == "*" or nxt in (";", "}", "=", None) or nxt.startswith(('"', "`")):
                t = self.type()  # embedded field: `T`, `*T`, `pkg.T`, `pkg.T=...`
                fields.append((t.name.rsplit(".", 1)[-1].lstrip("*"), t))
            else:
                names = [self.take()]
                while self.peek() == ",":
                    self.take(",")
                    names.append(self.take())
                t = self.type()
                fields.extend((n, t) for n in names)
            if self.peek() and self.peek().startswith(('"', "`")):
                self.take()  # tag
            if self.peek() == ";":
                self.take()
        self.take("}")
        off, align, out = 0, 1, []
        for name, t in fields:
            self.need_layout(t, f"field {name}")
            off = _align(off, t.align)
            out.append(Field(name, off, t))
            off += t.size
            align = max(align, t.align)
        size = _align(off, align)
        if out and out[-1].type.size == 0 and off == size and size:
            size = _align(size + 1, align)  # a zero-size final field gets padding (Go rule)
        desc = "; ".join(f"{f.name} {f.type.name}" for f in out)
        return GoType(f"struct {{ {desc} }}" if out else "struct {}", Kind.STRUCT, size, align,
                      tuple(out))

    def need_layout(self, t: GoType, where: str):
        if t.kind is None:
            self.fail(f"{where}: the layout of {t.name} is not in a stripped binary; write it "
                      f"as {t.name}=<underlying type>, e.g. {t.name}=struct{{ID int64; Name "
                      f"string}} or {t.name}=int64")

    # -- functions ----------------------------------------------------------------------------
    def group(self, kind: str) -> List[Tuple[str, GoType]]:
        """A parenthesised parameter list: either all named (`a, b int, c string`) or none."""
        self.take("(")
        start = self.i
        # First pass: decide whether entries are named by looking for `name Type` pairs.
        entries: List[Tuple[int, int]] = []
        depth, begin = 0, self.i
        while True:
            tok = self.peek()
            if tok is None:
                self.fail(f"unclosed {kind} list")
            if tok in "([{":
                depth += 1
            elif tok in ")]}":
                if depth == 0:
                    if self.i > begin:
                        entries.append((begin, self.i))
                    break
                depth -= 1
            elif tok == "," and depth == 0:
                entries.append((begin, self.i))
                begin = self.i + 1
            self.i += 1
        end = self.i
        self.i = start
        named = any(self._is_named(b, e) for b, e in entries)
        out: List[Tuple[str, GoType]] = []
        pending: List[str] = []
        for b, e in entries:
            self.i = b
            if named:
                name = self.take()
                if self.i == e:  # `a, b int`: a name waiting for its type
                    pending.append(name)
                    continue
                t = self.param_type()
                out.extend((n, t) for n in pending + [name])
                pending = []
            else:
                out.append(("", self.param_type()))
            if self.i != e:
                self.fail(f"unexpected {self.peek()!r} in the {kind} list")
        if pending:
            self.fail(f"{kind} {', '.join(pending)} has no type")
        self.i = end
        self.take(")")
        return out

    def _is_named(self, b: int, e: int) -> bool:
        """`name Type` (two or more tokens starting with an identifier that is not itself a
        complete type) vs a lone type."""
        if e - b < 2:
            return False
        first, second = self.toks[b], self.toks[b + 1]
        if not re.match(r"[A-Za-z_][A-Za-z0-9_]*$", first) or first in (
                "map", "chan", "func", "struct", "interface"):  # `pkg.T` has a dot: a type
            return False
        return second != "="  # `T=...` is a type with its layout; `name T` is named

    def func_rest(self):
        params = self.group("parameter")
        results: List[Tuple[str, GoType]] = []
        if self.peek() == "(":
            results = self.group("result")
        elif self.peek() not in (None, ")", ",", ";", "}", "]"):
            results = [("", self.type())]
        return params, results

    def signature(self) -> Tuple[list, list]:
        if self.peek() == "func":
            self.take()
        params, results = self.func_rest()
        if self.peek() is not None:
            self.fail(f"unexpected {self.peek()!r} after the results")
        return params, results


_CLOSURE = re.compile(r"^(func|gowrap|deferwrap)\d+$|^\d+$")


def receiver_of(func_name: str, ptrsize: int):
    """("pointer"|"value"|None, receiver type name) that a function name implies:
    `pkg.(*T).M` -> ("pointer", "*pkg.T"), `pkg.T.M` -> ("value", "pkg.T"), else (None, "")."""
    head, _, last = func_name.rpartition("/")
    prefix = head + "/" if head else ""
    m = re.match(r"^([^.]+)\.\(\*([^)]+)\)\.[^.]+$", last)
    if m:
        return "pointer", f"*{prefix}{m.group(1)}.{m.group(2)}"
    parts = last.split(".")
    if len(parts) == 3 and not _CLOSURE.match(parts[2]) and "[" not in last:
        return "value", f"{prefix}{parts[0]}.{parts[1]}"
    return None, ""


def _short(name: str) -> str:
    """`github.com/a/b.T` -> `b.T` (type names in binaries use the package name)."""
    star = "*" if name.startswith("*") else ""
    return star + name.lstrip("*").rsplit("/", 1)[-1]


def parse_signature(text: str, ptrsize: int = 8, func_name: str = "") -> Signature:
    """A Signature from Go syntax: the type of the Go expression naming the function.

    For a method the receiver may be written as the first parameter (the method expression's
    type, `func(*main.Store, int) ...`); when it is not, a pointer receiver is implied by the
    name (`pkg.(*T).M`), and a value receiver (`pkg.T.M`) must be written, with its layout, since
    its size shifts every stack slot. Every result and parameter needs a layout.
    """
    p = _Parser(text, ptrsize)
    params, results = p.signature()
    kind, recv = receiver_of(func_name, ptrsize)
    given = bool(params) and kind is not None and _short(params[0][1].name) == _short(recv)
    if kind == "pointer" and not given:
        params.insert(0, ("~recv", GoType(recv, Kind.POINTER, ptrsize, ptrsize)))
    elif kind == "value" and not given:
        p.fail(f"{func_name} has a value receiver: write it as the first parameter with its "
               f"layout, e.g. func({_short(recv)}=struct{{...}}, ...) ...")
    for i, (name, t) in enumerate(params):
        p.need_layout(t, f"parameter {i}")
    for i, (name, t) in enumerate(results):
        p.need_layout(t, f"result {i}")
    ps = [Param(n or f"~p{i}", t) for i, (n, t) in enumerate(params)]
    rs = [Param(n or f"~r{i}", t, is_result=True) for i, (n, t) in enumerate(results)]
    return Signature(tuple(ps), tuple(rs))
