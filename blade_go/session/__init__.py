"""Sessions: one background supervisor per target process holding its dlv connection.

``ensure_session(pid, home)`` returns a handle to the running supervisor of ``pid``, starting one
(detached, in its own session, logging to $home/sessions/<pid>.log) when none answers. A lock
file serialises concurrent creators so they share one supervisor. A supervisor found closing
(or gone) between two requests is replaced by a fresh one: requests it never received are sent
again (SessionGone), never ones that may have run (SessionLost).

A create starts the supervisor in standby while it analyses (session/standby.py); only
ensure_session, after the analysis accepted, tells it to attach. A supervisor tells its starter
it is ready over a pipe (no connect polling); EOF on that pipe means it failed ($pid.err).
"""
import fcntl
import json
import logging
import os
import subprocess
import time

from ..errors import BladeError, Code
from ..state import open_private
from .deadlines import exe_size, session_start_timeout
from .paths import SessionPaths
from .protocol import SessionGone, SessionLost, request  # noqa: F401  (public)
from .standby import PACKAGE_ROOT, Standby, claim, discard_standby, prestart  # noqa: F401
from .sweep import sweep  # noqa: F401  (public)

log = logging.getLogger("blade_go")


def __getattr__(name):  # DelveClient stays public; only the supervisor needs it loaded
    if name == "DelveClient":
        from .delve_client import DelveClient
        return DelveClient
    raise AttributeError(name)


START_TIMEOUT = 60.0


class SessionHandle:
    def __init__(self, pid: int, home: str):
        self.pid, self.home = pid, home
        self.paths = SessionPaths(home, pid)
        self.known: dict = {}  # the facts the supervisor answered when we connected
        self.started_here = False  # this handle's ensure_session started the supervisor

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

    def reclaim(self) -> dict:
        """Scan for the value caves retained in this process and restore those nothing points
        to (session/reclaim.py); {"reclaimed": bytes, "retained_bytes": left, ...}."""
        return self._again("reclaim")

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


def target_paused(handle: SessionHandle, applied: dict) -> dict:
    """How long this create stopped the target, measured: the attach (when this create
    attached: the supervisor sampled the target's main thread in tracing stop, pausewatch.py)
    and each halt of its apply (halt sent to continue sent, DelveClient.stops).

        {"attach_ms": 18.2, "attach_all_stopped_ms": 11.0, "halts_ms": [6.1],
         "total_ms": 24.3, "dlv": "patched"}

    attach_ms runs from the first of the target's threads entering tracing stop to the last
    leaving it; attach_all_stopped_ms while all were stopped (dlv attaches them one by one).
    """
    halts = list(applied.get("stops_ms") or [])
    out = {}
    if handle.started_here:
        out["attach_ms"] = handle.known.get("attach_pause_ms")  # any thread stopped
        out["attach_all_stopped_ms"] = handle.known.get("attach_all_stopped_ms")
    out["halts_ms"] = halts
    out["total_ms"] = round(sum(halts) + (out.get("attach_ms") or 0), 1)
    if handle.known.get("dlv_kind"):
        out["dlv"] = handle.known["dlv_kind"]
    return out


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


def _start_supervisor(pid: int, home: str, p: SessionPaths) -> SessionHandle:
    _wait_previous_supervisor(p)
    for stale in (p.sock, p.err):
        try:
            os.unlink(stale)
        except FileNotFoundError:
            pass
    sup = claim(pid, home)
    log.debug("session: starting the supervisor of %d (%s)", pid,
              "standby" if sup else "no standby")
    if sup is not None and not sup.go():
        sup.cancel()
        sup = None
    if sup is None:
        sup = Standby(pid, home, p)
        sup.go()  # a failure to start shows as EOF on its ready pipe and its exit status
    try:
        h = _wait_started(pid, home, p, sup)
        h.started_here = True
        return h
    finally:
        sup.close()


def _wait_started(pid: int, home: str, p: SessionPaths, sup: Standby) -> SessionHandle:
    proc = sup.proc
    # dlv's attach takes longer the larger the executable: slow is not failed (deadlines.py)
    timeout = max(START_TIMEOUT, session_start_timeout(exe_size(pid)))
    deadline = time.monotonic() + timeout
    said = sup.wait_ready(timeout)
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
                                              f"within {timeout:.0f}s; see {p.log}")
