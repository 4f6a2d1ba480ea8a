"""Sessions: one background supervisor per target process holding its dlv connection.

``ensure_session(pid, home)`` returns a handle to the running supervisor of ``pid``, starting one
(detached, in its own session, logging to $home/sessions/<pid>.log) when none answers. A lock
file serialises concurrent creators so they share one supervisor. A supervisor found closing
(or gone) between two requests is replaced by a fresh one: requests it never received are sent
again (SessionGone), never ones that may have run (SessionLost).

Standby (fast start): a create calls ``prestart(pid, home)`` as soon as it knows the process,
before its analysis. That spawns the supervisor in *standby*: it starts Python and imports
everything (and starts dlv's guardian, idle too: guard.py), then waits on a pipe from the
creator, holding no lock, writing no record, starting no dlv. Only ``ensure_session`` (after
the analysis accepted the experiment and its record is on disk) says "go", under the per-pid
lock and after the previous supervisor ended, exactly where a supervisor was spawned before. A
creator that refuses, finds another creator's session, or dies (however: the kernel closes its
end of the pipe) ends its standby: it reads EOF or gets SIGTERM and exits without having
touched the target. A supervisor tells its starter it is ready over a second pipe (no connect
polling); EOF on that pipe means it failed ($pid.err).
"""
import fcntl
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time

from ..errors import BladeError, Code
from ..state import open_private
from .paths import SessionPaths
from .protocol import SessionGone, SessionLost, request  # noqa: F401  (public)
from .sweep import sweep  # noqa: F401  (public)

log = logging.getLogger("blade_go")


def __getattr__(name):  # DelveClient stays public; only the supervisor needs it loaded
    if name == "DelveClient":
        from .delve_client import DelveClient
        return DelveClient
    raise AttributeError(name)


START_TIMEOUT = 60.0
GO, READY = b"go\n", b"ready\n"  # creator -> standby supervisor; supervisor -> its starter
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class SessionHandle:
    def __init__(self, pid: int, home: str):
        self.pid, self.home = pid, home
        self.paths = SessionPaths(home, pid)
        self.known: dict = {}  # the facts the supervisor answered when we connected

    def _req(self, op: str, wait: float = 60.0, **args) -> dict:
        return request(self.paths.sock, op, wait, **args)

    def _again(self, op: str, wait: float = 60.0, **args) -> dict:
        """A request that a closing or vanished supervisor did not receive goes to a fresh one."""
        for attempt in range(3):
            try:
                return self._req(op, wait, **args)
            except SessionGone:
                if attempt == 2:
                    raise
                time.sleep(0.05)
                ensure_session(self.pid, self.home)

    def apply(self, uid: str, patches, timeout=None, guard=None) -> dict:
        log.debug("session: apply %s", uid)
        res = self._again("apply", timeout or 60.0, uid=uid, patches=_as_json(patches),
                          guard=guard)
        log.debug("session: applied %s", uid)
        return res

    def revert(self, uid: str, patches, guard=None) -> dict:
        log.debug("session: revert %s", uid)
        res = self._again("revert", uid=uid, patches=_as_json(patches), guard=guard)
        log.debug("session: reverted %s", uid)
        return res

    def watch(self, uid: str, timeout: float) -> dict:
        return self._again("watch", uid=uid, timeout=timeout)

    def facts(self) -> dict:
        return self._req("facts", 5.0)

    def release(self, uid: str) -> dict:
        try:
            res = self._req("release", uid=uid)
        except SessionGone:  # no supervisor, nothing attached: released already
            res = {"released": uid, "detached": True}
        log.debug("session: released %s (detached: %s)", uid, res.get("detached"))
        return res


def _as_json(patches) -> list:
    return [p if isinstance(p, dict) else p.to_json() for p in patches]


def connect_session(pid: int, home: str) -> SessionHandle | None:
    """The live supervisor of pid, or None."""
    h = SessionHandle(pid, home)
    if not os.path.exists(h.paths.sock):
        return None
    try:
        h.known = h.facts()
        return h
    except (BladeError, OSError):
        return None


def ensure_session(pid: int, home: str) -> SessionHandle:
    h = connect_session(pid, home)
    if h:
        return h
    p = SessionPaths(home, pid)
    with open_private(p.lock, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        h = connect_session(pid, home)  # another creator may have finished meanwhile
        if h:
            return h
        return _start_supervisor(pid, home, p)


def _wait_previous_supervisor(p: SessionPaths, timeout: float = 30.0):
    """Wait until the last supervisor of this pid has fully ended (its life lock is free)."""
    deadline = time.monotonic() + timeout
    with open_private(p.life, "a") as life:
        while True:
            try:
                fcntl.flock(life, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return  # closing the file releases it for the supervisor we start next
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BladeError(Code.UNEXPECTED_STATUS, "the previous session supervisor "
                                     f"of this process has not ended after {timeout:.0f}s; "
                                     f"see {p.log}") from None
                time.sleep(0.05)


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
                    [sys.executable, "-m", "blade_go.session.supervisor", "--pid", str(pid),
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


def _claim_standby(pid: int, home: str) -> Standby | None:
    with _standbys_lock:
        standby = _standbys.pop((pid, home), None)
    if standby is not None and standby.proc.poll() is not None:
        standby.cancel()
        return None
    return standby


def _start_supervisor(pid: int, home: str, p: SessionPaths) -> SessionHandle:
    _wait_previous_supervisor(p)
    for stale in (p.sock, p.err):
        try:
            os.unlink(stale)
        except FileNotFoundError:
            pass
    sup = _claim_standby(pid, home)
    log.debug("session: starting the supervisor of %d (%s)", pid,
              "standby" if sup else "no standby")
    if sup is not None and not sup.go():
        sup.cancel()
        sup = None
    if sup is None:
        sup = Standby(pid, home, p)
        sup.go()  # a failure to start shows as EOF on its ready pipe and its exit status
    try:
        return _wait_started(pid, home, p, sup)
    finally:
        sup.close()


def _wait_started(pid: int, home: str, p: SessionPaths, sup: Standby) -> SessionHandle:
    proc = sup.proc
    deadline = time.monotonic() + START_TIMEOUT
    said = sup.wait_ready(START_TIMEOUT)
    log.debug("session: supervisor %d %s", proc.pid, {True: "ready", False: "failed",
                                                      None: "silent"}[said])
    if said is False:  # it closed the pipe: it failed (or is exiting): wait for its verdict
        try:
            proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    while time.monotonic() < deadline:
        h = connect_session(pid, home)
        if h:
            return h
        if proc.poll() is not None:
            try:
                err = json.load(open_private(p.err))
            except (OSError, ValueError):
                err = {"code": Code.OS_CMD_EXEC_FAILED,
                       "error": f"session supervisor exited with status {proc.returncode}; "
                                f"see {p.log}"}
            raise BladeError(err["code"], err["error"])
        time.sleep(0.02)
    proc.terminate()
    raise BladeError(Code.OS_CMD_EXEC_FAILED, f"session supervisor for {pid} did not become ready "
                                              f"within {START_TIMEOUT:.0f}s; see {p.log}")
