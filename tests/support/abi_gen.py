"""Generates the result-location fixture (tests/fixtures/abi_results/main.go) and what to expect.

Each fixture function returns distinct sentinels for every machine scalar of every result. The
Python side keeps, per result, the leaves to check at the function's RET:
  ("bytes", off, size, data)       the low `size` bytes of the scalar at value offset `off`
  ("string", off, content)         ptr word at off points at `content`, len word == len(content)
  ("global", off, size, sym, soff) the word equals the target's memory at symbol sym + soff
  ("addr", off, size, sym)         the word equals the address of symbol sym
Run `python -m tests.support.abi_gen` to rewrite the committed fixture.
"""
from struct import pack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from blade_go.abi.layout import Layout
from blade_go.inspector.gotypes import GoType, Kind, Param, Signature

FIXTURE_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "abi_results"


@dataclass(frozen=True)
class T:
    """A Go type of the fixture: its source spelling and how to lay it out."""
    go: str
    make: Callable[[Layout], GoType]
    tag: str                        # value-generation class
    parts: Tuple = ()               # struct fields (name, T) / array (elem,) / pointer target


def basic(name):
    return T(name, lambda L: L.basic(name), "basic")


INT, INT8, INT16, INT32, INT64 = map(basic, ["int", "int8", "int16", "int32", "int64"])
UINT, UINT8, UINT16, UINT32, UINT64 = map(basic, ["uint", "uint8", "uint16", "uint32", "uint64"])
UINTPTR, BOOL, F32, F64 = map(basic, ["uintptr", "bool", "float32", "float64"])
C64, C128 = basic("complex64"), basic("complex128")
STR = T("string", lambda L: L.string(), "string")
ERR = T("error", lambda L: L.iface("error"), "global")
ANY = T("any", lambda L: L.eface("interface {}"), "global")
SLICE = T("[]int", lambda L: L.slice(L.basic("int")), "global")
PTR = T("*int", lambda L: L.pointer(L.basic("int")), "pointer")
MAP = T("map[int]int", lambda L: L.word("map[int]int", Kind.MAP), "global")
CHAN = T("chan int", lambda L: L.word("chan int", Kind.CHAN), "global")
FUNC = T("func() int", lambda L: L.word("func() int", Kind.FUNC), "global")


def arr(elem: T, n: int) -> T:
    return T(f"[{n}]{elem.go}", lambda L: L.array(elem.make(L), n), "array", (elem, n))


def named(name: str, under: T) -> T:
    return T(name, lambda L: L.named("main." + name, under.make(L)), under.tag, under.parts)


STRUCTS = {}  # Go name -> field list, declared at the top of the fixture


def struct(name: str, *fields: Tuple[str, T]) -> T:
    STRUCTS[name] = fields
    return T(name, lambda L: L.struct("main." + name, [(f, t.make(L)) for f, t in fields]),
             "struct", fields)


EMPTY = struct("Empty")
TRIPLE = struct("Triple", ("a", INT), ("b", F64), ("c", STR))
WITHARR = struct("WithArr", ("n", INT), ("v", arr(INT, 2)))
INNER = struct("Inner", ("a", INT8), ("b", F32))
NESTED = struct("Nested", ("in", INNER), ("c", arr(F64, 1)), ("d", EMPTY), ("e", UINT16))
TAILZERO = struct("TailZero", ("x", INT32), ("z", EMPTY))
FIVESTR = struct("FiveStr", *[(f"s{i}", STR) for i in range(5)])
WIDE = struct("Wide", *[(f"w{i}", INT) for i in range(10)])
MIXED = struct("Mixed", ("i", INT), ("f", F64))
PAIR = struct("Pair", ("a", INT), ("b", INT))
ALIGN386 = struct("Align386", ("a", INT8), ("b", INT64), ("c", INT8), ("d", F64))
CELSIUS = named("Celsius", F64)


@dataclass
class Fn:
    name: str
    params: List[T]
    results: List[T]
    names: Optional[List[str]] = None   # named results
    recv: Optional[T] = None            # value receiver type
    ptr_recv: bool = False
    generic: bool = False               # func Name[X any](x X, ...): first result returns x


def ints(n, t=INT):
    return [t] * n


