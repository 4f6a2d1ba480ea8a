"""Ending what dead supervisors left behind; every blade-go command runs this first.

A supervisor can die at any instant (SIGKILL, OOM killer). What it may leave: a dlv attached to
the target (maybe holding it stopped, maybe with its own breakpoints in the target's text), or
a dlv whose target has exited. Each dlv has an ownership record (guard.py) naming its
supervisor; a record whose supervisor is gone while its dlv runs is an orphan, ended cleanly
here (SIGTERM: dlv removes its breakpoints, detaches and the target resumes).
"""
import fcntl
import glob
import os

from .. import procfs
from .ownership import end_orphan_dlv, read_owner_record, resume_if_left_stopped
from .paths import SessionPaths


def _supervisor_alive(rec: dict) -> bool:
    pid = rec.get("supervisor_pid")
    if not pid or not procfs.alive(pid):
        return False
    started = rec.get("supervisor_start_time")
    return started is None or procfs.start_time(pid) == started


def orphans(home: str) -> list[tuple[int, dict]]:
    """(target pid, ownership record) of every dlv whose supervisor is gone."""
    out = []
    for path in glob.glob(os.path.join(home, "sessions", "*.dlv.pid")):
        try:
            pid = int(os.path.basename(path).split(".")[0])
        except ValueError:
            continue
        rec = read_owner_record(path)
        if rec and not _supervisor_alive(rec):
            out.append((pid, rec))
    return out


def sweep(home: str, log=None) -> list[int]:
    """End orphaned dlvs (their targets resume); returns the dlv pids ended. Never raises for a
    session another process is busy with (its own supervisor start ends the orphan)."""
    ended = []
    for pid, _ in orphans(home):
        p = SessionPaths(home, pid)
        fd = os.open(p.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a supervisor is being started for this pid: it ends the orphan
            rec = read_owner_record(p.dlv_pid)  # again, under the lock
            if rec is None or _supervisor_alive(rec):
                continue
            try:
                dlv = end_orphan_dlv(p.dlv_pid, log=log)
            except Exception as e:  # reported; the next command tries again
                if log:
                    log(f"cannot end the orphaned dlv of {pid}: {e}")
                continue
            if dlv:
                ended.append(dlv)
            elif procfs.alive(pid):
                resume_if_left_stopped(pid, log)
        finally:
            os.close(fd)
    return ended
