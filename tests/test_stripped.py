"""Stripped binaries (-ldflags="-s -w": no .symtab, no DWARF), as most shipped Go services are.

End to end on the real dlv: types from --signature (Go syntax) and from --debug-binary (the
unstripped build of the same source), `error:` values through the module data's itabs, `var:`
values through the debug binary's translated addresses; restored byte for byte. Refusals name
what to pass.
"""
import pytest

from tests.support.blade import Blade
from tests.support.targets import differences_beyond_retained
from tests.test_return_e2e import call

STRIPPED = "-s -w"

# (func, call name, --signature, value, injected output)
SIGNATURE_CASES = [
    ("main.Query", "Query", "func(id int) (string, error)", '"chaos",error:injected db error',
     '"chaos",err(injected db error|eof=false|nf=false)'),
    ("main.(*Store).GetUser", "GetUser", "func(int) (*main.User, error)", "nil,error:gone",
     "user(nil),err(gone|eof=false|nf=false)"),
    ("main.Store.Count", "Count", "func(main.Store=struct{users map[int]*main.User}) int", "42",
     "42"),
    ("main.GetPoint", "GetPoint", "func() main.Point=struct{X, Y int; W float64; Tag string}",
     "zero", '0,0,0,""'),
    ("main.Temp", "Temp", "func() main.Celsius=float32", "-40.5", "-40.5"),
    ("main.Ints", "Ints", "func() (int, int8, uint16, int64, uint64)",
     "-1,-128,65535,-9223372036854775808,18446744073709551615",
     "-1,-128,65535,-9223372036854775808,18446744073709551615"),
]

DEBUG_BINARY_CASES = [
    ("main.(*Store).GetUser", "GetUser", "nil,var:main.ErrNotFound",
     "user(nil),err(not found|eof=false|nf=true)"),
    ("main.Read", "Read", "0,var:io.EOF", "0,err(EOF|eof=true|nf=false)"),
    ("main.Query", "Query", '"chaos",error:injected db error',
     '"chaos",err(injected db error|eof=false|nf=false)'),
    ("main.GetPoint", "GetPoint", "zero", '0,0,0,""'),
]


@pytest.fixture(params=[False, True], ids=["exec", "pie"])
def builds(request):
    from tests.support.fixtures import build_fixture
    pie = request.param
    return (build_fixture("e2e_target", ldflags=STRIPPED, pie=pie),
            build_fixture("e2e_target", pie=pie))


def _uid(result):
    return result["uid"] if isinstance(result, dict) else result  # {uid, warnings} or uid


def _roundtrip(blade, t, func, name, value, injected, *extra):
    original = call(t, name)
    uid = _uid(blade.create_return(t.pid, func, value, *extra))
    got = call(t, name)
    blade.ok("destroy", uid)
    after = call(t, name)
    return None if (got, after) == (injected, original) else \
        f"{func} {value!r}: injected {got!r} (want {injected!r}), after {after!r} (want {original!r})"


def test_stripped_with_signature(builds, tmp_path, target_factory):
    stripped, _ = builds
    blade = Blade(tmp_path / "home")
    t = target_factory(stripped)
    info = blade.ok("inspect", "--pid", t.pid)["binary"]
    assert not info["has_dwarf"] and not info["has_symtab"]
    assert int(info["moduledata"]["error_itab"], 16) > 0
    failures = [f for f in (_roundtrip(blade, t, func, name, value, injected, "--signature", sig)
                            for func, name, sig, value, injected in SIGNATURE_CASES) if f]
    assert not failures, "\n".join(failures)
    assert t.alive()
    assert differences_beyond_retained(blade.home, t.pid) == []


