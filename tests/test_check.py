"""`blade-go check [--pid P]`: each check passes on a healthy set-up and fails, with what to do,
when the machine really is in the bad state (a non-Go process, a process traced by someone
else, a state home writable by others, no dlv, ptrace refused by a seccomp filter)."""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from blade_go.session import dlvinfo
from tests.support.blade import Blade

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def cli(tmp_path, dlv):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    return Blade(home, env={"BLADE_GO_DLV": dlv})


def checks(resp) -> dict:
    return {c["name"]: c for c in resp["result"]["checks"]}


def assert_fails(resp, name, code, *words):
    c = checks(resp)[name]
    assert c["status"] == "fail", resp
    assert c["fix"], c  # every failure says what to do
    assert resp["code"] == code and not resp["success"], resp
    assert f"{name}: " in resp["error"] and "(do: " in resp["error"], resp
    for w in words:
        assert w in c["detail"] + " " + c["fix"], (w, c)
    return c


def test_environment_ok(cli, dlv):
    code, resp = cli.run("check")
    assert code == 0 and resp["success"] and resp["result"]["ok"], resp
    by = checks(resp)
    assert set(by) == {"kernel", "dlv", "ptrace", "state_home"}
    assert all(c["status"] == "ok" for c in by.values()), by
    env = resp["result"]["environment"]
    info = dlvinfo.describe(dlv)
    assert env["dlv"]["path"] == dlv and env["dlv"]["version"] == info["version"]
    assert env["dlv"]["kind"] == info["kind"] and env["dlv"]["chosen_by"] == "BLADE_GO_DLV"
    assert env["ptrace_probe"] is True and env["state_home"] == cli.home
    assert env["kernel"]["release"] == os.uname().release


def test_go_process(cli, e2e_binary, target_factory):
    t = target_factory(e2e_binary)
    code, resp = cli.run("check", "--pid", t.pid)
    assert code == 0 and resp["success"], resp
    by = checks(resp)
    for name in ("go_program", "dwarf", "tracer", "namespace", "attach_pause"):
        assert by[name]["status"] == "ok", by[name]
    p = resp["result"]["process"]
    assert p["pid"] == t.pid and p["go_version"].startswith("go1.")
    assert p["abi"] == "abi-internal-amd64" and p["pie"] is False and p["has_dwarf"] is True
    assert p["tracer"] is None and p["same_pid_namespace"] is True and p["nspid"] == [t.pid]
    lo, hi = p["attach_pause_ms"]
    assert 0 < lo <= hi


def test_process_under_blade_go_own_session(cli, e2e_binary, target_factory):
    """The tracer of a process with an active experiment is blade-go's own dlv: not a failure."""
    t = target_factory(e2e_binary)
    uid = cli.create_return(t.pid, "main.Query", '"x",nil')
    try:
        code, resp = cli.run("check", "--pid", t.pid)
        assert code == 0 and resp["success"], resp
        tracer = resp["result"]["process"]["tracer"]
        assert tracer["blade_go"] is True and tracer["name"] == "dlv", tracer
        assert "blade-go's own dlv" in checks(resp)["tracer"]["detail"]
    finally:
        cli.ok("destroy", uid)


def test_non_go_process(cli, target_factory):
    t = target_factory("sleep", args=["60"], ready_line=None)
    code, resp = cli.run("check", "--pid", t.pid)
    assert code == 1
    assert_fails(resp, "go_program", 47000, "not a Go", "/usr/bin/sleep"
                 if os.path.realpath(shutil.which("sleep")) == "/usr/bin/sleep" else "sleep")


def test_missing_process(cli):
    p = subprocess.Popen(["true"])
    p.wait()  # reaped: the pid names no process (until the kernel reuses it)
    pid = p.pid
    code, resp = cli.run("check", "--pid", pid)
    assert code == 1
    assert_fails(resp, "process", 63012, "does not exist")


TRACER = textwrap.dedent("""
    import ctypes, ctypes.util, sys, threading
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    done = threading.Event()
    def trace():  # the tracer is this thread, not the process's main one
        rc = libc.ptrace(0x4206, int(sys.argv[1]), None, None)  # PTRACE_SEIZE: no stop
        print(rc, ctypes.get_errno(), threading.get_native_id(), flush=True)
        sys.stdin.readline()
    th = threading.Thread(target=trace)
    th.start()
    th.join()
""")


