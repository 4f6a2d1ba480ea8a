"""Process targeting against real processes: sleep processes with distinctive command lines."""
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from blade_go.errors import BladeError, Code
from blade_go.targeting import (find_processes, is_blade_go_argv, process_info, resolve_process,
                                resolve_target)


@pytest.fixture
def spawn():
    """spawn(argv0, exe="sleep") -> Popen of `exe 300` whose argv[0] is argv0 (killed after)."""
    procs = []

    def start_named(argv0, exe="sleep"):
        # bash's exec -a sets argv[0]; comm stays the executable's name
        p = subprocess.Popen(["bash", "-c", f'exec -a "$0" {exe} 300', argv0])
        procs.append(p)
        deadline = time.time() + 5
        while time.time() < deadline:
            info = process_info(p.pid)
            if info and info.argv and info.argv[0] == argv0:
                return p
            time.sleep(0.01)
        raise AssertionError(f"{argv0} did not start")

    yield start_named
    for p in procs:
        p.kill()
        p.wait()


@pytest.fixture
def tag():
    return "bgtarget-" + uuid.uuid4().hex[:10]


def test_pid_resolves_with_facts(spawn, tag):
    p = spawn(f"{tag}-one")
    info = resolve_process(pid=(p.pid,))
    assert info.pid == p.pid and info.comm == "sleep"
    assert info.exe == os.path.realpath(shutil.which("sleep"))
    assert info.cmdline == f"{tag}-one 300"
    assert resolve_target(pid=p.pid) == p.pid


def test_process_substring_exactly_one(spawn, tag):
    a = spawn(f"{tag}-alpha")
    spawn(f"{tag}-beta")
    assert resolve_target(process=f"{tag}-alpha") == a.pid


def test_several_matches_list_pid_and_cmdline(spawn, tag):
    a, b = spawn(f"{tag}-alpha"), spawn(f"{tag}-beta")
    with pytest.raises(BladeError) as e:
        resolve_target(process=tag)
    msg = e.value.message
    assert e.value.code == Code.PARAMETER_INVALID_TOO_MANY_PROCESS
    assert f"{a.pid} {tag}-alpha 300" in msg and f"{b.pid} {tag}-beta 300" in msg
    with pytest.raises(BladeError) as e:  # a pid list must also leave exactly one
        resolve_target(pid=(a.pid, b.pid))
    assert e.value.code == Code.PARAMETER_INVALID_TOO_MANY_PROCESS
    # criteria combine: the list narrowed by the command line is one process
    assert resolve_target(pid=(a.pid, b.pid), process="beta") == b.pid


def test_no_match(spawn, tag):
    with pytest.raises(BladeError) as e:
        resolve_target(process=tag + "-absent")
    assert e.value.code == Code.PROCESS_ID_BY_NAME_FAILED and tag in e.value.message
    with pytest.raises(BladeError) as e:
        resolve_target(process_cmd="no-such-comm")
    assert e.value.code == Code.PROCESS_ID_BY_NAME_FAILED
    p = spawn(f"{tag}-gone")
    p.kill()
    p.wait()
    with pytest.raises(BladeError) as e:
        resolve_target(pid=p.pid)
    assert e.value.code == Code.PROCESS_NOT_EXIST and str(p.pid) in e.value.message


def test_nothing_given_names_all_three():
    with pytest.raises(BladeError) as e:
        resolve_target()
    assert e.value.code == Code.PARAMETER_LESS and "pid|process|process-cmd" in e.value.message


def test_process_cmd_matches_exact_comm(spawn, tag, tmp_path):
    exe = tmp_path / "bgsleepx"
    shutil.copy(shutil.which("sleep"), exe)
    p = spawn(f"{tag}-comm", exe=str(exe))
    assert resolve_target(process_cmd="bgsleepx") == p.pid
    with pytest.raises(BladeError):
        resolve_target(process_cmd="bgsleep")  # exact, not a prefix


