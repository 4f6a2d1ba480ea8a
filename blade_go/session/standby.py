"""Standby supervisors: started while a create analyses, attached only when told "go".

A create calls ``prestart(pid, home)`` as soon as it knows the process, before its analysis.
That spawns the supervisor with --standby: it starts Python and imports everything (and starts
dlv's guardian, idle too: guard.py step 0), then waits on a pipe from the creator, holding no
lock, writing no record, starting no dlv. Only ensure_session (session/__init__.py), after the
analysis accepted the experiment and its record is on disk, says "go" (``claim`` + ``go``),
under the per-pid lock and after the previous supervisor ended: where a supervisor used to be
spawned. A creator that refuses or finds another creator's session ends its standby
(``discard_standby``: EOF and SIGTERM); a creator that dies, however, closes its end of the pipe
by dying, and the standby (and its guardian) exit at EOF. Neither has touched the target.

Both sides of the protocol live here: the creator's (Standby) and the supervisor's
(``wait_for_go``, ``say_ready``).
"""
import logging
import os
import select
import signal
import subprocess
import sys
import threading

from ..state import open_private
from .paths import SessionPaths

log = logging.getLogger("blade_go")
GO, READY = b"go\n", b"ready\n"  # creator -> standby supervisor; supervisor -> its starter
STANDBY_WAIT = 600.0  # a creator analysing a very large binary still finds its standby
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Standby:
    """A supervisor process started ahead of need (see the module docstring)."""

    def __init__(self, pid: int, home: str, p: SessionPaths):
        self.pid, self.home = pid, home
        env = dict(os.environ)
        env["PYTHONPATH"] = PACKAGE_ROOT + os.pathsep + env.get("PYTHONPATH", "")
        ready_r, ready_w = os.pipe()
        try:
            with open_private(p.log, "ab") as log:
                self.proc = subprocess.Popen(
                    # -S: ready for "go" sooner; site-packages come while dlv attaches
                    [sys.executable, "-S", "-m", "blade_go.session.supervisor", "--pid", str(pid),
                     "--home", home, "--standby", "--ready-fd", str(ready_w)],
                    stdin=subprocess.PIPE, stdout=log, stderr=log, cwd="/", env=env,
                    start_new_session=True, pass_fds=(ready_w,))
        except BaseException:
            os.close(ready_r)
            raise
        finally:
            os.close(ready_w)
        self.ready_fd = ready_r
        self.started = False

    def go(self) -> bool:
        """Tell it to attach; False when it is gone (then start another)."""
        try:
            self.proc.stdin.write(GO)
            self.proc.stdin.flush()
        except OSError:  # BrokenPipeError: it exited (an import failure, its own timeout)
            return False
        finally:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        self.started = True
        return True

    def wait_ready(self, timeout: float) -> bool | None:
        """True: it serves its socket. False: it ended (or closed the pipe) without serving.
        None: no word within timeout."""
        ready, _, _ = select.select([self.ready_fd], [], [], max(0.0, timeout))
        if not ready:
            return None
        try:
            said = os.read(self.ready_fd, 64)
        except OSError:
            said = b""
        return said.startswith(READY)

    def cancel(self):
        """End a standby that was never told to go: it has touched nothing."""
        if not self.started and self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # EOF: it exits by itself ...
            except OSError:
                pass
            try:
                self.proc.send_signal(signal.SIGTERM)  # ... at once, even mid-import
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.close()

    def close(self):
        if self.ready_fd is not None:
            os.close(self.ready_fd)
            self.ready_fd = None


_standbys: dict = {}  # (pid, home) -> Standby not yet told to go
_standbys_lock = threading.Lock()


def prestart(pid: int, home: str) -> Standby | None:
    """Start a standby supervisor for pid unless a session seems to run already. Best effort:
    None when none was started (ensure_session then starts one as before)."""
    try:
        p = SessionPaths(home, pid)
        if os.path.exists(p.sock):
            return None  # attached already (or closing: ensure_session starts a fresh one)
        with _standbys_lock:
            if (pid, home) in _standbys:
                return None
            standby = _standbys[(pid, home)] = Standby(pid, home, p)
        log.debug("session: standby supervisor %d started for %d", standby.proc.pid, pid)
        return standby
    except Exception:
        return None


def discard_standby(standby: Standby | None):
    """End standby unless ensure_session used it (call when the create is over, however)."""
    if standby is None:
        return
    with _standbys_lock:
        if _standbys.get((standby.pid, standby.home)) is standby:
            del _standbys[(standby.pid, standby.home)]
    if not standby.started:
        standby.cancel()


def claim(pid: int, home: str) -> Standby | None:
    with _standbys_lock:
        standby = _standbys.pop((pid, home), None)
    if standby is not None and standby.proc.poll() is not None:
        standby.cancel()
        return None
    return standby


# -- the supervisor's side ----------------------------------------------------------------------
def wait_for_go() -> bool:
    """In the standby: True once the creator says go; False on EOF (it refused or died), on
    anything else, or after STANDBY_WAIT."""
    ready, _, _ = select.select([0], [], [], STANDBY_WAIT)
    if not ready:
        return False
    try:
        said = os.read(0, 16)
    except OSError:
        return False
    if said != GO:
        return False
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # the creator may exit now; nothing more is read
    os.close(null)
    return True


def say_ready(fd: int | None):
    """Tell the starter the socket serves (then it connects once, no polling)."""
    if fd is None:
        return
    try:
        os.write(fd, READY)
    except OSError:
        pass  # the starter is gone; clients find the socket
    finally:
        os.close(fd)
