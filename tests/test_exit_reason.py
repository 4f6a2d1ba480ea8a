"""The reason recorded when a target exits: dlv's status checked against the zombie's own."""
import subprocess
import time

from blade_go import procfs
from blade_go.session.records import exit_reason


def _zombie(cmd):
    p = subprocess.Popen(cmd)
    deadline = time.monotonic() + 5
    while procfs.state(p.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert procfs.state(p.pid) == "Z"
    return p


def test_zombie_status_wins_over_dlvs_racy_zero():
    p = _zombie(["sh", "-c", "exit 7"])
    try:
        assert procfs.zombie_exit_status(p.pid) == 7
        assert exit_reason(p.pid, 0) == "target process exited (status 7)"
    finally:
        assert p.wait() == 7
    # reaped: only dlv's word is left, and its 0 is not taken as a clean exit
    assert procfs.zombie_exit_status(p.pid) is None
    assert exit_reason(p.pid, 0) == "target process exited (status not known)"
    assert exit_reason(p.pid, 7) == "target process exited (status 7)"
    assert exit_reason(p.pid, None) == "target process exited (status not known)"


def test_killed_zombie_reports_the_signal():
    p = subprocess.Popen(["sleep", "30"])
    p.kill()
    deadline = time.monotonic() + 5
    while procfs.state(p.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert exit_reason(p.pid, 0) == "target process exited (status -9)"
    finally:
        p.wait()


def test_live_process_has_no_zombie_status():
    p = subprocess.Popen(["sleep", "30"])
    try:
        assert procfs.zombie_exit_status(p.pid) is None
    finally:
        p.kill()
        p.wait()


def test_a_zombie_has_no_start_time_so_every_check_sees_it_gone():
    # procfs.start_time names *running* processes: a zombie has no memory and no executable
    # (trust.trusted_patches and the destroys rely on this to report the target gone).
    from blade_go.session import guard
    p = subprocess.Popen(["sleep", "30"])
    try:
        started = procfs.start_time(p.pid)
        assert started and guard.start_time(p.pid) == started
        p.kill()
        deadline = time.monotonic() + 5
        while procfs.state(p.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert procfs.state(p.pid) == "Z"
        assert procfs.start_time(p.pid) is None and guard.start_time(p.pid) is None
    finally:
        p.kill()
        p.wait()
