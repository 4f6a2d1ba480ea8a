"""Ownership of dlv processes: reading the record a dlv's guardian wrote (guard.py), and
ending a dlv whose supervisor is gone so that its target runs on, untouched.
"""
import json
import os
import select
import signal
import time

from .. import procfs
from ..errors import BladeError, Code
from ..state import open_private


def _status_field(pid: int, name: str) -> str | None:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    return None


def read_owner_record(path: str) -> dict | None:
    """The ownership record of a dlv (JSON), or None. A bare integer is an older format."""
    try:
        with open_private(path) as f:  # never through a planted symlink (state.py)
            text = f.read().strip()
    except OSError:  # absent, or UntrustedPath (a PermissionError): no record we can trust
        return None
    try:
        rec = json.loads(text)
    except ValueError:
        return None
    if isinstance(rec, int):
        return {"dlv_pid": rec}
    return rec if isinstance(rec, dict) and isinstance(rec.get("dlv_pid"), int) else None


def remove_owner_record(path: str, dlv_pid: int | None = None):
    """Remove the record (only if it still names dlv_pid, when given)."""
    rec = read_owner_record(path)
    if rec is None or dlv_pid is None or rec.get("dlv_pid") == dlv_pid:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _is_ours(rec: dict) -> bool:
    """The recorded dlv still runs (same pid, same start time, a dlv or our handshake shell)."""
    dlv_pid = rec["dlv_pid"]
    if not procfs.alive(dlv_pid):
        return False
    if rec.get("dlv_start_time") is not None:
        return procfs.start_time(dlv_pid) == rec["dlv_start_time"]
    try:  # an older record without start time: check the command line
        cmd = open(f"/proc/{dlv_pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        return False
    return bool(cmd) and b"dlv" in os.path.basename(cmd[0]) and b"attach" in cmd


def wait_gone(pid: int, timeout: float) -> bool:
    """True once pid has exited (a zombie counts), within timeout. A pidfd wakes us the moment
    it exits (a dlv ending after its detach is on every destroy's path); polling otherwise."""
    deadline = time.monotonic() + timeout
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # gone already, or no pidfd (Linux < 5.3)
        fd = None
    try:
        while procfs.alive(pid):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if fd is not None:
                select.select([fd], [], [], min(left, 0.5))
            else:
                time.sleep(min(left, 0.02))
        return True
    finally:
        if fd is not None:
            os.close(fd)


def resume_if_left_stopped(pid: int, log=None) -> bool:
    """A target found in a stop with no tracer (a tracer died while it was halted) gets SIGCONT."""
    if procfs.state(pid) not in ("T", "t"):
        return False
    try:
        tracer = int(_status_field(pid, "TracerPid") or 0)
    except (OSError, ValueError):
        return False
    if tracer:
        return False
    if log:
        log(f"target {pid} was left stopped; resuming it")
    os.kill(pid, signal.SIGCONT)
    return True


def end_orphan_dlv(record_path: str, wait: float = 20.0, log=None) -> int | None:
    """End the dlv a dead supervisor left behind (its ownership record at record_path) and make
    sure its target runs. Returns the pid of the dlv ended, or None when there was none.

    The target alive: SIGTERM only (dlv detaches: removes its breakpoints, resumes the target),
    and wait; never SIGKILL a dlv that may hold breakpoints. The target gone: dlv has nothing to
    restore, SIGKILL after the wait is harmless.
    """
    rec = read_owner_record(record_path)
    if rec is None:
        return None
    dlv_pid = rec["dlv_pid"]
    if not _is_ours(rec):
        remove_owner_record(record_path, dlv_pid)  # ended already, or the pid was reused
        return None
    target = rec.get("target_pid")
    target_alive = target is None or (procfs.alive(target) and (
        rec.get("target_start_time") is None
        or procfs.start_time(target) == rec["target_start_time"]))
    os.kill(dlv_pid, signal.SIGTERM)  # dlv detaches cleanly on SIGTERM
    if not wait_gone(dlv_pid, wait):
        if target_alive:
            raise BladeError(Code.UNEXPECTED_STATUS,
                             f"an earlier dlv (pid {dlv_pid}) attached to {target} does not "
                             "detach; not touching the target while it may be mid-detach")
        os.kill(dlv_pid, signal.SIGKILL)
        wait_gone(dlv_pid, 5)
    remove_owner_record(record_path, dlv_pid)
    if target_alive and target:
        from .records import wait_untraced
        wait_untraced(target, timeout=5)
        resume_if_left_stopped(target, log)
    if log:
        log(f"ended dlv {dlv_pid} left {'attached to' if target_alive else 'after the exit of'} "
            f"{target} by an earlier supervisor")
    return dlv_pid


def reap_orphan_dlv(pid: int, pid_file: str, wait: float = 20.0) -> int | None:
    """Compatibility name: end the dlv a dead supervisor left attached to pid."""
    return end_orphan_dlv(pid_file, wait)
