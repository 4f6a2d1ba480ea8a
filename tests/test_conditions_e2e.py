"""End to end: conditional `return` (--effect-count, --effect-percent, --match, --after) on a
live Go process under load.

tests/fixtures/conditions_target runs 8 goroutines calling (*Server).Lookup and Save in a loop
with GOGC=1 and garbage per call, and counts per argument predicate how many calls matched and
how many came back faulted. Each case pauses the load (no call in flight), resets the target's
counters, creates the experiment, lets the load run, pauses again and compares what the target
saw with what the stub's counters say (`status`), then destroys and checks `.text` byte for byte.
"""
import math
import time

import pytest

from tests.support.fixtures import build_fixture
from tests.support.targets import differences_beyond_retained
from tests.support.targets import command, read_stats as stats, run_window

LOOKUP = "main.(*Server).Lookup"
FAULT = "-1,error:chaos"
LOAD_ENV = {"GOGC": "1"}


@pytest.fixture(scope="module")
def binary():
    return build_fixture("conditions_target")


@pytest.fixture
def target(binary, target_factory):
    return target_factory(binary, env=LOAD_ENV)


def armed(blade, t, *flags, func=LOOKUP, value=FAULT):
    """Pause, reset, create: the experiment's counters and the target's start together."""
    command(t, "pause", "PAUSED")
    command(t, "reset", "RESET")
    return blade.ok("create", "go", "return", "--pid", t.pid, "--func", func, "--value", value,
                    *flags)


def live(blade, uid):
    return blade.ok("status", uid)["live"]


def finish(blade, t, uid):
    done = blade.ok("destroy", uid)
    assert differences_beyond_retained(blade.home, t.pid) == []
    command(t, "resume", "RESUMED")
    time.sleep(0.3)
    command(t, "pause", "PAUSED")
    s = stats(t)
    command(t, "reset", "RESET")
    after = run_window(t, 0.5)
    assert after["calls"] > 0 and after["faulted"] == 0 and after["saves_faulted"] == 0
    assert not [ln for ln in t.lines if ln.startswith("BAD")], t.describe()
    assert t.alive()
    return done, s


def test_effect_count_exact_under_load(blade, target):
    t = target
    uid = armed(blade, t, "--effect-count", "300")
    deadline = time.monotonic() + 60
    s = run_window(t, 1.0)
    while s["faulted"] < 300 and time.monotonic() < deadline:
        s = run_window(t, 1.0)
    s = run_window(t, 0.5)  # the count stays exhausted
    assert s["faulted"] == 300, s
    assert s["calls"] > 300
    facts = live(blade, uid)
    assert facts["calls_faulted"] == 300
    # a call that grows its stack passes the entry twice (morestack jumps back to it)
    assert facts["calls_seen"] >= s["calls"]
    done, _ = finish(blade, t, uid)
    assert done["restored"]["calls_faulted"] == 300


@pytest.mark.parametrize("pred,expr", [
    ("p1", 'id==42 && name^="tenant-"'),
    ("p2", 's.region=="eu" && enabled==true'),
    ("p3", "small<0 && #1>=60"),
])
def test_match_faults_exactly_the_matching_calls(blade, target, pred, expr):
    t = target
    uid = armed(blade, t, "--match", expr)
    s = run_window(t, 1.5)
    assert s[f"{pred}_match"] > 0, s
    assert s[f"{pred}_faulted_match"] == s[f"{pred}_match"], s   # every matching call
    assert s[f"{pred}_faulted_not"] == 0, s                      # and no other
    assert s["faulted"] == s[f"{pred}_match"]
    facts = live(blade, uid)
    assert facts["calls_faulted"] == s["faulted"]
    assert facts["calls_seen"] >= s["calls"]
    finish(blade, t, uid)


def binomial_bounds(n, p, alpha=1e-6):
    lo = hi = None
    logs = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
            + k * math.log(p) + (n - k) * math.log1p(-p) for k in range(n + 1)]
    acc = 0.0
    for k in range(n + 1):
        acc += math.exp(logs[k])
        if acc > alpha / 2:
            lo = k
            break
    acc = 0.0
    for k in range(n, -1, -1):
        acc += math.exp(logs[k])
        if acc > alpha / 2:
            hi = k
            break
    return lo, hi


@pytest.mark.parametrize("flags,pred", [(("--effect-percent", "25"), None),
                                         (("--effect-percent", "50", "--match",
                                           "small<0 && #1>=60"), "p3")])
def test_effect_percent_within_binomial_bounds(blade, target, flags, pred):
    t = target
    uid = armed(blade, t, *flags)
    s = run_window(t, 2.0)
    n = s[f"{pred}_match"] if pred else s["calls"]
    faulted = s[f"{pred}_faulted_match"] if pred else s["faulted"]
    if pred:
        assert s[f"{pred}_faulted_not"] == 0, s
    lo, hi = binomial_bounds(n, int(flags[1]) / 100, 1e-6)
    assert n > 1000 and lo <= faulted <= hi, (s, lo, hi)
    assert live(blade, uid)["calls_faulted"] == s["faulted"]
    finish(blade, t, uid)


def test_after_runs_the_body_then_replaces_the_results(blade, target):
    t = target
    uid = armed(blade, t, "--after", "--effect-count", "200", func="main.Save")
    s = run_window(t, 1.5)
    assert s["saves_faulted"] == 200, s
    assert s["saved"] == s["saves"]  # the body ran for every call, faulted ones included
    facts = live(blade, uid)
    assert facts["calls_faulted"] == 200 and facts["calls_seen"] >= s["saves"]
    finish(blade, t, uid)


def test_refusals_name_the_parameters_and_types(blade, target):
    t = target
    r = blade.fail("create", "go", "return", "--pid", t.pid, "--func", LOOKUP, "--value", FAULT,
                   "--match", "user==1")
    msg = r["error"]
    assert "no parameter 'user'" in msg and "id (int)" in msg and "name (string)" in msg, msg
    r = blade.fail("create", "go", "return", "--pid", t.pid, "--func", LOOKUP, "--value", FAULT,
                   "--match", "name==42")
    assert "name is string" in r["error"], r
    r = blade.fail("create", "go", "return", "--pid", t.pid, "--func", LOOKUP, "--value", FAULT,
                   "--match", "enabled>true")
    assert "enabled is bool" in r["error"], r
    r = blade.fail("create", "go", "return", "--pid", t.pid, "--func", LOOKUP, "--value", FAULT,
                   "--match", "s.zone==\"x\"")
    assert "no field 'zone'" in r["error"] and "region (string)" in r["error"], r
    r = blade.fail("create", "go", "return", "--pid", t.pid, "--func", "main.Save", "--value",
                   FAULT, "--after", "--match", "id==1")
    assert "--match cannot be combined with --after" in r["error"], r
    assert differences_beyond_retained(blade.home, t.pid) == []
    assert t.alive()


def test_effect_percent_0_is_armed_and_never_fires(blade, target):
    t = target
    uid = armed(blade, t, "--effect-percent", "0")  # a 0 flag value must survive the CLI
    s = run_window(t, 1.0)
    assert s["calls"] > 0 and s["faulted"] == 0, s
    st = blade.ok("status", uid)
    assert st["result"]["conditions"] == {"effect_percent": 0}
    assert st["live"]["calls_faulted"] == 0 and st["live"]["calls_seen"] >= s["calls"]
    finish(blade, t, uid)
