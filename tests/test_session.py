"""The session supervisor against real Go targets and the real dlv.

Patches are written into the header cave (zero bytes after the ELF program headers in the first,
executable page), found here with pyelftools independently of the inspector.
"""
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from blade_go.errors import BladeError, Code
from blade_go.patch import CAVE, ROUTE, Patch
from blade_go.session import connect_session, ensure_session
from blade_go.session.paths import SessionPaths
from blade_go.session.records import process_alive
from tests.support.targets import text_differences

STORE_DIR = Path(__file__).parent / "fixtures" / "session_store"
READY = "ready pid="


@pytest.fixture(autouse=True)
def fake_store(monkeypatch):
    monkeypatch.setenv("BLADE_GO_SESSION_STORE", "fake_state:StateStore")
    monkeypatch.setenv("PYTHONPATH", f"{STORE_DIR}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.syspath_prepend(str(STORE_DIR))


@pytest.fixture(autouse=True)
def dlv_env(dlv, monkeypatch):
    monkeypatch.setenv("BLADE_GO_DLV", dlv)


@pytest.fixture
def home(tmp_path):
    yield str(tmp_path)
    # Never leave a supervisor (and its dlv) behind, whatever the test did.
    for sock in (tmp_path / "sessions").glob("*.log"):
        pid = int(sock.name.split(".")[0])
        for line in subprocess.run(["pgrep", "-f", f"--pid {pid} --home {tmp_path}"],
                                   capture_output=True, text=True).stdout.split():
            os.kill(int(line), signal.SIGTERM)


@pytest.fixture
def heartbeat(build):
    return build("session_heartbeat")


def header_cave(binary) -> tuple[int, int]:
    """(vaddr, size) of the zero run after the program headers in the first executable page."""
    with open(binary, "rb") as f:
        elf = ELFFile(f)
        seg = next(s for s in elf.iter_segments()
                   if s["p_type"] == "PT_LOAD" and s["p_offset"] == 0 and s["p_flags"] & 1)
        start = elf["e_phoff"] + elf["e_phnum"] * elf["e_phentsize"]
        first = min(s["sh_offset"] for s in elf.iter_sections() if s["sh_offset"] > start)
        f.seek(start)
        data = f.read(first - start)
    run = max(re.finditer(rb"\0+", data), key=lambda m: len(m.group()))
    lo, hi = start + run.start(), start + run.end()
    aligned = (lo + 15) & ~15
    assert hi - aligned >= 256
    return seg["p_vaddr"] + aligned, hi - aligned


def cave_patches(binary, payload: bytes, offset=0):
    addr, size = header_cave(binary)
    return [Patch(addr + offset, bytes(len(payload)), payload, CAVE)]


def read_mem(pid, addr, n):
    with open(f"/proc/{pid}/mem", "rb") as f:
        f.seek(addr)
        return f.read(n)


def wait_until(cond, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return False


def heartbeat_count(t, seconds=0.5):
    m = t.mark()
    time.sleep(seconds)
    return len(t.lines_since(m))


def add_record(home, uid, pid, patches, status="Success"):
    from fake_state import StateStore
    StateStore(home).create({"uid": uid, "pid": pid, "status": status,
                             "patches": [p.to_json() for p in patches]})


def get_record(home, uid):
    from fake_state import StateStore
    return StateStore(home).get(uid)


def supervisor_pid(home, pid):
    out = subprocess.run(["pgrep", "-f", f"blade_go.session.supervisor --pid {pid} --home {home}"],
                         capture_output=True, text=True).stdout.split()
    return [int(x) for x in out]


def test_apply_revert_header_cave_and_detach(heartbeat, target_factory, home):
    t = target_factory(heartbeat, ready_line=READY)
    payload = bytes(range(1, 40))  # 39 bytes: unaligned tail, byte writes and words
    patches = cave_patches(heartbeat, payload, offset=3)  # unaligned head too
    t0 = time.monotonic()
    h = ensure_session(t.pid, home)
    attach_s = time.monotonic() - t0
    facts = h.facts()
    assert facts["session"] == "alive" and facts["target_alive"] and facts["dlv_pid"]
    assert "1." in facts["dlv_version"]
    # dlv's API on a unix socket in the private session directory (issue 7, 7b)
    assert facts["dlv_transport"] == "unix" and facts["dlv_note"] == ""
    sessions = SessionPaths(home, t.pid)
    assert os.stat(sessions.dir).st_mode & 0o077 == 0
    assert b"--listen=unix:" in open(f"/proc/{facts['dlv_pid']}/cmdline", "rb").read()
    assert os.path.exists(sessions.dlv_sock)
    assert not [ln for ln in open("/proc/net/tcp").read().splitlines()[1:]
                if ln.split()[3] == "0A" and _inode_of_pid(ln.split()[9], facts["dlv_pid"])]
    add_record(home, "u1", t.pid, patches)
    res = h.apply("u1", patches)
    assert res["verified"] and res["written"] == len(payload)
    assert read_mem(t.pid, patches[0].addr, len(payload)) == payload
    assert heartbeat_count(t) >= 3, "target must keep running while attached"
    with pytest.raises(BladeError, match="differ from the executable"):
        h.apply("u2", patches)  # bytes are no longer the originals
    res = h.revert("u1", patches)
    assert res == {"restored": len(payload), "verified": True, "elapsed_ms": res["elapsed_ms"]}
    assert read_mem(t.pid, patches[0].addr, len(payload)) == bytes(len(payload))
    dlv_pid = facts["dlv_pid"]
    get_record(home, "u1")
    from fake_state import StateStore
    StateStore(home).update("u1", lambda r: dict(r, status="Destroyed"))
    assert h.release("u1")["detached"]
    assert wait_until(lambda: not os.path.exists(SessionPaths(home, t.pid).sock))
    assert wait_until(lambda: not process_alive(dlv_pid))
    assert wait_until(lambda: "TracerPid:\t0" in open(f"/proc/{t.pid}/status").read())
    assert heartbeat_count(t) >= 3 and t.alive()
    assert text_differences(t.pid) == []
    print(f"attach latency {attach_s * 1000:.0f} ms")


def _inode_of_pid(inode, pid):
    """Whether the socket inode is one of pid's open descriptors."""
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]"
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def test_panicking_target_dies_as_without_blade_go(heartbeat, target_factory, home):
    bare = target_factory(heartbeat, args=["panic=300"], ready_line=READY)
    bare.proc.wait(10)
    # 4 s: a dlv that loads before it attaches (the patched build) leaves the target running
    # meanwhile, so the exit must come after the attach even on a busy host
    t = target_factory(heartbeat, args=["panic=4000"], ready_line=READY)
    h = ensure_session(t.pid, home)
    add_record(home, "p1", t.pid, [])
    h.apply("p1", [])
    assert wait_until(lambda: get_record(home, "p1")["status"] == "Destroyed", 15)
    assert get_record(home, "p1")["reason"] == "target process exited (status 2)"
    assert t.proc.wait(15) == bare.proc.returncode == 2
    wait_until(lambda: False, 0.3)
    msg = "panic: session fixture: deliberate panic"
    assert msg in bare.err_lines and msg in t.err_lines
    assert wait_until(lambda: not os.path.exists(SessionPaths(home, t.pid).sock))


def test_target_exit_ends_supervisor(heartbeat, target_factory, home):
    t = target_factory(heartbeat, args=["exit=4000:7"], ready_line=READY)
    h = ensure_session(t.pid, home)
    add_record(home, "e1", t.pid, [])
    h.apply("e1", [])
    # Not reaped until the record is written: dlv may answer status 0 when the exit races its
    # stop of the threads, and the supervisor must read the true status from the zombie.
    assert wait_until(lambda: get_record(home, "e1")["status"] == "Destroyed", 15)
    assert get_record(home, "e1")["reason"] == "target process exited (status 7)"
    assert t.proc.wait(15) == 7
    assert wait_until(lambda: not supervisor_pid(home, t.pid))


def test_sigkill_supervisor_and_dlv_then_fresh_session_reverts(heartbeat, target_factory, home):
    t = target_factory(heartbeat, ready_line=READY)
    patches = cave_patches(heartbeat, b"\xAA" * 16)
    h = ensure_session(t.pid, home)
    add_record(home, "k1", t.pid, patches)
    h.apply("k1", patches)
    dlv_pid = h.facts()["dlv_pid"]
    for pid in supervisor_pid(home, t.pid) + [dlv_pid]:
        os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not process_alive(dlv_pid))
    assert wait_until(lambda: "TracerPid:\t0" in open(f"/proc/{t.pid}/status").read())
    assert heartbeat_count(t, 0.6) >= 3 and t.alive()
    assert connect_session(t.pid, home) is None
    h2 = ensure_session(t.pid, home)
    assert h2.revert("k1", patches)["restored"] == 16
    assert read_mem(t.pid, patches[0].addr, 16) == bytes(16)
    assert heartbeat_count(t) >= 3 and t.alive()


