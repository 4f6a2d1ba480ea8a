"""Rounds of abuse against one running target: SIGKILL of the session supervisor at random
points of attach/apply/revert, destroy racing create. Shared by tests/test_lifecycle.py (a few
rounds in CI) and bench/lifecycle_rounds.py (50 rounds by hand).

Every round ends with the same checks: the target is alive and unfrozen (its STATS lines keep
coming with growing counters, and it printed no BAD line), the destroy answered success, the
live executable text equals the file, nothing traces the target and no supervisor or dlv of
this state directory is left running.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from .targets import differences_beyond_retained

INJECTED = '"chaos",error:injected db error'


class RoundFailure(AssertionError):
    pass


def _stat(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _status_field(pid, name):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return None


def tracer(pid):
    """pid of the process tracing pid, or None. TracerPid names the tracing *thread*: dlv
    ptraces from whichever OS thread its ptrace goroutine is locked to, not always its main
    one, so the thread is mapped to its thread group."""
    try:
        tid = _status_field(pid, "TracerPid")
        if not tid:
            return None
        try:
            return _status_field(tid, "Tgid") or tid
        except OSError:  # the tracer ended meanwhile
            return tid
    except OSError:
        return None


def supervisors(home, pid=None):
    """pids of the session supervisors of this state directory (of target pid, if given)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        st = _stat(int(d))
        if not st or st[0] in ("Z", "X"):
            continue
        words = [w.decode(errors="replace") for w in cmd]
        if "blade_go.session.supervisor" in words and str(home) in words \
                and (pid is None or str(pid) in words):
            out.append(int(d))
    return out


def guardians(home, pid):
    """pids of dlv's guardian of target pid (from its ownership record), if it runs."""
    try:
        with open(os.path.join(str(home), "sessions", f"{pid}.dlv.pid")) as f:
            guard = json.load(f).get("guard_pid")
    except (OSError, ValueError):
        return []
    return [guard] if guard and _stat(guard) and _stat(guard)[0] not in ("Z", "X") else []


def leftovers(home):
    """Supervisors and dlvs (or their guardians) of this state directory still running."""
    from tests.conftest import leftover_processes
    return leftover_processes((str(home),))