FUNCS = [
    Fn("OneInt", [], [INT]),
    Fn("IntStrBool", [INT], [INT, STR, BOOL]),
    Fn("FloatsAndSmallInts", [F64, INT], [F64, F32, INT8, UINT16]),
    Fn("JustError", [STR], [ERR]),
    Fn("StrError", [INT, INT], [STR, ERR]),
    Fn("Any", [], [ANY, INT]),
    Fn("Slice", [SLICE], [SLICE]),
    Fn("PointerShaped", [], [PTR, MAP, CHAN, FUNC]),
    Fn("TenInts", [], ints(10)),
    Fn("NineThenStrInt8", [INT], ints(9, INT64) + [STR, INT8]),
    Fn("SixteenFloats", [F64], [F64] * 16),
    Fn("FloatIntInterleave", [], [F32, INT, F64, UINT32] * 4 + [F32]),
    Fn("TripleResult", [], [TRIPLE]),
    Fn("StructWithArray", [INT], [WITHARR, INT]),
    Fn("ArrayOfOneStr", [], [arr(STR, 1), INT]),
    Fn("ArrayOfTwo", [arr(INT, 2)], [arr(INT, 2), INT]),
    Fn("ZeroSized", [], [arr(INT, 0), INT, EMPTY]),
    Fn("EmptyStructs", [EMPTY], [EMPTY, INT, EMPTY, STR]),
    Fn("Complex", [C64], [C128, C64, F32]),
    Fn("SmallIntMix", [BOOL], [BOOL, INT8, BOOL, UINT8, INT16, INT32, UINT32, UINT64]),
    Fn("NamedResults", [INT], [INT, STR, ERR], names=["n", "s", "err"]),
    Fn("ValueMethod", [INT], [INT, STR], recv=TRIPLE),
    Fn("PointerMethod", [F64], [F64, INT, TRIPLE], recv=TRIPLE, ptr_recv=True),
    Fn("StackArgsStackResults", ints(12), ints(10) + [STR]),
    Fn("ArrayArgs", [arr(INT32, 3), INT], [arr(INT64, 2), INT8]),
    Fn("StringArgs", [STR] * 5, [WIDE, INT]),
    Fn("FloatArgsFloatResults", [F64] * 16, [F64] * 16 + [INT]),
    Fn("FiveStrings", [], [FIVESTR, STR]),
    Fn("LaterValuesUseRegs", [], [STR, SLICE, SLICE, STR, INT, F64]),
    Fn("NestedStruct", [], [NESTED, INT]),
    Fn("TailZeroStruct", [], [TAILZERO, INT, TAILZERO]),
    Fn("ByteRuneUintptr", [], [UINT8, INT32, UINTPTR, UINT64, INT64, UINT]),
    Fn("AlignMix", [INT8], [INT64, INT8, F64, INT8, C128, ALIGN386]),
    Fn("ZeroSizedAlignment", [arr(INT8, 3)], [arr(INT8, 3), arr(INT64, 0), arr(INT32, 2)]),
    Fn("ZeroSizedAlignment386", [arr(INT8, 1)], [arr(INT8, 1), arr(INT32, 0), INT16]),
    Fn("Generic", [INT], [STR, INT, arr(UINT8, 2)], generic=True),
    Fn("ArrayOfOneStruct", [], [arr(PAIR, 1), arr(arr(F32, 1), 1), MIXED]),
    Fn("IntsFullThenFloats", [], ints(9) + [F64, MIXED, F32, INT]),
    Fn("NamedFloatMethod", [], [CELSIUS, INT], recv=CELSIUS),
    Fn("FiveErrors", [ERR, ERR], [ERR] * 5 + [INT]),
    Fn("ManyArgsOnly", ints(10) + [F64] * 16 + [STR], [INT, F64]),
]


