"""The target never suffers from the tool: load, GC pressure, timeouts, a killed controller,
a panicking target."""
import os
import signal
import time

import pytest

from tests.support.lifecycle import supervisors, tracer
from tests.support.targets import differences_beyond_retained

INJECTED = '"chaos",error:injected db error'


def stats(target, since):
    line = target.wait_for_line(r"^STATS ", since=since, timeout=10)
    fields = dict(kv.split("=") for kv in line.split()[1:])
    return int(fields["calls"]), int(fields["injected"])


def test_100_cycles_under_load_with_gogc_1(blade, e2e_binary, target_factory):
    """8 goroutines call Query in a loop (GOGC=1, forced GCs) while experiments come and go.
    The target checks every result itself and exits 3 on anything torn."""
    t = target_factory(e2e_binary, args=["stress"], env=dict(os.environ, GOGC="1"))
    # An anchor experiment on another function keeps one session attached through the cycles.
    anchor = blade.create_return(t.pid, "main.Flag", "false")
    for i in range(100):
        uid = blade.create_return(t.pid, "main.Query", INJECTED)
        time.sleep(0.01)
        blade.ok("destroy", uid)
        assert t.alive(), f"target died in cycle {i}: {t.describe()}"
    blade.ok("destroy", anchor)
    calls, injected = stats(t, t.mark())
    assert t.alive()
    bad = [ln for ln in t.lines if ln.startswith("BAD")]
    print(f"100 cycles: {calls} calls checked by the target, {injected} injected, "
          f"{len(bad)} corrupted (BAD)")
    assert not bad
    assert injected > 0 and calls > injected
    time.sleep(0.5)
    assert differences_beyond_retained(blade.home, t.pid) == []


def test_back_to_back_sessions(blade, e2e_binary, target_factory):
    """With no other experiment on the process, each destroy detaches dlv before it returns,
    so a create right after it starts a clean new session (no 'another tracer' race)."""
    t = target_factory(e2e_binary, args=["stress"])
    for i in range(10):
        uid = blade.create_return(t.pid, "main.Query", INJECTED)
        blade.ok("destroy", uid)
        assert tracer(t.pid) is None, f"cycle {i}: dlv still attached after destroy returned"
    assert t.alive() and not [ln for ln in t.lines if ln.startswith("BAD")]
    assert differences_beyond_retained(blade.home, t.pid) == []


def test_timeout_destroys_without_cli(blade, e2e_binary, target_factory):
    t = target_factory(e2e_binary, args=["stress"])
    uid = blade.create_return(t.pid, "main.Query", INJECTED, "--timeout", "2")
    m = t.mark()
    _, before = stats(t, m)
    time.sleep(4)
    rec = blade.ok("status", uid)
    assert rec["status"] == "Destroyed", rec
    m = t.mark()
    _, a = stats(t, m)
    _, b = stats(t, t.mark())
    assert a == b, "injections continue after the timeout"
    assert differences_beyond_retained(blade.home, t.pid) == []
    assert tracer(t.pid) is None


def test_sigkill_of_supervisor_and_dlv_leaves_target_alive(blade, e2e_binary, target_factory):
    t = target_factory(e2e_binary, args=["stress"])
    uid = blade.create_return(t.pid, "main.Query", INJECTED)
    dlv = tracer(t.pid)
    assert dlv
    supervisor = _supervisor_of(blade.home, t.pid)
    for pid in filter(None, (supervisor, dlv)):
        os.kill(pid, signal.SIGKILL)
    time.sleep(1)
    assert t.alive(), f"{t.describe()} stderr: {t.err_lines[:6]}"
    c1, i1 = stats(t, t.mark())
    c2, i2 = stats(t, t.mark())
    assert c2 > c1 and i2 > i1, "target must keep running, still injected"
    blade.ok("destroy", uid)
    c3, i3 = stats(t, t.mark())
    c4, i4 = stats(t, t.mark())
    assert c4 > c3 and i4 == i3
    time.sleep(0.5)
    assert tracer(t.pid) is None
    assert differences_beyond_retained(blade.home, t.pid) == []


def test_supervisor_killed_alone_its_guardian_ends_dlv(blade, e2e_binary, target_factory):
    """dlv's guardian notices the supervisor's death and ends dlv with a clean detach (after a
    short grace): no orphan stays attached; the fault stays until destroy restores it."""
    t = target_factory(e2e_binary, args=["stress"])
    uid = blade.create_return(t.pid, "main.Query", INJECTED)
    dlv = tracer(t.pid)
    os.kill(_supervisor_of(blade.home, t.pid), signal.SIGKILL)
    deadline = time.time() + 15
    while _state(dlv) not in (None, "Z") and time.time() < deadline:
        time.sleep(0.05)
    assert _state(dlv) in (None, "Z"), "the guardian must end the orphaned dlv"
    c1, i1 = stats(t, t.mark())
    c2, i2 = stats(t, t.mark())
    assert c2 > c1 and i2 > i1, "target running, still injected"
    assert tracer(t.pid) is None
    blade.ok("destroy", uid)
    c3, i3 = stats(t, t.mark())
    c4, i4 = stats(t, t.mark())
    assert c4 > c3 and i4 == i3
    assert not [ln for ln in t.lines if ln.startswith("BAD")]
    time.sleep(0.5)
    assert tracer(t.pid) is None
    assert differences_beyond_retained(blade.home, t.pid) == []


