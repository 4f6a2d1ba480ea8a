"""DelveClient, memory chunking and the PC-inside-range rule.

Pure logic against fakes (a scripted JSON-RPC server, fake thread lists); the client against
the real dlv in test_real_dlv_halt_write_continue.
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from blade_go.errors import BladeError, Code
from blade_go.session import launcher
from blade_go.session.delve_client import DelveClient, DelveTimeout
from blade_go.session.memory import write_plan
from blade_go.session.patching import unsafe_pcs
from tests.support.lifecycle import tracer as _tracer

REPO_ROOT = Path(__file__).resolve().parents[1]


class FakeDlv:
    """A TCP server answering JSON-RPC lines with a handler(method, params) -> result|None."""

    def __init__(self, handler):
        self.handler = handler
        self.methods = []
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        conn, _ = self.srv.accept()
        self.conn = conn
        for line in conn.makefile("rb"):
            req = json.loads(line)
            method = req["method"].split(".", 1)[1]
            self.methods.append(method)
            self.handler(self, req["id"], method, req["params"][0])

    def reply(self, rid, result=None, error=None):
        self.conn.sendall(json.dumps({"id": rid, "result": result, "error": error}).encode() + b"\n")


def test_responses_matched_by_id_and_continue_answered_by_halt():
    held = {}

    def handler(fake, rid, method, params):
        if method == "Command" and params["name"] == "continue":
            held["continue"] = rid  # answered only when the target stops
        elif method == "Command" and params["name"] == "halt":
            fake.reply(held.pop("continue"), {"State": {"Running": False, "exited": False}})
            fake.reply(rid, {"State": {"Running": False}})
        elif method == "GetVersion":
            fake.reply(rid, {"DelveVersion": "Version: 9.9.9"})
        elif method == "State":
            fake.reply(rid, {"State": {"Running": False, "nb": params["NonBlocking"]}})

    fake = FakeDlv(handler)
    c = DelveClient("127.0.0.1", fake.port, timeout=2)
    assert c.get_version()["DelveVersion"] == "Version: 9.9.9"
    fut = c.continue_async()
    assert c.running and c.continue_async() is fut  # no second continue while one is pending
    assert c.get_version()["DelveVersion"].startswith("Version")  # other calls still answered
    assert c.halt() == {"Running": False, "exited": False}
    assert not c.running
    # Halting a stopped target must not send Command{halt}: dlv would queue a SIGTRAP that kills
    # the Go target after detach.
    before = fake.methods.count("Command")
    assert c.halt()["nb"] is True
    assert fake.methods.count("Command") == before


def test_every_call_times_out_when_dlv_stays_silent():
    fake = FakeDlv(lambda *a: None)  # malformed params make the real dlv do exactly this
    c = DelveClient("127.0.0.1", fake.port, timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(DelveTimeout):
        c.list_threads()
    assert time.monotonic() - t0 < 2


def test_dlv_error_and_disconnect_surface():
    def handler(fake, rid, method, params):
        if method == "ClearBreakpoint":
            fake.reply(rid, error="no breakpoint with id -7")
        else:
            fake.conn.shutdown(socket.SHUT_RDWR)

    fake = FakeDlv(handler)
    c = DelveClient("127.0.0.1", fake.port, timeout=2)
    with pytest.raises(Exception, match="no breakpoint with id -7"):
        c.clear_breakpoint(-7)
    with pytest.raises(Exception, match="closed"):
        c.list_threads()
    assert not c.connected


def test_write_plan_covers_exactly_with_aligned_words():
    for addr in range(0x1000, 0x1010):
        for size in (1, 5, 7, 8, 9, 16, 23, 40):
            plan = write_plan(addr, size)
            covered = [a + i for a, w in plan for i in range(w)]
            assert covered == list(range(addr, addr + size))
            assert all(a % 8 == 0 for a, w in plan if w == 8)
            assert all(w in (1, 8) for _, w in plan)
    assert write_plan(0x1003, 21) == [(0x1003 + i, 1) for i in range(5)] + [(0x1008, 8), (0x1010, 8)]


def _th(tid, pc, name="main.f"):
    return {"id": tid, "pc": pc, "function": {"name": name}}


def _g(gid, pc, upc=None, name="main.f"):
    return {"id": gid, "currentLoc": {"pc": pc, "function": {"name": name}},
            "userCurrentLoc": {"pc": upc if upc is not None else pc, "function": {"name": "main.f"}}}


def _f(pc, name):
    return {"pc": pc, "function": {"name": name}}


def test_pc_rule_route_allows_start_refuses_strictly_inside():
    route = [(0x1000, 0x1005)]
    assert unsafe_pcs([_th(1, 0x1000)], [], route, include_start=False) == []
    assert unsafe_pcs([_th(1, 0x1005)], [], route, include_start=False) == []
    for pc in (0x1001, 0x1004):
        assert unsafe_pcs([_th(1, pc)], [], route, include_start=False)
        assert unsafe_pcs([], [_g(7, 0x2000, upc=pc, name="runtime.gopark")], route, False)
    # cave removal: the first byte counts too
    assert unsafe_pcs([_th(1, 0x1000)], [], route, include_start=True)


def test_pc_rule_signal_code_and_stacks():
    r = [(0x1000, 0x1005)]
    why = unsafe_pcs([_th(3, 0x9999, "runtime.sigtramp")], [], r, False)
    assert why and "signal handling" in why[0]
    assert unsafe_pcs([_th(3, 0x9999, "runtime.asyncPreempt")], [], r, False)
    assert unsafe_pcs([_th(3, 0x9999, "runtime.doSigPreempt")], [], r, False)
    # a goroutine parked by async preemption is judged by its frames, not refused outright
    parked = _g(9, 0x8888, upc=0x7777, name="runtime.asyncPreempt2")
    frames = [_f(0x8888, "runtime.asyncPreempt2"), _f(0x7777, "main.f")]
    assert unsafe_pcs([], [parked], r, False, stacks={9: frames}) == []
    frames = [_f(0x8888, "runtime.asyncPreempt2"), _f(0x1003, "main.f")]
    assert unsafe_pcs([], [parked], r, False, stacks={9: frames})
    assert unsafe_pcs([_th(1, 0x5000), _th(2, 0x6000)], [_g(1, 0x5000)], r, False) == []


def test_pc_rule_interrupted_callout_target_and_handler_below_the_top():
    # The frames dlv 1.27.2 gave for a goroutine async-preempted at time.Sleep's entry while a
    # hot delay was destroyed (bench/target, 8 goroutines): its return address 0x4a36d3 into
    # the route `call H; jmp H2` at 0x4a36ce is missing (dlv unwound Sleep's frame by the frame
    # pointer, still the caller's at the entry) and main.main.func1 follows directly. Restoring
    # the route then made Sleep return mid-instruction (SIGSEGV at 0x4a36d3).
    route = [(0x4a36ce, 0x4a36d8)]
    parked = _g(23, 0x448794, upc=0x47cf20, name="runtime.asyncPreempt2")
    frames = [_f(0x448794, "runtime.asyncPreempt2"), _f(0x4814cb, "runtime.asyncPreempt"),
              _f(0x47cf20, "time.Sleep"), _f(0x4a3bcd, "main.main.func1"),
              _f(0x4a3adb, "main.main.gowrap1"), _f(0x4803a1, "runtime.goexit")]
    why = unsafe_pcs([], [parked], route, False, stacks={23: frames})
    assert len(why) == 1 and "interrupted at 0x47cf20 in time.Sleep" in why[0]
    # the same interruption in any other function is judged by the frames as usual
    other = [dict(f, function={"name": "main.other"}) if f["pc"] == 0x47cf20 else f
             for f in frames]
    assert unsafe_pcs([], [parked], route, False, stacks={23: other}) == []
    # a time.Sleep frame reached by a call (not interrupted) is judged by the frames too
    called = [_f(0x47d085, "runtime.gopark"), _f(0x47cf90, "time.Sleep"),
              _f(0x4a3bcd, "main.main.func1")]
    assert unsafe_pcs([], [_g(5, 0x47d085)], route, False, stacks={5: called}) == []
    # a thread stopped in a callee of the signal handler (runtime.pcvalue under sighandler):
    # the PC it will resume at is in the signal frame, whatever the top function is called
    in_handler = [_f(0x41a000, "runtime.pcvalue"), _f(0x448000, "runtime.isAsyncSafePoint"),
                  _f(0x448100, "runtime.doSigPreempt"), _f(0x449000, "runtime.sighandler"),
                  _f(0x449800, "runtime.sigtrampgo"), _f(0x482000, "runtime.sigtramp")]
    g = _g(8, 0x41a000, name="runtime.pcvalue")
    why = unsafe_pcs([_th(3, 0x41a000, "runtime.pcvalue")], [g], route, False, stacks={8: in_handler})
    assert len(why) == 1 and "signal handler (runtime.sighandler)" in why[0]


class _Client:
    def __init__(self):
        self.asked = []

    def stacktrace(self, gid, depth):
        self.asked.append((gid, depth))
        return []


def test_stacks_looked_at():
    from blade_go.session.patching import stacks_to_check
    gs = [dict(_g(1, 0x1, name="main.f"), threadID=11),          # user code on a thread
          dict(_g(2, 0x2, name="runtime.pcvalue"), threadID=12),  # runtime code on a thread
          dict(_g(3, 0x3, name="runtime.asyncPreempt2"), threadID=0),
          dict(_g(4, 0x4, name="runtime.gopark"), threadID=0)]
    c = _Client()
    assert sorted(stacks_to_check(c, gs, False, 32)) == [2, 3]
    assert all(d == 16 for _, d in c.asked)
    c = _Client()
    assert sorted(stacks_to_check(c, gs, True, 32)) == [1, 2, 3, 4]
    assert all(d == 32 for _, d in c.asked)


def test_find_dlv_order_and_missing(monkeypatch, tmp_path):
    fake = tmp_path / "dlv"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BLADE_GO_DLV", str(fake))
    assert launcher.find_dlv(launcher.EM_X86_64) == str(fake)
    monkeypatch.setenv("BLADE_GO_DLV", str(tmp_path / "nope"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(launcher, "TOOLS", str(tmp_path / "none"))
    with pytest.raises(BladeError) as e:
        launcher.find_dlv(launcher.EM_X86_64)
    assert e.value.code == Code.COMMAND_NOT_FOUND and "go install" in str(e.value)
    monkeypatch.setenv("BLADE_GO_DLV_386", str(fake))
    assert launcher.find_dlv(launcher.EM_386) == str(fake)


def test_not_a_go_program_and_missing_process(tmp_path):
    with pytest.raises(BladeError) as e:
        launcher.check_traceable(2 ** 22 + 17)
    assert e.value.code == Code.PROCESS_NOT_EXIST
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(BladeError) as e:
            launcher.launch_dlv(sleeper.pid, str(tmp_path / "dlv.log"), timeout=30)
        assert e.value.code == Code.PARAMETER_INVALID and "is not a Go program" in str(e.value)
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("opts", [{}, {"goarch": "386"}, {"pie": True},
                                  {"ldflags": "-s -w"}], ids=str)
def test_section_names_read_without_pyelftools_match_it(opts, target_factory):
    """The supervisor checks its target is a Go program before site-packages are loaded
    (procfs.exe_section_names, standard library): the same names pyelftools reads."""
    from elftools.elf.elffile import ELFFile
    from blade_go import procfs
    from tests.support.fixtures import build_fixture
    sleeper = subprocess.Popen(["sleep", "30"])
    t = target_factory(build_fixture("e2e_target", **opts))
    try:
        for pid in (sleeper.pid, t.pid):
            with open(f"/proc/{pid}/exe", "rb") as f:
                want = {sec.name for sec in ELFFile(f).iter_sections()}
            assert procfs.exe_section_names(pid) == want
            assert len(want) > 10
        assert ".gopclntab" in procfs.exe_section_names(t.pid)
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_real_dlv_halt_write_continue(build, target_factory, dlv, monkeypatch, tmp_path,
                                      transport):
    monkeypatch.setenv("BLADE_GO_DLV", dlv)
    t = target_factory(build("session_heartbeat"), ready_line="ready pid=")
    sock = str(tmp_path / "d.sock") if transport == "unix" else None
    proc = launcher.launch_dlv(t.pid, str(tmp_path / "dlv.log"), sock=sock)
    try:
        assert proc.transport == transport and proc.note == ""
        if sock:
            assert proc.address == f"unix:{sock}"
            c = DelveClient(proc.address)
        else:
            c = DelveClient("127.0.0.1", proc.port)
        rec = launcher.read_owner_record(str(tmp_path / "dlv.log.owner"))
        assert rec["dlv_pid"] == proc.pid and rec["target_pid"] == t.pid
        assert rec["dlv_start_time"] == launcher.procfs.start_time(proc.pid)
        var = c.eval("runtime.debug.asyncpreemptoff")
        assert var["type"] == "int32"
        c.continue_async()
        time.sleep(0.1)
        assert c.halt()["Running"] is False
        addr = int(var["addr"])
        old = c.read_memory(addr, 4)
        assert len(c.read_memory(0x400000, 2500)) == 2500  # several ExamineMemory pages
        assert c.read_memory(0x400000, 4) == b"\x7fELF"
        assert [th for th in c.list_threads()] and c.list_goroutines()
        c.detach()
        assert launcher.wait_gone(proc.pid, 10)
        assert old == b"\0\0\0\0"
        m = t.mark()
        time.sleep(0.3)
        assert t.lines_since(m) and t.alive()
    finally:
        proc.kill()


def test_old_dlv_without_unix_listener_falls_back_to_tcp_and_says_so(build, target_factory,
                                                                      monkeypatch, tmp_path):
    """Debian's dlv 1.20.2 rejects --listen=unix:PATH before attaching; the launcher then uses
    loopback TCP and says why (the note reaches the supervisor's log and `status`)."""
    from tests.support import toolchains
    old = toolchains.require_debian_dlv()
    monkeypatch.setenv("BLADE_GO_DLV", old)
    t = target_factory(build("session_heartbeat", toolchain="go1.19"), ready_line="ready pid=")
    proc = launcher.launch_dlv(t.pid, str(tmp_path / "dlv.log"), sock=str(tmp_path / "d.sock"))
    try:
        assert proc.transport == "tcp" and proc.address.startswith("127.0.0.1:")
        assert "cannot listen on a unix socket" in proc.note and "TCP 127.0.0.1" in proc.note
        c = DelveClient(proc.address)  # as the supervisor does
        assert "1.20" in c.get_version()["DelveVersion"]
        c.detach()
        assert launcher.wait_gone(proc.pid, 10)
        m = t.mark()
        time.sleep(0.3)
        assert t.lines_since(m) and t.alive()
    finally:
        proc.kill()


def test_guardian_ends_dlv_when_its_owner_dies(build, target_factory, dlv, tmp_path):
    """The owner (here a throwaway Python process standing for the supervisor) starts dlv and is
    SIGKILLed while dlv holds the target stopped (just attached, never continued): the guardian
    ends dlv cleanly within seconds, the target runs again, the record is removed."""
    t = target_factory(build("session_heartbeat"), ready_line="ready pid=")
    record = tmp_path / "dlv.pid"
    code = ("import sys, time; from blade_go.session import launcher; "
            f"d = launcher.launch_dlv({t.pid}, {str(tmp_path / 'dlv.log')!r}, "
            f"record={str(record)!r}, sock={str(tmp_path / 'd.sock')!r}); "
            "print(d.pid, flush=True); time.sleep(600)")
    env = dict(os.environ, BLADE_GO_DLV=dlv, PYTHONPATH=str(REPO_ROOT))
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env,
                             cwd=str(REPO_ROOT))
    dlv_pid = int(owner.stdout.readline())
    t0 = time.monotonic()
    while _tracer(t.pid) != dlv_pid and time.monotonic() - t0 < 20:
        time.sleep(0.01)
    time.sleep(0.5)
    m = t.mark()
    time.sleep(0.5)
    assert not t.lines_since(m), "the attached dlv holds the target stopped (nobody continued)"
    owner.kill()
    owner.wait()
    assert launcher.wait_gone(dlv_pid, 20), "the guardian must end the orphaned dlv"
    t0 = time.monotonic()
    while _tracer(t.pid) and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    m = t.mark()
    time.sleep(0.6)
    assert len(t.lines_since(m)) >= 3 and t.alive(), "the target must run again"
    assert launcher.read_owner_record(str(record)) is None


