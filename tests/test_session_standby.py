"""The standby supervisor (session/__init__.py): started while a create analyses, it attaches
only when told "go" after the analysis accepted; a create that refuses, or dies, leaves nothing
running and never traces its target.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blade_go.session import ensure_session
from blade_go.session.paths import SessionPaths
from tests.conftest import leftover_processes
from tests.support.lifecycle import tracer as _tracer

REPO = Path(__file__).resolve().parents[1]
GUARD = REPO / "blade_go" / "session" / "guard.py"


@pytest.fixture(autouse=True)
def dlv_env(dlv, monkeypatch):
    monkeypatch.setenv("BLADE_GO_DLV", dlv)


def _alive(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _children(pid):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p))
            except OSError:
                pass
    return out


def _watch_untraced(target_pid, pids, timeout=15.0):
    """Wait until every pid has exited, checking all the while that nothing traces the target.
    Returns the pids still alive at the end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert _tracer(target_pid) is None, "a standby must never attach"
        if not any(_alive(p) for p in pids):
            return []
        time.sleep(0.01)
    return [p for p in pids if _alive(p)]


def _no_leftovers(home, timeout=15.0):
    deadline = time.monotonic() + timeout
    while leftover_processes([home]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return leftover_processes([home])


def _never_attached(home, pid):
    p = SessionPaths(home, pid)
    assert not os.path.exists(p.dlv_pid), "no ownership record: no dlv was started"
    assert not os.path.exists(p.dlv_log) or os.path.getsize(p.dlv_log) == 0
    assert not os.path.exists(p.sock)
    log = open(p.log).read() if os.path.exists(p.log) else ""
    assert "attaching" not in log and "attached" not in log, log


def test_refused_create_ends_its_standby_without_touching_the_target(e2e_binary,
                                                                       target_factory, tmp_path):
    t = target_factory(e2e_binary)
    home = tmp_path / "home"
    env = dict(os.environ, BLADE_GO_HOME=str(home), PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-m", "blade_go", "create", "go", "return", "--pid",
                          str(t.pid), "--func", "main.NoSuchFunction", "--value", "1", "--debug"],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    resp = json.loads(out.stdout)
    assert resp["success"] is False and resp["code"] == 47000, resp
    started = [int(ln.split("standby supervisor ")[1].split()[0])
               for ln in out.stderr.splitlines() if "standby supervisor" in ln]
    assert len(started) == 1, out.stderr  # the test means something: a standby did start
    assert not _alive(started[0]), "the CLI ends its unused standby before it answers"
    assert _watch_untraced(t.pid, started) == []
    assert _no_leftovers(home) == []
    _never_attached(str(home), t.pid)


def _driver(pid, home, kill_standby=False):
    """A process that prestarts a standby for pid, prints its pid and then sleeps (a CLI in the
    middle of its analysis)."""
    code = ("import sys, time\nfrom blade_go import session\n"
            f"s = session.prestart({pid}, {str(home)!r})\n"
            "print(s.proc.pid, flush=True)\ntime.sleep(300)\n")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO)


def _guard_of(standby, timeout=30.0):
    """The idle guardian a standby starts once its imports are done (its child running
    guard.py)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in _children(standby):
            try:
                if b"guard.py" in open(f"/proc/{c}/cmdline", "rb").read():
                    return c
            except OSError:
                pass
        time.sleep(0.02)
    return None


def test_creator_killed_before_go_standby_and_guardian_exit(e2e_binary, target_factory,
                                                             tmp_path):
    t = target_factory(e2e_binary)
    home = tmp_path / "home"
    drv = _driver(t.pid, home)
    try:
        standby = int(drv.stdout.readline())
        guard = _guard_of(standby)
        assert guard, "the standby starts dlv's guardian, idle"
        assert _alive(standby) and _tracer(t.pid) is None
        time.sleep(0.3)  # idle: still nothing attached
        assert _alive(standby) and _alive(guard) and _tracer(t.pid) is None
        drv.send_signal(signal.SIGKILL)  # the creator dies however: its pipe end closes
        drv.wait(10)
        assert _watch_untraced(t.pid, [standby, guard]) == []
    finally:
        if drv.poll() is None:
            drv.kill()
            drv.wait()
    assert _no_leftovers(home) == []
    _never_attached(str(home), t.pid)


def test_dead_standby_is_replaced_and_a_used_one_attaches(e2e_binary, target_factory, tmp_path):
    from blade_go import session
    t = target_factory(e2e_binary)
    home = str(tmp_path / "home")
    # A standby that died before go: ensure_session starts a fresh supervisor instead.
    dead = session.prestart(t.pid, home)
    assert dead is not None
    dead.proc.kill()
    dead.proc.wait(10)
    h = ensure_session(t.pid, home)
    try:
        assert h.known["session"] == "alive" and _tracer(t.pid) == h.known["dlv_pid"]
    finally:
        assert h.release("none")["detached"] is True
    session.discard_standby(dead)
    # A standby that was told go is the session (its own pid serves the socket).
    standby = session.prestart(t.pid, home)
    assert standby is not None and _guard_of(standby.proc.pid)
    h = ensure_session(t.pid, home)
    try:
        assert h.known["dlv_pid"] and _tracer(t.pid) == h.known["dlv_pid"]
        assert standby.started and standby.proc.poll() is None
    finally:
        assert h.release("none")["detached"] is True
        session.discard_standby(standby)  # used: left running (it ends by itself)
    assert standby.proc.wait(30) == 0


def test_guard_without_go_starts_nothing(tmp_path):
    marker, record = tmp_path / "started", tmp_path / "rec"
    argv = [sys.executable, "-I", "-S", str(GUARD), str(record), str(os.getpid()), "--",
            "/bin/sh", "-c", f"touch {marker}"]
    g = subprocess.Popen(argv, stdin=subprocess.PIPE)
    time.sleep(0.2)
    assert g.poll() is None, "it waits for go"
    g.stdin.close()  # its supervisor ended before asking for dlv
    assert g.wait(10) == 0
    assert not marker.exists() and not record.exists()
    g = subprocess.Popen(argv, stdin=subprocess.PIPE)
    g.stdin.write(b"go\n")
    g.stdin.flush()
    deadline = time.monotonic() + 10
    while not marker.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    rec = json.loads(record.read_text())
    assert rec["guard_pid"] == g.pid and rec["supervisor_pid"] == os.getpid()
    g.stdin.close()
    assert g.wait(10) == 0
