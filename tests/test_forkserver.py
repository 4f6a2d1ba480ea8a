"""Later creates on an attached process run in a fork of its warm fork server
(blade_go/fastpath.py -> session/forkserver.py): the same Response, exit status, records and
effect as a fresh CLI; the server ends with its supervisor, however that ends."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.support.blade import Blade
from tests.support.lifecycle import leftovers, supervisors
from tests.support.targets import call, differences_beyond_retained

from blade_go.fastpath import server_for


def wait_until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def fork_sock(home, pid):
    return os.path.join(str(home), "sessions", f"{pid}.fork.sock")


def forked(home, pid) -> int:
    """How many commands the fork server of pid has taken (its lines in the session log)."""
    try:
        with open(os.path.join(str(home), "sessions", f"{pid}.log")) as f:
            return sum("fork server: forked" in line for line in f)
    except FileNotFoundError:
        return 0


def forkservers(home, pid) -> list:
    out = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            words = open(f"/proc/{d}/cmdline", "rb").read().decode(errors="replace").split("\0")
            state = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if "blade_go.session.forkserver" in words and str(home) in words \
                and str(pid) in words and state not in ("Z", "X"):
            out.append(int(d))
    return out


def test_later_creates_run_in_the_fork_server(blade, e2e_binary, target_factory):
    t = target_factory(e2e_binary)
    home = blade.home
    flag = call(t, "Flag")
    first = blade.create_return(t.pid, "main.Query", '"a",nil')
    assert forked(home, t.pid) == 0  # nothing attached before it: it ran here
    assert wait_until(lambda: os.path.exists(fork_sock(home, t.pid)))
    (server,) = forkservers(home, t.pid)
    assert os.getpriority(os.PRIO_PROCESS, server) == 10  # yields the CPU to the target
    second = blade.create_return(t.pid, "main.Flag", "false")
    assert forked(home, t.pid) == 1
    assert call(t, "Flag") == "false" and call(t, "Query") == '"a",<nil>'
    assert blade.ok("status", second)["status"] == "Success"

    # a refused create through it: the same Response and exit status as a fresh process
    code, resp = blade.run("create", "go", "return", "--pid", t.pid, "--func", "main.Qery",
                           "--value", "1")
    assert forked(home, t.pid) == 2
    assert code == 1 and resp["code"] == 47000 and "main.Query" in resp["error"], resp
    # blade's conventions travel with the environment: exit 0, stderr into the log file
    under = Blade(home, env={"BLADE_GO_UNDER_BLADE": "1"})
    code, resp = under.run("create", "go", "return", "--pid", t.pid, "--func", "main.Qery",
                           "--value", "1", "--debug=true")
    assert forked(home, t.pid) == 3
    assert code == 0 and resp["success"] is False and resp["code"] == 47000, resp
    with open(os.path.join(home, "blade-go.log")) as f:
        assert "main.Qery" in f.read()

    # the forked command reads its own BLADE_GO_SPECS, not the server's parsed registry
    code, resp = Blade(home, env={"BLADE_GO_SPECS": os.path.join(home, "no-specs")}).run(
        "create", "go", "return", "--pid", t.pid, "--func", "main.Flag", "--value", "true")
    assert forked(home, t.pid) == 4
    assert code == 1 and resp["code"] == 51000 and "no-specs" in resp["error"], resp

    # a client from another copy of blade-go is turned away before anything runs
    import blade_go.fastpath as fastpath
    saved, fastpath.PACKAGE = fastpath.PACKAGE, "/elsewhere/blade_go"
    old_env = os.environ.get("BLADE_GO_HOME")
    os.environ["BLADE_GO_HOME"] = str(home)
    try:
        assert fastpath.delegate(["create", "go", "return", "--pid", str(t.pid), "--func",
                                  "main.Qery", "--value", "1"]) is None
    finally:
        fastpath.PACKAGE = saved
        if old_env is None:
            del os.environ["BLADE_GO_HOME"]
        else:
            os.environ["BLADE_GO_HOME"] = old_env
    assert forked(home, t.pid) == 4

    blade.ok("destroy", second)
    assert call(t, "Flag") == flag
    blade.ok("destroy", first)  # the last one: the supervisor detaches, its fork server ends
    assert wait_until(lambda: not forkservers(home, t.pid))
    assert not os.path.exists(fork_sock(home, t.pid))
    assert differences_beyond_retained(blade.home, t.pid) == []


def test_started_without_site_as_chaosblades_dispatcher_starts_it(blade, e2e_binary,
                                                                   target_factory):
    """chaosblade's dispatcher runs `python -S -m blade_go` (chaosblade/install.py): a hand-over
    needs nothing from site-packages; a command that runs in the client adds them first."""
    t = target_factory(e2e_binary)
    home = blade.home

    def run(*args):
        p = subprocess.run([sys.executable, "-S", "-m", "blade_go", *map(str, args)],
                           env=blade.env, capture_output=True, text=True, timeout=120)
        return p.returncode, json.loads(p.stdout)

    # the premise: under -S, click (site-packages) is out of reach until site.main() runs
    probe = subprocess.run([sys.executable, "-S", "-c", "import click"], env=blade.env,
                           capture_output=True)
    assert probe.returncode != 0
    code, resp = run("create", "go", "return", "--pid", t.pid, "--func", "main.Flag",
                     "--value", "false")
    assert code == 0 and resp["success"], resp  # ran here, with site-packages added late
    assert forked(home, t.pid) == 0
    assert wait_until(lambda: os.path.exists(fork_sock(home, t.pid)))
    code, resp2 = run("create", "go", "return", "--pid", t.pid, "--func", "main.Query",
                      "--value", '"s",nil')
    assert code == 0 and resp2["success"], resp2
    assert forked(home, t.pid) == 1
    assert call(t, "Flag") == "false" and call(t, "Query") == '"s",<nil>'
    assert run("destroy", resp2["result"])[1]["success"]
    assert run("destroy", resp["result"])[1]["success"]
    assert wait_until(lambda: not leftovers(home), 20), leftovers(home)
    assert differences_beyond_retained(home, t.pid) == []


def test_fork_server_ends_when_its_supervisor_is_killed(blade, e2e_binary, target_factory):
    t = target_factory(e2e_binary)
    home = blade.home
    uid = blade.create_return(t.pid, "main.Flag", "false")
    assert wait_until(lambda: forkservers(home, t.pid))
    (sup,) = supervisors(home, t.pid)
    os.kill(sup, signal.SIGKILL)
    assert wait_until(lambda: not forkservers(home, t.pid), 5)
    # its socket stays behind (nobody unlinks for a SIGKILLed owner): a create that finds it
    # dead runs here, as it would without a fork server
    before = forked(home, t.pid)
    other = blade.create_return(t.pid, "main.Query", '"k",nil')
    assert forked(home, t.pid) == before
    assert call(t, "Flag") == "false" and call(t, "Query") == '"k",<nil>'
    blade.ok("destroy", other)
    blade.ok("destroy", uid)
    assert wait_until(lambda: not leftovers(home), 20), leftovers(home)
    assert differences_beyond_retained(blade.home, t.pid) == []


def test_only_a_create_with_one_ascii_pid_and_a_trusted_home_is_forwarded(tmp_path,
                                                                        monkeypatch):
    home = tmp_path / "home"
    (home / "sessions").mkdir(parents=True, mode=0o700)
    home.chmod(0o700)
    (home / "sessions" / "42.fork.sock").touch()
    monkeypatch.setenv("BLADE_GO_HOME", str(home))
    want = str(home / "sessions" / "42.fork.sock")
    base = ["create", "go", "return", "--func", "main.F", "--value", "1"]
    assert server_for(base + ["--pid", "42"]) == want
    assert server_for(base + ["--pid=42"]) == want
    assert server_for(base + ["--pid", "42", "--pid", "42"]) is None  # the CLI refuses it
    assert server_for(base + ["--pid", "٤٢"]) is None  # Arabic-Indic digits: not a pid
    assert server_for(base + ["--pid", "43"]) is None  # no server for that process
    assert server_for(base + ["--process", "x"]) is None
    assert server_for(base + ["--pid", "42", "--help"]) is None
    assert server_for(["destroy", "abc", "--pid", "42"]) is None
    (home / "sessions").chmod(0o777)  # a home others can write into is never trusted
    assert server_for(base + ["--pid", "42"]) is None


def test_a_binary_opened_ahead_serves_forked_children_with_their_own_offsets(e2e_binary,
                                                                             target_factory):
    """inspector/binary.py open_ahead / after_fork: each forked child takes the warm object once
    (the same bytes a fresh open reads), reading through a file description of its own while
    its siblings read concurrently; a stale identity is never served."""
    from blade_go.inspector import binary
    t = target_factory(e2e_binary)
    fresh = binary.open_binary(pid=t.pid)
    names = ["main.Query", "main.Flag", "main.Many", "main.GetPoint", "main.main"]
    want = {}
    for n in names:
        fn = fresh.find_function(n)
        want[n] = (fn.entry, fresh.read(fn.entry, 64))
    fresh.close()
    warm = binary.open_ahead(t.pid, lambda b: b.find_function("main.main"))
    try:
        children = []
        for k in range(4):
            c = os.fork()
            if c == 0:
                ok = False
                try:
                    binary.after_fork()
                    b = binary.open_binary(pid=t.pid)
                    ok = b is warm
                    for i in range(300):
                        n = names[(i + k) % len(names)]
                        ok = ok and b.read(want[n][0], 64) == want[n][1]
                    again = binary.open_binary(pid=t.pid)  # taken once: a fresh open now
                    ok = ok and again is not warm and again.read(want["main.Flag"][0], 64) \
                        == want["main.Flag"][1]
                finally:
                    os._exit(0 if ok else 1)
            children.append(c)
        assert [os.waitstatus_to_exitcode(os.waitpid(c, 0)[1]) for c in children] == [0] * 4
        binary._ahead[t.pid] = (("another", "process"), warm)
        other = binary.open_binary(pid=t.pid)
        assert other is not warm
        other.close()
    finally:
        binary._ahead.clear()
        warm.close()


def _fake_server(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "sessions").mkdir(parents=True, mode=0o700)
    home.chmod(0o700)
    monkeypatch.setenv("BLADE_GO_HOME", str(home))
    import socket
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(str(home / "sessions" / "42.fork.sock"))
    lsock.listen(4)
    return lsock


CREATE_42 = ["create", "go", "return", "--pid", "42", "--func", "main.F", "--value", "1"]


def test_a_server_ending_with_the_client_in_its_backlog_leaves_the_command_to_it(
        tmp_path, monkeypatch):
    """The server exits (supervisor gone) while our connection waits unaccepted: the reset
    means nothing was forked, so the client runs the command itself."""
    import threading
    import blade_go.fastpath as fastpath
    lsock = _fake_server(tmp_path, monkeypatch)
    threading.Timer(0.3, lsock.close).start()
    t0 = time.monotonic()
    assert fastpath.delegate(CREATE_42) is None
    assert time.monotonic() - t0 < 5


def test_a_server_that_never_starts_the_command_is_reported_not_retried(tmp_path, monkeypatch,
                                                                       capsys):
    """Accepted and read but no "started": the client answers 54000 and closes (the command
    can no longer start), and never runs it itself."""
    import json
    import threading
    import blade_go.fastpath as fastpath
    lsock = _fake_server(tmp_path, monkeypatch)
    held = []
    threading.Thread(target=lambda: held.append(lsock.accept()), daemon=True).start()
    monkeypatch.setattr(fastpath, "STARTED_WAIT", 0.5)
    assert fastpath.delegate(CREATE_42) == 1
    resp = json.loads(capsys.readouterr().out)
    assert resp["code"] == 54000 and "nothing was run" in resp["error"]
    conn = held[0][0]
    import socket
    conn.settimeout(2)
    with pytest.raises((BrokenPipeError, ConnectionResetError)):  # the forked command's view
        for _ in range(100):
            conn.send(b"S")
            time.sleep(0.01)
    conn.close()
    lsock.close()


def test_a_started_command_reports_its_status(tmp_path, monkeypatch):
    import struct
    import threading
    import blade_go.fastpath as fastpath
    lsock = _fake_server(tmp_path, monkeypatch)

    def serve():
        conn, _ = lsock.accept()
        conn.recv(1 << 20)
        conn.sendall(b"S")
        time.sleep(0.2)
        conn.sendall(struct.pack(">i", 7))
        conn.close()
    threading.Thread(target=serve, daemon=True).start()
    assert fastpath.delegate(CREATE_42) == 7
    lsock.close()