class Gen:
    """Sentinel source: every scalar gets a value no other scalar in the program has."""

    def __init__(self):
        self.k = 0
        self.globals: List[str] = []

    def next(self) -> int:
        self.k += 1
        return self.k

    def value(self, t: T, L: Layout, off: int = 0):
        """(Go expression, leaves) for a fresh sentinel of type t at value offset off."""
        k, gt = self.next(), t.make(L)
        if t.tag == "basic":
            return self._basic(t, gt, k, off)
        if t.tag == "string":
            s = f"s{k}" + "abcdefghij"[: k % 11]
            return f'"{s}"', [("string", off, s)]
        if t.tag == "pointer":
            self.globals.append(f"var gt{k} int")
            return f"&gt{k}", [("addr", off, L.ptrsize, f"main.gt{k}")]
        if t.tag == "global":
            init = {"error": f'errors.New("e{k}")', "any": f"any({k}*1000)",
                    "[]int": f"[]int{{{k}, 2, 3}}", "map[int]int": f"map[int]int{{{k}: 1}}",
                    "chan int": f"make(chan int, {k})", "func() int": f"func() int {{ return {k} }}",
                    }[t.go]
            self.globals.append(f"var gv{k} {t.go} = {init}")
            return f"gv{k}", [("global", off + i, L.ptrsize, f"main.gv{k}", i)
                               for i in range(0, gt.size, L.ptrsize)]
        if t.tag == "array":
            elem, n = t.parts
            exprs, leaves = [], []
            for i in range(n):
                e, lv = self.value(elem, L, off + i * elem.make(L).size)
                exprs.append(e)
                leaves += lv
            return f"{t.go}{{{', '.join(exprs)}}}", leaves
        if t.tag == "struct":
            exprs, leaves = [], []
            for (fname, ft), f in zip(t.parts, gt.fields):
                e, lv = self.value(ft, L, off + f.offset)
                exprs.append(f"{fname}: {e}")
                leaves += lv
            return f"{t.go}{{{', '.join(exprs)}}}", leaves
        raise ValueError(t)

    def _basic(self, t, gt, k, off):
        if gt.kind == Kind.BOOL:
            return "true", [("bytes", off, 1, b"\x01")]
        if gt.kind in (Kind.FLOAT32, Kind.FLOAT64):
            v = 1000.5 + k
            fmt = "<f" if gt.size == 4 else "<d"
            return f"{t.go}({v})", [("bytes", off, gt.size, pack(fmt, v))]
        if gt.kind in (Kind.COMPLEX64, Kind.COMPLEX128):
            re, im = 2000.25 + k, -3000.75 - k
            fmt = "<f" if gt.size == 8 else "<d"
            half = gt.size // 2
            return f"{t.go}(complex({re}, {im}))", [
                ("bytes", off, half, pack(fmt, re)),
                ("bytes", off + half, half, pack(fmt, im))]
        # int, uint, uintptr: 32-bit sentinels, so one source serves amd64 and 386
        bits = 32 if t.go in ("int", "uint", "uintptr") else gt.size * 8
        signed = gt.kind == Kind.INT
        # fill the high bytes too, so a value truncated in a narrower register would show
        if bits == 8:
            v = 0x20 + k % 0x5F
        else:
            v = (0x5A << (bits - 8)) | (k & 0xFF)
        if signed and k % 2:
            v = -(v & ((1 << (bits - 2)) - 1))
        return f"{t.go}({v})", [("bytes", off, gt.size, v.to_bytes(gt.size, "little",
                                                                      signed=signed))]


@dataclass
class Expect:
    """What the fixture function `symbol` must leave at its RET."""
    symbol: str           # symbol prefix for generic instances ("main.Generic[")
    signature: Signature
    leaves: List[list] = field(default_factory=list)  # per result


def symbol_of(fn: Fn) -> str:
    if fn.generic:
        return f"main.{fn.name}["
    if fn.recv is not None:
        return f"main.(*{fn.recv.go}).{fn.name}" if fn.ptr_recv else f"main.{fn.recv.go}.{fn.name}"
    return f"main.{fn.name}"


