"""Experiment and session lifecycle under abuse (issue 7, points 1-4): SIGKILL of the session
supervisor at random points of attach/apply/revert, destroy racing create, --timeout that
outlives its supervisor, a timed-out supervisor that exits.

The target is e2e_target in stress mode: 8 goroutines call main.Query in a loop under GOGC=1
with forced GCs and check every result (a torn one prints BAD and exits 3). The rounds' checks
are in tests/support/lifecycle.py; bench/lifecycle_rounds.py runs 50 rounds of each by hand.
BLADE_GO_LIFECYCLE_ROUNDS sets the number of rounds here (default 10).
"""
import json
import os
import random
import signal
import time

import pytest

from tests.support import lifecycle as lc
from tests.support.targets import differences_beyond_retained

ROUNDS = int(os.environ.get("BLADE_GO_LIFECYCLE_ROUNDS", "10"))


@pytest.fixture
def stress(e2e_binary, target_factory):
    return target_factory(e2e_binary, args=["stress"], env={"GOGC": "1"})


@pytest.fixture
def blade_env(blade, dlv):
    blade.env["BLADE_GO_DLV"] = dlv
    return blade


def _record(blade, uid):
    with open(os.path.join(blade.home, "state.json")) as f:
        return json.load(f)["experiments"][uid]


def test_supervisor_killed_right_after_attach_never_freezes_the_target(blade_env, stress):
    """Failure 1 of the issue: the supervisor dies after dlv attached (the target is stopped)
    and before anything else. The dlv was recorded before it could attach and its guardian ends
    it: the target runs again with no blade-go command, a later create works (no 'already
    traced'), and destroy restores."""
    blade, t = blade_env, stress
    for attempt in range(3):
        create = lc.popen_blade(blade, "create", "go", "return", "--pid", t.pid, "--func",
                                "main.Query", "--value", lc.INJECTED, "--uid", f"a{attempt}")
        assert lc._kill_supervisor(blade.home, t.pid, "attached")
        resp = lc._answer(create)
        assert not resp["success"]
        lc.check_unfrozen(t, f"attempt {attempt}")
        assert lc.wait_until(lambda: lc.tracer(t.pid) is None, 20)
        assert blade.ok("destroy", f"a{attempt}")["status"] == "Destroyed"
    uid = blade.create_return(t.pid, "main.Query", lc.INJECTED)
    _, i1 = lc.check_unfrozen(t, "injected")
    _, i2 = lc.check_unfrozen(t, "injected")
    assert i2 > i1
    blade.ok("destroy", uid)
    lc.check_clean(blade, t, "end")


def test_supervisor_sigkilled_at_random_points(blade_env, stress):
    seen = lc.run_rounds("kill", blade_env, stress, ROUNDS, seed=random.randrange(10**9))
    print("kill rounds by phase:", seen)
    assert sum(seen.values()) == ROUNDS


def test_destroy_racing_create(blade_env, stress):
    seen = lc.run_rounds("race", blade_env, stress, ROUNDS, seed=random.randrange(10**9))
    print("race rounds by create answer:", seen)
    assert sum(seen.values()) == ROUNDS


def test_timeout_enforced_by_a_later_command_after_the_supervisor_died(blade_env, stress):
    """Failure 4: the supervisor (and with it its timer) dies, and dlv's guardian with it (a
    supervisor alone killed: its guardian starts one that enforces the deadline on time,
    test_return_robustness.py); the deadline is in the state file, and the next blade-go
    command of any kind destroys the expired experiment."""
    blade, t = blade_env, stress
    uid = blade.create_return(t.pid, "main.Query", lc.INJECTED, "--timeout", "3")
    rec = _record(blade, uid)
    assert rec["deadline"] > time.time()
    # The guardian first: killed after the supervisor, it could see that death first and start
    # a --resume supervisor that enforces the deadline itself (seen once under load).
    for g in lc.guardians(blade.home, t.pid):
        os.kill(g, signal.SIGKILL)
    for s in lc.supervisors(blade.home, t.pid):
        os.kill(s, signal.SIGKILL)
    time.sleep(0.3)
    assert not lc.supervisors(blade.home, t.pid), "a supervisor was started after the kills"
    time.sleep(max(0.0, rec["deadline"] - time.time()) + 2.5)  # + the sweep's margin
    assert _record(blade, uid)["status"] == "Success", "nothing enforced it yet (no command ran)"
    listed = blade.ok("status", "--type", "create")
    assert [r for r in listed if r["uid"] == uid][0]["status"] == "Destroyed"
    rec = _record(blade, uid)
    assert rec["status"] == "Destroyed" and "timeout" in rec["reason"], rec
    assert rec["deadline_enforced_by"] == "a later blade-go command", rec
    lc.check_clean(blade, t, "after the enforced timeout")