def test_watch_timeout_reverts_without_client(heartbeat, target_factory, home):
    t = target_factory(heartbeat, ready_line=READY)
    patches = cave_patches(heartbeat, b"\x90" * 24, offset=64)
    h = ensure_session(t.pid, home)
    add_record(home, "w1", t.pid, patches)
    h.apply("w1", patches)
    h.watch("w1", 1.0)
    del h
    assert read_mem(t.pid, patches[0].addr, 24) == b"\x90" * 24
    assert wait_until(lambda: get_record(home, "w1")["status"] == "Destroyed", timeout=10)
    assert get_record(home, "w1")["reason"] == "destroyed by timeout"
    assert read_mem(t.pid, patches[0].addr, 24) == bytes(24)
    assert wait_until(lambda: "TracerPid:\t0" in open(f"/proc/{t.pid}/status").read())
    assert heartbeat_count(t) >= 3 and t.alive()
    # ... and the supervisor itself ends (it used to hang forever after a timeout)
    assert wait_until(lambda: not supervisor_pid(home, t.pid), timeout=10)
    assert get_record(home, "w1")["deadline"] <= time.time()


def _ensure_in_child(pid, home, q):
    q.put(ensure_session(pid, home).facts()["dlv_pid"])


def test_concurrent_ensure_session_starts_one_supervisor(heartbeat, target_factory, home):
    t = target_factory(heartbeat, ready_line=READY)
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_ensure_in_child, args=(t.pid, home, q)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    dlv_pids = {q.get(timeout=5) for _ in procs}
    assert len(dlv_pids) == 1
    assert len(supervisor_pid(home, t.pid)) == 1