def generate(ptrsize: int) -> Tuple[str, List[Expect]]:
    """The fixture source (identical for every arch) and, for `ptrsize`, the expectations."""
    L, gen = Layout(ptrsize), Gen()
    funcs, calls, expects = [], [], []
    for fn in FUNCS:
        params = [Param(f"p{i}", t.make(L)) for i, t in enumerate(fn.params)]
        recv_expr = None
        if fn.recv is not None:
            recv_expr, _ = gen.value(fn.recv, L)
            rt = fn.recv.make(L)
            params.insert(0, Param("r", L.pointer(rt) if fn.ptr_recv else rt))
        arg_exprs, arg_leaves = [], []
        for t in fn.params:
            e, lv = gen.value(t, L)
            arg_exprs.append(e)
            arg_leaves.append(lv)
        results, leaves, exprs = [], [], []
        for i, t in enumerate(fn.results):
            e, lv = gen.value(t, L)
            if fn.generic and i == 0:  # the generic function hands back its argument
                e, lv = "x", [("string", 0, f"gen{gen.next()}")]
                arg_exprs[0] = f'"{lv[0][2]}"'
            exprs.append(e)
            leaves.append(lv)
            name = fn.names[i] if fn.names else f"~r{i}"
            results.append(Param(name, t.make(L), is_result=True))
        if fn.generic:
            params[0] = Param(".dict", L.pointer(L.basic("uintptr")))
            params.insert(1, Param("x", L.string()))
        expects.append(Expect(symbol_of(fn), Signature(tuple(params), tuple(results)), leaves))
        funcs.append(_go_func(fn, exprs))
        calls.append(_go_call(fn, recv_expr, arg_exprs))
    return _go_program(gen.globals, funcs, calls), expects


def _go_func(fn: Fn, exprs: List[str]) -> str:
    if fn.generic:
        ps = ["x X"] + [f"p{i} {t.go}" for i, t in enumerate(fn.params[1:], 1)]
        head = f"func {fn.name}[X any]({', '.join(ps)})"
        rs = ["X"] + [t.go for t in fn.results[1:]]
    else:
        ps = [f"p{i} {t.go}" for i, t in enumerate(fn.params)]
        recv = ""
        if fn.recv is not None:
            recv = f"(r *{fn.recv.go}) " if fn.ptr_recv else f"(r {fn.recv.go}) "
        head = f"func {recv}{fn.name}({', '.join(ps)})"
        rs = [t.go for t in fn.results]
    if fn.names:
        res = ", ".join(f"{n} {r}" for n, r in zip(fn.names, rs))
        body = "\n".join(f"\t{n} = {e}" for n, e in zip(fn.names, exprs)) + "\n\treturn"
    else:
        res = ", ".join(rs)
        body = f"\treturn {', '.join(exprs)}"
    return f"//go:noinline\n{head} ({res}) {{\n{body}\n}}\n"


def _go_call(fn: Fn, recv_expr, args) -> str:
    outs = ", ".join(f"o{i}" for i in range(len(fn.results)))
    call = f"{fn.name}({', '.join(args)})"
    pre = ""
    if fn.recv is not None and fn.ptr_recv:
        pre, call = f"\t\trv := {recv_expr}\n", "(&rv)." + call
    elif fn.recv is not None:
        call = f"{fn.recv.go}({recv_expr})." + call
    return f"\t{{\n{pre}\t\t{outs} := {call}\n\t\tkeep({outs})\n\t}}\n"


def _go_program(globals_, funcs, calls) -> str:
    types = []
    for name, fields in STRUCTS.items():
        body = "; ".join(f"{f} {t.go}" for f, t in fields)
        types.append(f"type {name} struct{{ {body} }}\n")
    types.append("type Celsius float64\n")
    return ("// Code generated by tests/support/abi_gen.py; DO NOT EDIT.\n\n"
            "// Functions returning distinct sentinels, for checking computed result locations\n"
            "// against what the compiler does. main waits for a line on stdin before calling.\n"
            "package main\n\nimport (\n\t\"bufio\"\n\t\"errors\"\n\t\"fmt\"\n\t\"os\"\n)\n\n"
            + "".join(types) + "\n" + "\n".join(globals_) + "\n\nvar sink []any\n\n"
            "func keep(vs ...any) { sink = append(sink, vs...) }\n\n"
            + "\n".join(funcs) +
            "\nfunc main() {\n\tfmt.Println(\"READY\", os.Getpid())\n"
            "\tbufio.NewReader(os.Stdin).ReadString('\\n')\n"
            + "".join(calls) + "\tfmt.Println(\"DONE\", len(sink))\n}\n")


GO_MOD = "module abiresults\n\ngo 1.18\n"


def write_fixture(directory: Path = FIXTURE_DIR):
    directory.mkdir(parents=True, exist_ok=True)
    src, _ = generate(8)
    (directory / "main.go").write_text(src)
    (directory / "go.mod").write_text(GO_MOD)


if __name__ == "__main__":
    write_fixture()
    print("wrote", FIXTURE_DIR)