def test_traced_process(cli, e2e_binary, target_factory):
    """A real ptrace from a helper's second thread: TracerPid names that thread, the check
    names the helper process."""
    t = target_factory(e2e_binary)
    helper = subprocess.Popen([sys.executable, "-c", TRACER, str(t.pid)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        rc, err, tid = map(int, helper.stdout.readline().split())
        assert rc == 0, f"PTRACE_SEIZE failed: errno {err}"
        assert tid != helper.pid  # the mapping from thread to process is what is tested
        code, resp = cli.run("check", "--pid", t.pid)
        assert code == 1
        c = assert_fails(resp, "tracer", 43000, f"pid {helper.pid}", "python", "detach")
        tracer = resp["result"]["process"]["tracer"]
        assert tracer["pid"] == helper.pid and tracer["thread"] == tid, tracer
        assert tracer["blade_go"] is False and "already traced" in c["detail"]
    finally:
        helper.stdin.close()
        helper.wait(10)
    code, resp = cli.run("check", "--pid", t.pid)  # the tracer gone, the process is fine
    assert code == 0 and checks(resp)["tracer"]["detail"] == "not traced", resp


def test_home_writable_by_others(tmp_path, dlv):
    home = tmp_path / "open-home"
    home.mkdir()
    os.chmod(home, 0o777)
    code, resp = Blade(home, env={"BLADE_GO_DLV": dlv}).run("check")
    assert code == 1
    assert_fails(resp, "state_home", 43000, "writable by group or others", "chmod go-w",
                 "BLADE_GO_HOME")
    # a home that does not exist yet is judged by the directory it would be created in
    parent = tmp_path / "open-parent"
    parent.mkdir()
    os.chmod(parent, 0o777)
    code, resp = Blade(parent / "home", env={"BLADE_GO_DLV": dlv}).run("check")
    assert_fails(resp, "state_home", 43000, "sticky")


def test_no_dlv(cli, tmp_path):
    missing = str(tmp_path / "no-such-dlv")
    code, resp = Blade(cli.home, env={"BLADE_GO_DLV": missing}).run("check")
    assert code == 1
    assert_fails(resp, "dlv", 52000, missing, "BLADE_GO_DLV")
    assert resp["result"]["environment"]["dlv"] is None
    # no BLADE_GO_DLV, no dlv on PATH, nothing where the installer puts it
    bare_path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                                if not os.path.exists(os.path.join(d, "dlv")))
    env = {k: v for k, v in os.environ.items() if k != "BLADE_GO_DLV"}
    env.update(PATH=bare_path, BLADE_GO_TOOLS_DIR=str(tmp_path / "no-tools"),
               BLADE_GO_HOME=cli.home, PYTHONPATH=REPO)
    p = subprocess.run([sys.executable, "-m", "blade_go", "check"], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    import json
    resp = json.loads(p.stdout)
    assert p.returncode == 1
    assert_fails(resp, "dlv", 52000, "dlv not found", "go install")


SECCOMP_EXEC = r"""
/* Runs argv[1..] under a seccomp filter that fails ptrace(2) with EPERM (as a container's
   profile may), everything else allowed. */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ptrace, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
        perror("seccomp"); return 2;
    }
    execvp(argv[1], argv + 1);
    perror("exec"); return 2;
}
"""


def test_ptrace_refused_by_seccomp(cli, tmp_path):
    gcc = shutil.which("gcc")
    if not gcc:
        from tests.support.toolchains import missing
        missing("gcc")
    src = tmp_path / "seccomp_exec.c"
    src.write_text(SECCOMP_EXEC)
    exe = tmp_path / "seccomp_exec"
    subprocess.run([gcc, "-o", str(exe), str(src)], check=True)
    env = dict(cli.env)
    p = subprocess.run([str(exe), sys.executable, "-m", "blade_go", "check"], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    import json
    resp = json.loads(p.stdout)
    assert p.returncode == 1
    c = assert_fails(resp, "ptrace", 43000, "EPERM", "seccomp filter", "seccompProfile")
    env_facts = resp["result"]["environment"]
    assert env_facts["seccomp"] == "filter" and env_facts["ptrace_probe"] is False
    assert env_facts["no_new_privs"] is True
    assert "CAP_SYS_PTRACE in the effective set" in c["detail"]  # root: the filter decides


def test_pid_must_be_a_number(cli):
    code, resp = cli.run("check", "--pid", "12x")
    assert code == 1 and resp["code"] == 46000, resp


def test_find_dlv_order_with_a_bundled_dlv(monkeypatch, tmp_path):
    """$BLADE_GO_DLV, then the wheel's bundled dlv, then PATH, then the installer's."""
    from blade_go.session import launcher

    def fake(where):
        where.mkdir(parents=True, exist_ok=True)
        (where / "dlv").write_text("#!/bin/sh\n")
        (where / "dlv").chmod(0o755)
        return str(where / "dlv")

    bundled, on_path, tools = (fake(tmp_path / d) for d in ("_bin", "path", "tools/bin"))
    monkeypatch.delenv("BLADE_GO_DLV", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    monkeypatch.setattr(launcher, "TOOLS", str(tmp_path / "tools"))
    monkeypatch.setattr(launcher, "BUNDLED_DLV", bundled)
    assert launcher.find_dlv() == bundled
    monkeypatch.setenv("BLADE_GO_DLV", on_path)
    assert launcher.find_dlv() == on_path
    monkeypatch.delenv("BLADE_GO_DLV")
    monkeypatch.setattr(launcher, "BUNDLED_DLV", str(tmp_path / "no-bundle" / "dlv"))
    assert launcher.find_dlv() == on_path
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert launcher.find_dlv() == tools


def test_process_in_another_pid_namespace(cli, e2e_binary, target_factory):
    """A Go program in a pid namespace of its own (as in a container): named by its host pid,
    it is pid 1 inside."""
    if not shutil.which("unshare"):
        from tests.support.toolchains import missing
        missing("unshare (util-linux)")
    runner = target_factory("unshare", args=["--pid", "--fork", "--mount-proc", "--kill-child",
                                             str(e2e_binary)])
    kids = [int(p) for p in os.listdir("/proc") if p.isdigit()
            and open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1] == str(runner.pid)]
    assert len(kids) == 1, kids
    code, resp = cli.run("check", "--pid", kids[0])
    assert code == 0 and resp["success"], resp
    p = resp["result"]["process"]
    assert p["nspid"] == [kids[0], 1] and p["same_pid_namespace"] is False, p
    assert checks(resp)["namespace"]["detail"].startswith("in another pid namespace (pid 1 "), \
        checks(resp)["namespace"]
    assert p["go_version"].startswith("go1.")  # its executable read through the host's /proc
