"""End to end: `blade-go create go args` (and `return` on a function without results, which uses
the same entry placement) on a live Go process, observed from what the target computes."""
import os
import re
import signal

import pytest

from blade_go import procfs
from tests.support.fixtures import build_fixture
from tests.support.lifecycle import leftovers, supervisors, wait_until
from tests.support.targets import differences_beyond_retained


@pytest.fixture(scope="module")
def faults_binary():
    return build_fixture("faults_target")


def call(target, name, timeout=20):
    mark = target.mark()
    target.send_line(f"call {name}")
    line = target.wait_for_line(rf"^{re.escape(name)} => ", since=mark, timeout=timeout)
    return re.match(r".* => (.*) ms=[\d.]+$", line).group(1)


CASES = [
    # (--func, call name, --set, computed while injected)
    ("main.Scale", "Scale", "x=10", "x:20"),                          # an int
    ("main.Scale", "Scale", 'label="chaos, really"', "chaos, really:42"),  # a string
    ("main.Scale", "Scale", "#0=-3,#1=neg", "neg:-6"),               # by position
    ("main.(*Account).Describe", "Describe", "a=var:main.Alternate",   # a pointer receiver:
     "bob has 900"),                                                # fields read through it
    ("main.Account.Total", "Total", "extra=1000", "1100"),             # value receiver method
    ("main.Account.Total", "Total", "a=zero", "5"),                    # a whole struct receiver
    ("main.Pick[int]", "PickInt", "first=false", "2"),                 # a generic instance
    ("main.Pick[int]", "PickInt", "a=77", "77"),
    ("main.makeMultiplier.func1", "Triple", "x=10", "30"),             # a closure
    ("main.makeGreeter.func1", "Greet", "name=alice", "hi, alice5"),   # one reading captures
    ("main.Work", "Work", "id=5", "1008"),
]


@pytest.mark.parametrize("func,name,assign,want", CASES, ids=[c[2] for c in CASES])
def test_args_change_what_the_function_computes(blade, faults_binary, target_factory, func,
                                                name, assign, want):
    t = target_factory(faults_binary)
    original = call(t, name)
    uid = blade.ok("create", "go", "args", "--pid", t.pid, "--func", func, "--set", assign)
    assert call(t, name) == want
    assert call(t, name) == want
    blade.ok("destroy", uid)
    assert call(t, name) == original
    assert differences_beyond_retained(blade.home, t.pid) == []


def test_args_survive_stack_growth_and_gc_under_load(blade, faults_binary, target_factory):
    # Work's entry stub runs again after a morestack (the prologue re-enters at the entry):
    # 8 goroutines with GOGC=1; the load target checks every result and prints BAD on a wrong
    # one: with id replaced by 0 every goroutine g expects 1000+g+g+3 but now gets 1000+g+3.
    t = target_factory(faults_binary, args=["load"], env={"GOGC": "1"})
    t.wait_for_line(r"^STAT ", timeout=20)
    uid = blade.ok("create", "go", "args", "--pid", t.pid, "--func", "main.Work", "--set", "id=0")
    line = t.wait_for_line(r"^BAD goroutine (\d+) got (\d+)", timeout=20)
    g, got = map(int, re.match(r"^BAD goroutine (\d+) got (\d+)", line).groups())
    assert g > 0 and got == 1000 + g + 3  # the program's own check saw the changed input
    blade.ok("destroy", uid)


@pytest.mark.parametrize("action", [["args", "--func", "main.Scale", "--set", "x=10"],
                                    ["return", "--func", "main.Log"]], ids=["args", "return"])
def test_destroy_right_after_the_target_exited_leaves_its_zombie_alone(
        blade, faults_binary, target_factory, action):
    # A target that exited but is not yet reaped by its parent (here: this test) keeps its
    # /proc entry and start time, but has no executable and no memory: destroy must report it
    # gone. A CI run once failed with "process has no executable" when the load target exited
    # on its own just before the destroy.
    t = target_factory(faults_binary)
    uid = blade.ok("create", "go", action[0], "--pid", t.pid, *action[1:])
    for s in supervisors(blade.home, t.pid):
        os.kill(s, signal.SIGKILL)  # so no supervisor marks the record ended before destroy
    t.proc.kill()
    assert wait_until(lambda: procfs.state(t.pid) == "Z", 10), procfs.state(t.pid)
    out = blade.ok("destroy", uid)
    assert out["status"] == "Destroyed" and "is gone" in out["restored"]["note"], out
    assert procfs.state(t.pid) == "Z"  # left to its parent
    assert wait_until(lambda: not leftovers(blade.home), 20), leftovers(blade.home)


def test_return_without_results_skips_the_body(blade, faults_binary, target_factory):
    t = target_factory(faults_binary)
    assert call(t, "Log") == "logged+1"
    uid = blade.ok("create", "go", "return", "--pid", t.pid, "--func", "main.Log")
    assert call(t, "Log") == "logged+0"
    blade.ok("destroy", uid)
    uid = blade.ok("create", "go", "return", "--pid", t.pid, "--func", "main.Log", "--value", "")
    assert call(t, "Log") == "logged+0"
    blade.ok("destroy", uid)
    assert call(t, "Log") == "logged+1"
    resp = blade.fail("create", "go", "return", "--pid", t.pid, "--func", "main.Log",
                      "--value", "1")
    assert "returns no results" in resp["error"]
    resp = blade.fail("create", "go", "return", "--pid", t.pid, "--func", "main.Scale")
    assert "--value is required" in resp["error"] and "string" in resp["error"]
    assert differences_beyond_retained(blade.home, t.pid) == []


@pytest.mark.parametrize("assign,why", [
    ("nosuch=1", "no parameter 'nosuch' (parameters: x, label)"),
    ("x=hello", "expects an integer"),
    ("#2=1", "has 2 parameters"),
    ("x=1,x=2", "set twice"),
    ("x", "not name=value"),
])
def test_args_refusals(blade, faults_binary, target_factory, assign, why):
    t = target_factory(faults_binary)
    resp = blade.fail("create", "go", "args", "--pid", t.pid, "--func", "main.Scale",
                      "--set", assign)
    assert why in resp["error"], resp
    assert differences_beyond_retained(blade.home, t.pid) == []


def test_inlined_call_sites_are_reported_for_args_and_tiny_functions_work(blade, e2e_binary,
                                                                          target_factory):
    # e2e_target's Small is inlined at its direct call and also called through a func value;
    # Small(4) is 5 and smallRef(4) is 5: with x=-10 the out-of-line copy computes 10.
    from tests.test_return_e2e import call as call_e2e
    t = target_factory(e2e_binary)
    assert call_e2e(t, "Small") == "5,5"
    code, resp = blade.run("create", "go", "args", "--pid", t.pid, "--func", "main.Small",
                           "--set", "x=-10")
    assert code == 0 and resp["success"] and isinstance(resp["result"], str), resp
    assert any("main.call" in w and "inlined" in w for w in resp["warnings"]), resp
    assert call_e2e(t, "Small") == "5,10"
    blade.ok("destroy", resp["result"])
    assert call_e2e(t, "Small") == "5,5"
    assert differences_beyond_retained(blade.home, t.pid) == []