def test_restarted_supervisor_takes_over_the_deadline(blade_env, stress):
    """A supervisor started later for the same process (here by another create) arms the
    recorded deadline of the first experiment and destroys it on time, no command needed.
    (Its guardian is killed too: else it would start that supervisor itself.)"""
    blade, t = blade_env, stress
    uid = blade.create_return(t.pid, "main.Query", lc.INJECTED, "--timeout", "6")
    for s in lc.supervisors(blade.home, t.pid) + lc.guardians(blade.home, t.pid):
        os.kill(s, signal.SIGKILL)
    # the orphaned dlv is ended by the next command's sweep (the create's)
    other = blade.create_return(t.pid, "main.Flag", "false")
    deadline = _record(blade, uid)["deadline"]
    assert lc.wait_until(lambda: _record(blade, uid)["status"] == "Destroyed",
                         deadline - time.time() + 15)
    assert _record(blade, uid)["reason"] == "destroyed by timeout"
    assert time.time() >= deadline
    _, i1 = lc.check_unfrozen(t, "after timeout")
    _, i2 = lc.check_unfrozen(t, "after timeout")
    assert i1 == i2, "Query still injected after its timeout"
    blade.ok("destroy", other)
    lc.check_clean(blade, t, "end")


def test_timed_out_supervisor_exits_and_next_create_is_prompt(blade_env, stress):
    """Failure 3: after the timeout the supervisor used to hang forever and the next create
    on that pid waited 31 s and failed."""
    blade, t = blade_env, stress
    uid = blade.create_return(t.pid, "main.Query", lc.INJECTED, "--timeout", "2")
    assert lc.supervisors(blade.home, t.pid)
    assert lc.wait_until(lambda: _record(blade, uid)["status"] == "Destroyed", 20)
    assert lc.wait_until(lambda: not lc.leftovers(blade.home), 10), lc.leftovers(blade.home)
    assert lc.tracer(t.pid) is None
    assert differences_beyond_retained(blade.home, t.pid) == []
    t0 = time.monotonic()
    again = blade.create_return(t.pid, "main.Query", lc.INJECTED)
    took = time.monotonic() - t0
    assert took < 20, f"create after a timed-out session took {took:.1f}s"
    blade.ok("destroy", again)
    lc.check_clean(blade, t, "end")


def test_destroy_of_a_target_that_exited_under_an_orphan_dlv(blade_env, e2e_binary,
                                                            target_factory):
    """Failure 4b: the target exits while no supervisor is there; the records say so and no
    dlv outlives it."""
    blade = blade_env
    t = target_factory(e2e_binary, args=["stress"], env={"GOGC": "1"})
    uid = blade.create_return(t.pid, "main.Query", lc.INJECTED)
    dlv = lc.tracer(t.pid)
    guard = int(open(f"/proc/{dlv}/stat").read().rsplit(")", 1)[1].split()[1])
    os.kill(guard, signal.SIGKILL)  # no guardian: only the sweep can end this dlv
    for s in lc.supervisors(blade.home, t.pid):
        os.kill(s, signal.SIGKILL)
    t.stop()
    listed = blade.ok("status", uid)
    assert listed["status"] == "Destroyed" and "exited" in listed["reason"], listed
    assert lc.wait_until(lambda: not lc.leftovers(blade.home), 20), lc.leftovers(blade.home)
    assert blade.ok("destroy", uid)["status"] == "Destroyed"


def test_int3s_left_by_a_killed_dlv_are_removed_by_the_next_session(blade_env, stress):
    """Failure 1's aftermath: dlv SIGKILLed (its guardian too) while it holds its internal
    breakpoints leaves 0xCC in runtime.fatal/throw...; the next session puts the file's bytes
    back (a later fatal error must not become a SIGTRAP)."""
    blade, t = blade_env, stress
    for attempt in range(5):
        create = lc.popen_blade(blade, "create", "go", "return", "--pid", t.pid, "--func",
                                "main.Query", "--value", lc.INJECTED, "--uid", f"i{attempt}")
        assert lc._kill_supervisor(blade.home, t.pid, "attached")
        dlv = lc.tracer(t.pid)
        time.sleep(0.4 + 0.2 * attempt)  # dlv finishes attaching: its breakpoints are set
        guard = int(open(f"/proc/{dlv}/stat").read().rsplit(")", 1)[1].split()[1])
        os.kill(guard, signal.SIGKILL)
        os.kill(dlv, signal.SIGKILL)
        lc._answer(create)
        assert lc.wait_until(lambda: lc.tracer(t.pid) is None, 10)
        blade.ok("status", "--type", "create")  # the sweep resumes a target left stopped
        lc.check_unfrozen(t, "after the kill")
        diffs = differences_beyond_retained(blade.home, t.pid)
        if diffs:
            break
        blade.ok("destroy", f"i{attempt}")
    else:
        pytest.skip("dlv was never killed while holding its breakpoints")
    assert all(hi - lo == 1 for lo, hi in diffs)
    with open(f"/proc/{t.pid}/mem", "rb") as mem:
        for lo, _ in diffs:
            mem.seek(lo)
            assert mem.read(1) == b"\xcc"
    blade.ok("destroy", f"i{attempt}")  # attaches a fresh dlv: it repairs, restores, detaches
    lc.check_clean(blade, t, "after repair")
