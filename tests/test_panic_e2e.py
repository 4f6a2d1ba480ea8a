"""End to end: `blade-go create go panic` on a live Go process.

The target (tests/fixtures/faults_target) answers `recover NAME` with what a deferred
recover() in the caller got (its dynamic type and value), and `crash NAME` calls with no
recover anywhere: an injected panic must then end the process exactly as Go does (exit status
2, `panic: ...` and a goroutine trace naming the function).
"""
import re
import time

import pytest

from tests.support.fixtures import build_fixture
from tests.support.targets import differences_beyond_retained


@pytest.fixture(scope="module")
def faults_binary():
    return build_fixture("faults_target")


def recovered(target, name, timeout=20):
    mark = target.mark()
    target.send_line(f"recover {name}")
    line = target.wait_for_line(rf"^{re.escape(name)} (recovered|returned) ", since=mark,
                                timeout=timeout)
    return line.split(" ", 1)[1]


CASES = [
    # (--func, call name, --value, what recover() gets)
    ("main.Work", "Work", "error:store unavailable",
     'recovered error *errors.errorString "store unavailable" denied=false eof=false'),
    ("main.Scale", "Scale", '"boom, with a comma"', 'recovered string "boom, with a comma"'),
    ("main.Scale", "Scale", "bare text", 'recovered string "bare text"'),
    ("main.Work", "Work", "var:io.EOF",
     'recovered error *errors.errorString "EOF" denied=false eof=true'),
    ("main.(*Account).Describe", "Describe", "var:main.ErrDenied",  # the very same error value
     'recovered error *errors.errorString "denied" denied=true eof=false'),
    ("main.Work", "Work", "var:main.AltName", 'recovered string "mallory"'),
    ("main.makeGreeter.func1", "Greet", "error:closure",  # a closure with captured variables
     'recovered error *errors.errorString "closure" denied=false eof=false'),
]


@pytest.mark.parametrize("func,name,value,want", CASES, ids=[c[2] for c in CASES])
def test_recover_gets_exactly_the_value(blade, faults_binary, target_factory, func, name, value,
                                        want):
    t = target_factory(faults_binary)
    original = recovered(t, name)
    assert original.startswith("returned")
    uid = blade.ok("create", "go", "panic", "--pid", t.pid, "--func", func, "--value", value)
    assert recovered(t, name) == want
    assert recovered(t, name) == want  # every call, not just the first
    blade.ok("destroy", uid)
    assert recovered(t, name) == original
    assert differences_beyond_retained(blade.home, t.pid) == []


def test_unrecovered_panic_ends_the_target_as_go_does(blade, faults_binary, target_factory):
    t = target_factory(faults_binary)
    uid = blade.ok("create", "go", "panic", "--pid", t.pid, "--func", "main.Work",
                   "--value", "error:injected failure")
    t.send_line("crash Work")
    assert t.proc.wait(timeout=30) == 2
    time.sleep(0.5)
    err = "\n".join(t.err_lines)
    assert "panic: injected failure" in err, err
    assert re.search(r"goroutine \d+ \[running\]:\nmain\.Work\(", err), err
    assert "main.call(" in err  # Work's caller, as a real panic in Work would show
    # the experiment ends with the process; destroy says so and writes nothing
    deadline = time.monotonic() + 20
    while blade.ok("status", uid)["status"] != "Destroyed" and time.monotonic() < deadline:
        time.sleep(0.3)
    blade.ok("destroy", uid)


def test_string_panic_message_and_methods_and_closures(blade, faults_binary, target_factory):
    t = target_factory(faults_binary)
    closure = "main.init.func1"  # `announce`, a func literal assigned to a package variable
    uids = [blade.ok("create", "go", "panic", "--pid", t.pid, "--func", closure,
                     "--value", '"from a closure"'),
            blade.ok("create", "go", "panic", "--pid", t.pid, "--func",
                     "main.(*Account).Describe", "--value", '"from a method"')]
    assert recovered(t, "Announce") == 'recovered string "from a closure"'
    assert recovered(t, "Describe") == 'recovered string "from a method"'
    for u in uids:
        blade.ok("destroy", u)
    assert recovered(t, "Announce") == 'returned n=7!'
    assert recovered(t, "Describe") == 'returned alice has 100'
    assert differences_beyond_retained(blade.home, t.pid) == []


def test_panic_refusals(blade, faults_binary, target_factory):
    t = target_factory(faults_binary)
    for func, value, why in [
        ("main.Pick[int]", '"x"', "frameless"),
        ("main.Work", "var:main.NoSuchVar", "not found"),
        ("main.Work", "var:main.logged", "interface type"),
        ("main.Work", "var:main.primary", "interface type"),
        ("main.Work", "", "less parameter"),
    ]:
        args = ["create", "go", "panic", "--pid", t.pid, "--func", func]
        if value:
            args += ["--value", value]
        resp = blade.fail(*args)
        assert why in resp["error"], (func, value, resp)
    assert differences_beyond_retained(blade.home, t.pid) == []
    assert t.alive()