def wait_until(cond, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return cond()


def stats(target, timeout=10):
    line = target.wait_for_line(r"^STATS ", since=target.mark(), timeout=timeout)
    fields = dict(kv.split("=") for kv in line.split()[1:])
    return int(fields["calls"]), int(fields["injected"])


def check_unfrozen(target, what, timeout=15):
    """Two STATS lines with growing call counts within timeout seconds (a frozen or stopped
    target prints none)."""
    try:
        c1, i1 = stats(target, timeout)
        c2, i2 = stats(target, timeout)
    except Exception as e:
        raise RoundFailure(f"{what}: target frozen or dead: {e}") from None
    if not c2 > c1:
        raise RoundFailure(f"{what}: target not making progress ({c1} -> {c2})")
    bad = [ln for ln in target.lines if ln.startswith("BAD")]
    if bad or not target.alive():
        raise RoundFailure(f"{what}: target harmed: {bad[:3]} {target.describe()}")
    return c2, i2


def check_clean(blade, target, what):
    """After a destroy: nothing injected any more, text equals the file, nothing attached."""
    if not wait_until(lambda: tracer(target.pid) is None, 20):
        raise RoundFailure(f"{what}: still traced by {tracer(target.pid)}")
    if not wait_until(lambda: not leftovers(blade.home), 20):
        raise RoundFailure(f"{what}: left running: {leftovers(blade.home)}")
    _, i1 = check_unfrozen(target, what)
    _, i2 = check_unfrozen(target, what)
    if i2 != i1:
        raise RoundFailure(f"{what}: still injected after destroy ({i1} -> {i2})")
    diffs = differences_beyond_retained(blade.home, target.pid)  # values kept: issue 16
    if diffs:
        raise RoundFailure(f"{what}: text differs from the file at {[hex(a) for a, _ in diffs[:4]]}")


def popen_blade(blade, *args):
    return subprocess.Popen([sys.executable, "-m", "blade_go", *map(str, args)], env=blade.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(Path(__file__).resolve().parents[2]))


def _answer(proc, timeout=180):
    out, err = proc.communicate(timeout=timeout)
    try:
        return json.loads(out)
    except ValueError:
        raise RoundFailure(f"not one JSON Response: {out!r} {err[-2000:]!r}") from None


def _kill_supervisor(home, pid, when, deadline_s=20):
    """SIGKILL the supervisor of pid: 'attached' = the moment dlv has attached (target stopped,
    supervisor not yet done with attach), else after `when` seconds from its appearance.
    Returns a description of what was killed (or None when it never appeared)."""
    sup = wait_until(lambda: supervisors(home, pid), deadline_s, step=0.002)
    if not sup:
        return None
    if when == "attached":
        if not wait_until(lambda: tracer(pid), deadline_s, step=0.001):
            return None
    else:
        time.sleep(when)
    killed = []
    for s in supervisors(home, pid):
        try:
            os.kill(s, signal.SIGKILL)
            killed.append(s)
        except ProcessLookupError:
            pass
    return f"supervisor {killed} killed at {when}"


def kill_round(blade, target, i, rng):
    """One create (or create + destroy) with the supervisor SIGKILLed at a random point."""
    uid = f"kill{i}-{rng.randrange(10**6)}"
    phase = rng.choice(["attached", "create", "create", "destroy"])
    create = popen_blade(blade, "create", "go", "return", "--pid", target.pid, "--func",
                         "main.Query", "--value", INJECTED, "--uid", uid)
    note = None
    if phase == "attached":
        note = _kill_supervisor(blade.home, target.pid, "attached")
    elif phase == "create":
        note = _kill_supervisor(blade.home, target.pid, rng.uniform(0.0, 2.0))
    created = _answer(create)
    if phase == "destroy":
        if not created.get("success"):
            raise RoundFailure(f"round {i}: create failed without any kill: {created}")
        destroy = popen_blade(blade, "destroy", uid)
        note = _kill_supervisor(blade.home, target.pid, rng.uniform(0.0, 1.2))
        _answer(destroy)  # either answer is acceptable: the supervisor died under it
    what = f"round {i} ({phase}: {note}; create answered {created.get('success')})"
    # No blade-go command runs here: the guardian alone must get the target running again.
    check_unfrozen(target, what + " before any further command")
    code, resp = blade.run("destroy", uid)
    if code != 0 or not resp.get("success"):
        raise RoundFailure(f"{what}: destroy failed: {resp}")
    check_clean(blade, target, what)
    return phase


def race_round(blade, target, i, rng):
    """destroy sent while the create of the same uid is still running: either a random delay
    after the create's record appeared, or a random delay after the create command started
    (the destroy then often reads the record before the create stored its patches)."""
    uid = f"race{i}-{rng.randrange(10**6)}"
    mode = rng.choice(["record", "start"])
    state = Path(blade.home) / "state.json"

    def recorded():
        try:
            return uid in json.loads(state.read_text())["experiments"]
        except (OSError, ValueError, KeyError):
            return False
    create = popen_blade(blade, "create", "go", "return", "--pid", target.pid, "--func",
                         "main.Query", "--value", INJECTED, "--uid", uid)
    if mode == "record" and not wait_until(recorded, 60, step=0.005):
        raise RoundFailure(f"round {i}: create never recorded {uid}: {_answer(create)}")
    # A create takes a few hundred ms on a quiet machine (more when loaded): most destroys
    # must land inside it, a few after it.
    delay = rng.uniform(0.0, 0.4 if mode == "record" else 0.5)
    time.sleep(delay)
    racing = create.poll() is None  # the create still running when destroy starts
    code, resp = blade.run("destroy", uid)
    created = _answer(create)
    what = f"race round {i} (destroy {delay:.2f}s after the {mode}; create: {created})"
    early = not resp.get("success") and resp.get("code") == 67002
    if early:
        # The destroy read the state before the create had recorded the uid: "not found" is
        # the true answer then. The experiment must still be destroyable afterwards.
        code, resp = blade.run("destroy", uid)
    if code != 0 or not resp.get("success"):
        raise RoundFailure(f"{what}: destroy answered {resp}")
    rec = json.loads(state.read_text())["experiments"][uid]
    if rec["status"] != "Destroyed":
        raise RoundFailure(f"{what}: record {rec['status']} after destroy")
    check_clean(blade, target, what)
    return ("before the record" if early else "raced" if racing else "after") + \
        (" create ok" if created.get("success") else " create failed")


def run_rounds(kind, blade, target, rounds, seed=None, log=print):
    rng = random.Random(seed)
    fn = {"kill": kill_round, "race": race_round}[kind]
    seen = {}
    for i in range(rounds):
        t0 = time.monotonic()
        r = fn(blade, target, i, rng)
        seen[r] = seen.get(r, 0) + 1
        log(f"{kind} round {i}: ok ({r}) in {time.monotonic() - t0:.1f}s")
    return seen