def test_supervisor_and_guardian_killed_next_command_ends_dlv(blade, e2e_binary, target_factory):
    """With the guardian killed too, the dlv's ownership record remains: the next blade-go
    command (any: here `status`) ends that dlv cleanly before doing its own work."""
    t = target_factory(e2e_binary, args=["stress"])
    uid = blade.create_return(t.pid, "main.Query", INJECTED)
    dlv = tracer(t.pid)
    guard = int(open(f"/proc/{dlv}/stat").read().rsplit(")", 1)[1].split()[1])  # its parent
    assert b"guard.py" in open(f"/proc/{guard}/cmdline", "rb").read()
    os.kill(guard, signal.SIGKILL)
    os.kill(_supervisor_of(blade.home, t.pid), signal.SIGKILL)
    time.sleep(3)  # longer than the guardian's grace: nobody else ends it
    assert tracer(t.pid) == dlv, "only the record names this dlv now"
    assert blade.ok("status", uid)["status"] == "Success"
    assert _state(dlv) in (None, "Z"), "the next command must end the orphaned dlv"
    c1, i1 = stats(t, t.mark())
    c2, i2 = stats(t, t.mark())
    assert c2 > c1 and i2 > i1
    blade.ok("destroy", uid)
    time.sleep(0.5)
    assert tracer(t.pid) is None
    assert differences_beyond_retained(blade.home, t.pid) == []


def _state(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def test_panicking_target_dies_as_without_blade_go(blade, e2e_binary, target_factory):
    t = target_factory(e2e_binary)
    uid = blade.create_return(t.pid, "main.Flag", "false")
    t.send_line("panic")
    deadline = time.time() + 15
    while t.alive() and time.time() < deadline:
        time.sleep(0.1)
    assert not t.alive(), "a panicking target must not be frozen by dlv"
    assert t.proc.returncode == 2
    assert any("panic: requested panic" in ln for ln in t.err_lines)
    deadline = time.time() + 10
    while time.time() < deadline:
        rec = blade.ok("status", uid)
        if rec["status"] == "Destroyed":
            break
        time.sleep(0.2)
    assert rec["status"] == "Destroyed" and "exit" in str(rec).lower()


def _supervisor_of(home, pid):
    found = supervisors(home, pid)
    return found[0] if found else None


def test_timeout_holds_when_the_supervisor_is_sigkilled(blade, e2e_binary, target_factory):
    """--timeout 5, the supervisor SIGKILLed 1 s after create, no command run afterwards: the
    fault still ends within 1 s of its deadline (dlv's guardian outlives the supervisor and
    starts one that enforces the recorded deadline), and the record says who ended it."""
    import json
    t = target_factory(e2e_binary, args=["stress"])
    uid = blade.create_return(t.pid, "main.Query", INJECTED, "--timeout", "5")
    with open(os.path.join(blade.home, "state.json")) as f:
        rec = json.load(f)["experiments"][uid]
    deadline = float(rec["deadline"])
    route = next(p for p in rec["record"]["patches"] if p["role"] == "route")
    addr, original = int(route["addr"]), bytes.fromhex(route["original"])
    supervisor = _supervisor_of(blade.home, t.pid)
    assert supervisor
    time.sleep(1)
    os.kill(supervisor, signal.SIGKILL)
    gone_at = None
    while time.time() < deadline + 10:
        with open(f"/proc/{t.pid}/mem", "rb", buffering=0) as mem:
            mem.seek(addr)
            if mem.read(len(original)) == original:
                gone_at = time.time()
                break
        time.sleep(0.02)
    assert gone_at is not None, "the fault outlived its deadline by 10 s"
    print(f"fault ended {gone_at - deadline:+.2f} s from its deadline")
    assert gone_at <= deadline + 1.0, f"ended {gone_at - deadline:.2f} s after the deadline"
    assert gone_at >= deadline - 0.2, "ended before its deadline"
    assert t.alive() and not [ln for ln in t.lines if ln.startswith("BAD")]
    for _ in range(100):  # the enforcing supervisor detaches and exits by itself
        if not supervisors(blade.home, t.pid) and tracer(t.pid) is None:
            break
        time.sleep(0.1)
    with open(os.path.join(blade.home, "state.json")) as f:  # no command run: read the file
        rec = json.load(f)["experiments"][uid]
    assert rec["status"] == "Destroyed", rec
    assert "restarted" in rec["deadline_enforced_by"], rec
    assert differences_beyond_retained(blade.home, t.pid) == []
    assert tracer(t.pid) is None and not supervisors(blade.home, t.pid)