def test_sigterm_detaches_cleanly(heartbeat, target_factory, home):
    t = target_factory(heartbeat, ready_line=READY)
    dlv_pid = ensure_session(t.pid, home).facts()["dlv_pid"]
    [sup] = supervisor_pid(home, t.pid)
    os.kill(sup, signal.SIGTERM)
    assert wait_until(lambda: not supervisor_pid(home, t.pid))
    assert not process_alive(dlv_pid)
    assert "TracerPid:\t0" in open(f"/proc/{t.pid}/status").read()
    assert heartbeat_count(t) >= 3 and t.alive()


def test_refuses_second_tracer_and_missing_process(heartbeat, target_factory, home, dlv):
    t = target_factory(heartbeat, ready_line=READY)
    ensure_session(t.pid, home)
    with pytest.raises(BladeError) as e:
        ensure_session(t.pid, home + "/other")
    assert e.value.code == Code.FORBIDDEN and "another tracer (pid" in str(e.value)
    assert "dlv" in str(e.value)
    with pytest.raises(BladeError) as e:
        ensure_session(2 ** 22 + 17, home)
    assert e.value.code == Code.PROCESS_NOT_EXIST


def function_range(binary, name):
    with open(binary, "rb") as f:
        sym = next(s for s in ELFFile(f).get_section_by_name(".symtab").iter_symbols()
                   if s.name == name)
        return sym["st_value"], sym["st_size"]