class _WordMemory:
    """A fake DelveClient memory: records every store (Set) and serves reads."""

    def __init__(self, size=64, base=0x1000):
        self.base, self.mem, self.stores = base, bytearray(range(size)), []

    def read_memory(self, addr, n):
        return bytes(self.mem[addr - self.base:addr - self.base + n])

    def set(self, symbol, value):
        ctype, addr = symbol[3:].split(")(")
        width = {"uint8": 1, "uint64": 8}[ctype.lstrip("*")]
        addr = int(addr.rstrip(")"), 16)
        self.stores.append((addr, width))
        self.mem[addr - self.base:addr - self.base + width] = int(value).to_bytes(width, "little")


def test_a_route_within_one_aligned_word_is_one_store():
    """A writer killed between byte stores would leave a torn jmp at a function entry; within
    one aligned word the write is a single 8-byte store keeping the word's other bytes."""
    from blade_go.session.memory import write_bytes
    m = _WordMemory()
    write_bytes(m, 0x1020, b"\xe9\x01\x02\x03\x04")  # Go aligns function entries to 32
    assert m.stores == [(0x1020, 8)]
    assert m.read_memory(0x1020, 8) == b"\xe9\x01\x02\x03\x04" + bytes([0x25, 0x26, 0x27])
    m = _WordMemory()
    write_bytes(m, 0x1006, b"\xaa\xbb\xcc")  # crosses a word boundary: the byte/word plan
    assert m.stores == [(0x1006, 1), (0x1007, 1), (0x1008, 1)]
    assert m.read_memory(0x1005, 5) == b"\x05\xaa\xbb\xcc\x09"


def test_restore_accepts_a_torn_write_of_ours_only():
    from blade_go.patch import CAVE, Patch
    from blade_go.session.patching import _torn
    p = Patch(0x1000, b"\x00\x00\x00\x00", b"\x11\x22\x33\x44", CAVE)
    assert _torn(b"\x11\x22\x00\x00", p) and _torn(b"\x00\x22\x00\x44", p)
    assert not _torn(b"\x11\x99\x00\x00", p)