def test_dlv_and_blade_go_are_never_candidates(spawn, tag, tmp_path):
    dlv = tmp_path / "dlv"
    shutil.copy(shutil.which("sleep"), dlv)
    d = spawn(f"{tag}-dlvlike", exe=str(dlv))
    assert [i.pid for i in find_processes(process=tag)] == []
    with pytest.raises(BladeError) as e:
        resolve_target(pid=d.pid)
    assert e.value.code == Code.PARAMETER_INVALID and "dlv" in e.value.message
    with pytest.raises(BladeError) as e:
        resolve_target(pid=os.getpid())
    assert e.value.code == Code.PARAMETER_INVALID and "blade-go itself" in e.value.message
    # blade-go's own processes: the console script (the kernel names the process after the
    # script) and an interpreter running the package
    script = tmp_path / "blade-go"
    script.write_text(f"#!/bin/sh\nsleep 300\n")
    script.chmod(0o755)
    running = subprocess.Popen([str(script)], start_new_session=True)
    try:
        deadline = time.time() + 5
        while (process_info(running.pid) or process_info(os.getpid())).comm != "blade-go":
            assert time.time() < deadline
            time.sleep(0.01)
        assert process_info(running.pid).is_blade_go
        assert running.pid not in [i.pid for i in find_processes(process=str(script))]
        with pytest.raises(BladeError) as e:
            resolve_target(pid=running.pid)
        assert "blade-go itself" in e.value.message
    finally:
        os.killpg(running.pid, 9)  # the script and its sleep
        running.wait()
    assert is_blade_go_argv("python3", [sys.executable, "-m", "blade_go", "create"])
    assert is_blade_go_argv("python3", [sys.executable, "-u", "-m", "blade_go.session.supervisor"])
    assert is_blade_go_argv("python3", ["/usr/bin/python3", "/usr/local/bin/blade-go", "status"])
    assert not is_blade_go_argv("sleep", ["/usr/local/bin/blade-go", "300"])
    assert not is_blade_go_argv("app", ["/srv/app", "--config", "/etc/blade_go/app.yaml"])
    assert not is_blade_go_argv("python3", [sys.executable, "-m", "blade_golf"])


def test_arguments_mentioning_blade_go_do_not_make_a_process_blade_go(spawn, tag):
    # issue 7: a target whose command line merely contains blade_go was refused as blade-go
    t = spawn(f"/srv/{tag}/blade_go-config")
    assert resolve_target(pid=t.pid) == t.pid
    assert resolve_target(process=f"{tag}/blade_go-config") == t.pid


def test_ancestor_shell_carrying_the_pattern_is_not_a_candidate(spawn, tag):
    p = spawn(f"{tag}-target")
    code = ("import sys; sys.path.insert(0, sys.argv[1]);"
            "from blade_go.targeting import resolve_target;"
            f"print(resolve_target(process={tag!r}))")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # the shell's own command line contains the tag; it must not count as a second match
    out = subprocess.run(["bash", "-c", f'"{sys.executable}" -c "$0" "{repo}"; : {tag}', code],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(p.pid)


def test_zombie_is_not_a_candidate(tag):
    z = subprocess.Popen(["bash", "-c", f'exec -a "$0" sleep 0', f"{tag}-zombie"])
    deadline = time.time() + 5
    while time.time() < deadline and (process_info(z.pid) or None) and \
            process_info(z.pid).state != "Z":
        time.sleep(0.01)
    try:
        assert process_info(z.pid).state == "Z"
        with pytest.raises(BladeError) as e:
            resolve_target(pid=z.pid)
        assert "zombie" in e.value.message
    finally:
        z.wait()


def test_kernel_threads_are_not_candidates():
    kthreads = [i for i in (process_info(p) for p in (2, 3, 4, 5)) if i and i.kernel_thread]
    if not kthreads:
        pytest.skip("no kernel threads visible in this pid namespace")
    with pytest.raises(BladeError) as e:
        resolve_target(pid=kthreads[0].pid)
    assert e.value.code == Code.PARAMETER_INVALID and "kernel thread" in e.value.message
    assert kthreads[0].pid not in [i.pid for i in find_processes(process_cmd=kthreads[0].comm)]