def calls_per_second(t, seconds=1.0):
    """The fixture's work() call rate, from its heartbeat lines' cumulative counter."""
    first = t.wait_for_line(r"calls=", since=t.mark(), timeout=5)
    t0 = time.monotonic()
    time.sleep(seconds)
    last = t.wait_for_line(r"calls=", since=t.mark(), timeout=5)
    dt = time.monotonic() - t0
    count = lambda line: int(line.rsplit("calls=", 1)[1])
    return (count(last) - count(first)) / dt


def test_route_pc_rule_on_hot_function_and_latency(heartbeat, target_factory, home):
    t = target_factory(heartbeat, ready_line=READY)
    entry, size = function_range(heartbeat, "main.work")
    with open(f"/proc/{t.pid}/mem", "rb") as f:  # non-PIE: file vaddr == runtime address
        f.seek(entry)
        body = f.read(size)
    detached = calls_per_second(t)
    h = ensure_session(t.pid, home)
    add_record(home, "r1", t.pid, [])
    # Identity route patches: the bytes stay the same, but the PC rule and the write path run.
    head = Patch(entry, body[:5], body[:5], ROUTE)
    results = [h.apply("r1", [head]) for _ in range(10)]
    timings = [r["elapsed_ms"] for r in results]
    print("attempts", [r["attempts"] for r in results])
    # Threads spend nearly all their time in work()'s loop: a route over the whole body must
    # be refused, never written while a thread is inside it.
    whole = Patch(entry, body, body, ROUTE)
    with pytest.raises(BladeError, match="keeps executing inside"):
        h.apply("r1", [whole])
    attached = calls_per_second(t)
    assert attached > 0.25 * detached  # a shared, noisy 2-core VM: only gross slowdowns fail
    timings.sort()
    print(f"\nhalt+check+write+verify+continue: median {timings[5]:.1f} ms, max {timings[-1]:.1f} ms;"
          f" work() calls/s detached {detached:.0f}, attached {attached:.0f}"
          f" ({attached / detached:.0%})")


def test_dlv_killed_alone_is_restarted_once(heartbeat, target_factory, home):
    t = target_factory(heartbeat, ready_line=READY)
    patches = cave_patches(heartbeat, b"\x5a" * 8, offset=128)
    h = ensure_session(t.pid, home)
    add_record(home, "d1", t.pid, patches)
    old = h.facts()["dlv_pid"]
    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: h.facts()["dlv_pid"] not in (old, None), timeout=20)
    assert h.apply("d1", patches)["verified"]
    assert h.revert("d1", patches)["restored"] == 8
    assert heartbeat_count(t) >= 3 and t.alive()


def test_release_keeps_session_while_other_experiments_live(heartbeat, target_factory, home):
    t = target_factory(heartbeat, ready_line=READY)
    h = ensure_session(t.pid, home)
    add_record(home, "a", t.pid, [])
    add_record(home, "b", t.pid, [])
    h.apply("a", [])
    h.apply("b", [])
    assert h.release("a") == {"released": "a", "detached": False}
    time.sleep(0.3)
    assert h.facts()["uids"] == ["b"]
    from fake_state import StateStore
    StateStore(home).update("b", lambda r: dict(r, status="Destroyed"))
    assert h.release("b")["detached"]
    assert wait_until(lambda: "TracerPid:\t0" in open(f"/proc/{t.pid}/status").read())


def test_386_target_uses_386_dlv(build, dlv386, target_factory, home, monkeypatch):
    monkeypatch.setenv("BLADE_GO_DLV_386", dlv386)
    binary = build("session_heartbeat", goarch="386")
    t = target_factory(binary, ready_line=READY)
    patches = cave_patches(binary, bytes(range(7, 30)), offset=5)
    h = ensure_session(t.pid, home)
    add_record(home, "x", t.pid, patches)
    assert h.apply("x", patches)["verified"]
    assert read_mem(t.pid, patches[0].addr, 23) == bytes(range(7, 30))
    assert h.revert("x", patches)["restored"] == 23
    assert read_mem(t.pid, patches[0].addr, 23) == bytes(23)
    assert heartbeat_count(t) >= 3 and t.alive()
