"""End to end: the condition prefix on delay, panic and args (the same blocks as `return`), on a
live Go process under load (tests/fixtures/conditions_target, 8 goroutines, GOGC=1).

The target recovers a "chaos" panic around each Lookup call and counts it as faulted, counts a
result computed with id 1000 as faulted (args --set id=1000), and counts calls slower than
40 ms apart (delay).
"""
import pytest

from tests.test_conditions_e2e import LOOKUP, binary, command, finish, live, run_window, \
    target  # noqa: F401 (binary, target: fixtures)


def armed_action(blade, t, action, *flags):
    command(t, "pause", "PAUSED")
    command(t, "reset", "RESET")
    return blade.ok("create", "go", action, "--pid", t.pid, "--func", LOOKUP, *flags)


def test_args_effect_count_exact(blade, target):
    t = target
    uid = armed_action(blade, t, "args", "--set", "id=1000", "--effect-count", "150")
    s = run_window(t, 1.5)
    assert s["faulted"] == 150, s
    assert live(blade, uid)["calls_faulted"] == 150
    finish(blade, t, uid)


def test_args_match_tampers_only_matching_calls(blade, target):
    t = target
    uid = armed_action(blade, t, "args", "--set", "id=1000", "--match",
                       's.region=="eu" && enabled==true')
    s = run_window(t, 1.0)
    assert s["p2_match"] > 0 and s["p2_faulted_match"] == s["p2_match"], s
    assert s["p2_faulted_not"] == 0, s
    assert live(blade, uid)["calls_faulted"] == s["faulted"]
    finish(blade, t, uid)


def test_panic_match_and_count(blade, target):
    t = target
    uid = armed_action(blade, t, "panic", "--value", '"chaos"', "--match", "small<0 && #1>=60",
                       "--effect-count", "7")
    s = run_window(t, 1.5)
    assert s["faulted"] == 7 and s["p3_faulted_match"] == 7 and s["p3_faulted_not"] == 0, s
    assert live(blade, uid)["calls_faulted"] == 7
    finish(blade, t, uid)


def test_delay_only_matching_calls(blade, target):
    t = target
    uid = armed_action(blade, t, "delay", "--time", "60", "--match", 'id==42 && name^="tenant-"')
    s = run_window(t, 2.0)
    assert s["p1_match"] > 0 and s["p1_slow_match"] == s["p1_match"], s  # every one waited
    # the others did not wait (a busy shared machine may stall a rare call on its own)
    assert s["p1_slow_not"] <= max(3, s["calls"] // 10000), s
    assert s["faulted"] == 0
    facts = live(blade, uid)
    assert facts["calls_faulted"] == s["p1_match"]
    finish(blade, t, uid)


def test_delay_effect_count_exact(blade, target):
    """Only the first N calls wait (a `lock xadd` ticket each), the later ones run at once."""
    t = target
    uid = armed_action(blade, t, "delay", "--time", "60", "--effect-count", "20")
    s = run_window(t, 2.0)
    assert live(blade, uid)["calls_faulted"] == 20
    assert s["faulted"] == 0 and s["calls"] > 1000, s
    # each of the 20 waited 60 ms; a busy shared machine may stall a rare other call on its own
    assert 20 <= s["slow"] <= 20 + max(3, s["calls"] // 10000), s
    finish(blade, t, uid)


@pytest.mark.parametrize("action,flags", [("panic", ("--value", '"chaos"')),
                                          ("args", ("--set", "id=1000"))])
def test_without_conditions_every_call_still_faults(blade, target, action, flags):
    t = target
    uid = armed_action(blade, t, action, *flags)
    s = run_window(t, 0.5)
    assert s["calls"] > 0 and s["faulted"] == s["calls"], s
    # no conditions: every call faults; only the blast-radius table (issue 19) counts them
    facts = live(blade, uid)
    assert facts["calls_faulted"] == facts["calls_seen"] >= s["calls"], (facts, s)
    assert facts["blast_radius"] and \
        all(r["faulted"] == r["calls"] for r in facts["blast_radius"]), facts
    finish(blade, t, uid)


@pytest.mark.parametrize("action,flags", [("args", ("--set", "id=1000")),
                                          ("panic", ("--value", '"chaos"')),
                                          ("delay", ("--time", "1"))])
def test_effect_percent_on_each_action(blade, target, action, flags):
    """The shared percent block, live on every fault action: the fraction of calls faulted
    stays within exact binomial bounds at 1e-6 (the target is paused when counters are read,
    so calls_seen and calls_faulted describe the same calls)."""
    from tests.test_conditions_e2e import binomial_bounds
    t = target
    uid = armed_action(blade, t, action, *flags, "--effect-percent", "30")
    s = run_window(t, 2.0)
    facts = live(blade, uid)
    n, k = facts["calls_seen"], facts["calls_faulted"]
    lo, hi = binomial_bounds(n, 0.30, 1e-6)
    assert n > 1000 and lo <= k <= hi, (facts, lo, hi, s)
    if action != "delay":  # the target counts each call it saw faulted (recovered / id 1000)
        assert s["faulted"] == k, (s, facts)
    finish(blade, t, uid)