def test_stripped_with_debug_binary(builds, tmp_path, target_factory):
    stripped, debug = builds
    blade = Blade(tmp_path / "home")
    t = target_factory(stripped)
    failures = [f for f in (_roundtrip(blade, t, func, name, value, injected,
                                       "--debug-binary", debug)
                            for func, name, value, injected in DEBUG_BINARY_CASES) if f]
    assert not failures, "\n".join(failures)
    assert t.alive()
    assert differences_beyond_retained(blade.home, t.pid) == []


def test_stripped_refusals_say_what_to_pass(tmp_path, target_factory):
    from tests.support.fixtures import build_fixture
    stripped = build_fixture("e2e_target", ldflags=STRIPPED)
    other = build_fixture("e2e_target", pie=True)  # has DWARF, but another build (PIE)
    blade = Blade(tmp_path / "home")
    t = target_factory(stripped)
    before = call(t, "Query")

    err = blade.fail("create", "go", "return", "--pid", t.pid, "--func", "main.Query",
                     "--value", "x,nil")["error"]
    assert "--signature" in err and "--debug-binary" in err

    err = blade.fail("create", "go", "return", "--pid", t.pid, "--func", "main.Read",
                     "--value", "0,var:io.EOF", "--signature", "func() (int, error)")["error"]
    assert "var:io.EOF" in err and "--debug-binary" in err

    err = blade.fail("create", "go", "return", "--pid", t.pid, "--func", "main.Temp",
                     "--value", "1", "--signature", "func() main.Celsius")["error"]
    assert "main.Celsius=" in err  # the layout of a named type used by value

    err = blade.fail("create", "go", "return", "--pid", t.pid, "--func", "main.Query",
                     "--value", "x,nil", "--debug-binary", other)["error"]
    assert "is not a build of" in err

    err = blade.fail("create", "go", "return", "--pid", t.pid, "--func", "main.Query",
                     "--value", "x,nil", "--debug-binary", stripped)["error"]
    assert "no DWARF either" in err

    assert call(t, "Query") == before
    assert differences_beyond_retained(blade.home, t.pid) == []


def test_faults_that_need_goroutine_stacks_are_refused_before_attaching(tmp_path,
                                                                      target_factory):
    """delay, panic and args must see every goroutine's stack when they are removed, which dlv
    reads through DWARF: on a -s -w build they are refused, saying why and what works, before
    any dlv attaches."""
    from tests.support.fixtures import build_fixture
    from tests.support.lifecycle import leftovers, tracer, wait_until
    blade = Blade(tmp_path / "home")
    t = target_factory(build_fixture("e2e_target", ldflags=STRIPPED))
    before = call(t, "Query")
    for action, extra in (("delay", ["--time", "100"]), ("panic", ["--value", '"boom"']),
                          ("args", ["--set", "#0=7"])):
        resp = blade.fail("create", "go", action, "--pid", t.pid, "--func", "main.Query",
                          *extra)
        assert resp["code"] == 47000, resp
        err = resp["error"]
        assert f"{action} needs the target's executable with DWARF" in err, err
        assert "--signature" in err and "goroutines" in err
        assert tracer(t.pid) is None
    assert wait_until(lambda: not leftovers(blade.home), 10), leftovers(blade.home)
    assert call(t, "Query") == before
    assert differences_beyond_retained(blade.home, t.pid) == []


def test_signature_checked_against_dwarf(tmp_path, target_factory):
    """On a binary with DWARF a wrong --signature is refused instead of trusted."""
    from tests.support.fixtures import build_fixture
    blade = Blade(tmp_path / "home")
    t = target_factory(build_fixture("e2e_target"))
    err = blade.fail("create", "go", "return", "--pid", t.pid, "--func", "main.Query",
                     "--value", "x,y", "--signature", "func(int) (string, string)")["error"]
    assert "disagrees with the DWARF" in err
    uid = _uid(blade.create_return(t.pid, "main.Query", "x,nil", "--signature",
                                   "func(int) (string, error)"))
    assert call(t, "Query") == '"x",<nil>'
    blade.ok("destroy", uid)
