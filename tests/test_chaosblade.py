"""The real chaosblade 1.8.0 `blade` drives blade-go, against a live Go target.

One copy of the release per module (its own chaosblade.dat), blade-go installed into it with
`blade-go chaosblade install`; every experiment is observed from the target's own output and
its text compared with the executable file after destroy.
"""
import re
import time

import pytest

from tests.support import chaosblade as cb
from tests.support.targets import call, text_differences, differences_beyond_retained

UID = re.compile(r"^[0-9a-f]{16}$")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    # uninstalled at the end and checked to be as it was
    with cb.installed_release(tmp_path_factory.mktemp("blade") / "release") as rel:
        yield rel


@pytest.fixture
def blade(release, tmp_path):
    return cb.BladeCLI(release, tmp_path / "state")


@pytest.fixture
def target(e2e_binary, target_factory):
    return target_factory(e2e_binary)


def create(blade, target, func, value, *extra):
    uid = blade.ok("create", "go", "return", "--pid", target.pid, "--func", func,
                   "--value", value, *extra)
    assert isinstance(uid, str) and UID.match(uid), uid
    return uid


def wait_status(blade, uid, status, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        rec = blade.record(uid)
        if rec["Status"] == status or time.monotonic() > deadline:
            return rec
        time.sleep(0.5)


def test_create_status_destroy(blade, target):
    original = call(target, "Query")
    uid = create(blade, target, "main.Query", '"chaos",error:db is down')
    # the value's spaces reach the target as spaces
    assert call(target, "Query") == '"chaos",err(db is down|eof=false|nf=false)'
    rec = blade.record(uid)
    assert rec["Status"] == "Success" and rec["Error"] == "" and rec["Command"] == "go"
    assert "@@##" in rec["Flag"]  # blade's encoding of those spaces in its record
    assert text_differences(target.pid)
    result = blade.ok("destroy", uid)  # blade rebuilds the flags from its record
    assert result["flags"]["value"] == '"chaos",error:db is down'
    assert call(target, "Query") == original
    assert differences_beyond_retained(blade.state_home, target.pid) == []
    assert blade.record(uid)["Status"] == "Destroyed"
    own = cb.blade_go("status", uid, env={"BLADE_GO_HOME": str(blade.state_home)})
    assert own["result"]["status"] == "Destroyed"
    assert own["result"]["flags"]["value"] == '"chaos",error:db is down'


def test_imposed_uid(blade, target):
    # blade sends --uid=U twice then (its own, and the user's among the flags)
    uid = blade.ok("create", "go", "return", "--pid", target.pid, "--func", "main.Store.Count",
                   "--value", "3", "--uid", "imposed-uid-1")
    assert uid == "imposed-uid-1" and call(target, "Count") == "3"
    assert blade.record(uid)["Status"] == "Success"
    blade.ok("destroy", uid)
    assert blade.record(uid)["Status"] == "Destroyed" and differences_beyond_retained(blade.state_home, target.pid) == []


def test_debug_on_create_and_destroy(blade, target):
    original = call(target, "Count")
    code, out, err = blade.run("create", "go", "return", "--pid", target.pid, "--func",
                               "main.Store.Count", "--value", "42", "-d")
    uid = blade.response("status", "--type", "create")["result"][0]["Uid"]
    assert code == 0, (out, err)
    assert blade.record(uid)["Status"] == "Success"
    assert call(target, "Count") == "42"
    # blade replays -d on destroy as --debug=true
    assert "--debug=true" in blade.record(uid)["Flag"]
    blade.ok("destroy", uid, "-d")
    assert blade.record(uid)["Status"] == "Destroyed"
    assert call(target, "Count") == original and differences_beyond_retained(blade.state_home, target.pid) == []
    log = (blade.state_home / "blade-go.log").read_text()
    # blade-go's debug output went to its log, none into what blade parsed
    argv_lines = [line for line in log.splitlines() if f"'--uid={uid}'" in line and "argv:" in line]
    assert [line.split("argv: ['")[1].split("'")[0] for line in argv_lines] == ["create", "destroy"]
    assert all("'--debug=true'" in line and "under blade: True" in line for line in argv_lines)


def test_blade_timeout_destroys(blade, target):
    original = call(target, "Count")
    uid = create(blade, target, "main.Store.Count", "7", "--timeout", "3")
    assert call(target, "Count") == "7"
    rec = wait_status(blade, uid, "Destroyed", timeout=90)
    assert rec["Status"] == "Destroyed", rec
    assert call(target, "Count") == original and differences_beyond_retained(blade.state_home, target.pid) == []


def test_destroy_by_matchers(blade, target):
    q, c = call(target, "Query"), call(target, "Count")
    uq = create(blade, target, "main.Query", '"m",nil')
    uc = create(blade, target, "main.Store.Count", "9")
    # blade passes --uid=unknown and the flags given; blade-go destroys the matching experiment
    resp = blade.response("destroy", "go", "return", "--func", "main.Query")
    assert resp["success"] is True, resp
    assert call(target, "Query") == q
    assert call(target, "Count") == "9"  # a different --func: untouched
    own = cb.blade_go("status", "--type", "create", env={"BLADE_GO_HOME": str(blade.state_home)})
    statuses = {r["uid"]: r["status"] for r in own["result"]}
    assert statuses == {uq: "Destroyed", uc: "Success"}
    assert blade.record(uq)["Status"] == "Destroyed"
    # blade prints only its own summary: blade-go's log (no -d given) names what was destroyed
    log = (blade.state_home / "blade-go.log").read_text()
    assert f"by matchers {{'func': 'main.Query'}}: destroyed ['{uq}']" in log, log[-2000:]
    # blade passes its own destroy flags on too (--force-remove=true, --debug=true): not matchers
    resp = blade.response("destroy", "go", "return", "--func", "main.Store.Count",
                          "--force-remove", "-d")
    assert resp["success"] is True, resp
    assert call(target, "Count") == c and differences_beyond_retained(blade.state_home, target.pid) == []
    own = cb.blade_go("status", uc, env={"BLADE_GO_HOME": str(blade.state_home)})
    assert own["result"]["status"] == "Destroyed"
    # (blade then looks for its records carrying every flag given, force-remove included, so
    # its own record of uc stays Success; destroying it by uid settles it)
    blade.ok("destroy", uc)
    assert blade.record(uc)["Status"] == "Destroyed"


def test_refused_create_message_reaches_the_user(blade, target):
    resp = blade.response("create", "go", "return", "--pid", target.pid, "--func",
                          "main.Qery", "--value", "1")
    assert resp["_exit"] != 0 and resp["success"] is False
    assert resp["code"] == 47000, resp
    assert "main.Qery not found" in resp["error"] and "main.Query" in resp["error"]
    listed = blade.response("status", "--type", "create")["result"]
    assert listed[0]["Status"] == "Error" and "main.Qery not found" in listed[0]["Error"]
    assert differences_beyond_retained(blade.state_home, target.pid) == []


def test_warnings_reach_blade_status(blade, target):
    """blade keeps a successful create's `error` text in its record: the warning goes there."""
    resp = blade.response("create", "go", "return", "--pid", target.pid, "--func",
                          "main.Small", "--value", "-9")
    assert resp["success"] is True and UID.match(resp["result"]), resp
    assert resp["error"].startswith("warning: ") and "inlined" in resp["error"]
    rec = blade.record(resp["result"])
    assert rec["Status"] == "Success" and "main.call" in rec["Error"]
    log = (blade.state_home / "blade-go.log").read_text()
    assert f"create {resp['result']}: " in log and "inlined" in log.split(resp["result"])[-1]
    assert call(target, "Small") == "5,-9"
    blade.ok("destroy", resp["result"])
    assert call(target, "Small") == "5,5"


def test_a_chaos_os_experiment_still_works(blade, tmp_path):
    f = tmp_path / "files" / "hello.txt"
    f.parent.mkdir()
    uid = blade.ok("create", "file", "add", "--filepath", f, "--content", "hi there")
    assert f.read_text().strip().endswith("hi there")
    assert blade.record(uid)["Status"] == "Success"
    blade.ok("destroy", uid)
    assert not f.exists()


def test_a_value_of_exactly_false_never_leaves_blade(blade, target):
    """blade 1.8 drops every flag whose value is the string "false" before calling the
    executor (cli/cmd/exp.go createExpModel); blade-go says what is missing, and `zero` is the
    way to write a lone false through blade."""
    resp = blade.response("create", "go", "return", "--pid", target.pid, "--func", "main.Flag",
                          "--value", "false")
    assert resp["success"] is False and resp["code"] == 45000 and "--value" in resp["error"]
    assert call(target, "Flag") == "true"
    uid = create(blade, target, "main.Flag", "zero")
    assert call(target, "Flag") == "false"
    blade.ok("destroy", uid)
    assert call(target, "Flag") == "true" and differences_beyond_retained(blade.state_home, target.pid) == []


def test_blades_own_flags_are_not_redeclared(blade):
    """-a/--async, -e/--endpoint, --uid, -d/--debug stay blade's (global) flags for `go`; the
    os spec's own redeclaration of async shadows -a (`blade create file add -a` answers
    "unknown shorthand flag: 'a'")."""
    code, out, err = blade.run("create", "go", "return", "-h")
    assert code == 0
    local, _, inherited = out.partition("Global Flags:")
    local = local.split("Flags:", 1)[1]
    def declares(text, name):  # `--debug`, not `--debug-binary`
        return re.search(rf"{name}(?![\w-])", text) is not None
    for name in ("--async", "--endpoint", "--uid", "--debug", "--nohup"):
        assert not declares(local, name) and declares(inherited, name), name
    assert "-a, --async" in inherited and "-e, --endpoint" in inherited
    assert "--timeout" in local  # added by blade itself to every action
    assert "blade create go return --pid 4242" in out and "blade-go" not in out
    code, out, err = blade.run("create", "file", "add", "-a")
    assert "unknown shorthand flag: 'a'" in out + err


def test_caller_through_blade(blade, target_factory):
    """Issue 19: `blade create go return ... --caller F --caller-depth 3` faults only that
    call path of a loaded target (tests/fixtures/callers_target, 8 goroutines, GOGC=1); blade-go's
    own status of blade's uid shows the blast radius equal to the target's counts."""
    from tests.support.fixtures import build_fixture
    from tests.test_caller_e2e import PATHS, check_table, command, run_window
    t = target_factory(build_fixture("callers_target"), env={"GOGC": "1"})
    command(t, "pause", "PAUSED")
    command(t, "reset", "RESET")
    uid = create(blade, t, "main.Work", "-1,error:chaos", "--caller", "main.viaDeep",
                 "--caller-depth", "3")
    s = run_window(t, 1.2)
    assert s["deep_faulted"] == s["deep_calls"] > 0, s
    assert s["direct_faulted"] == s["inlined_faulted"] == 0 < s["direct_calls"], s
    assert blade.record(uid)["Status"] == "Success"
    st = cb.blade_go("status", uid, env={"BLADE_GO_HOME": str(blade.state_home)})
    assert st["success"], st
    check_table(st["result"]["live"], s)
    blade.ok("destroy", uid)
    assert differences_beyond_retained(blade.state_home, t.pid) == []
    command(t, "reset", "RESET")
    after = run_window(t, 0.5)
    assert sum(after[f"{p}_faulted"] for p in PATHS) == 0 < after["deep_calls"]
