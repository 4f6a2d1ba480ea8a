"""The session supervisor: one background process per target pid holding its dlv session.

    python -m blade_go.session.supervisor --pid P --home DIR

It attaches dlv, removes dlv's internal panic/throw breakpoints (a panicking target must die as
it would without us, not freeze at a breakpoint nobody continues), keeps the target running and
serves apply/revert/watch/facts/release on $home/sessions/<pid>.sock. Every exit path detaches or
kills its dlv and never leaves the target halted.
"""
import argparse
import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time

from ..errors import BladeError, Code
from ..patch import Patch
from .. import procfs
from . import paths, protocol, records
from .delve_client import DelveClient, DelveError
from .launcher import DlvProcess, explain_failure, launch_dlv, reap_orphan_dlv
from .patching import Patcher

POLL = 0.1
IDLE_EXIT = 120.0  # no experiment ever arrived: detach instead of staying attached forever


def _resume_if_stopped(pid: int):
    """A tracer killed while it held the target halted can leave it in a stop with nobody to
    resume it; an untraced target found stopped while our experiments live gets SIGCONT."""
    state = procfs.state(pid)
    try:
        tracer = next(int(ln.split()[1]) for ln in open(f"/proc/{pid}/status")
                      if ln.startswith("TracerPid:"))
    except (OSError, ValueError, StopIteration):
        return
    if state in ("T", "t") and tracer == 0:
        log(f"target {pid} was left stopped; resuming it")
        os.kill(pid, signal.SIGCONT)


def log(msg: str):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


class Supervisor:
    def __init__(self, pid: int, home: str):
        self.pid, self.home = pid, home
        self.p = paths.SessionPaths(home, pid)
        self.op_lock = threading.RLock()  # one dlv conversation at a time
        self.uids: set[str] = set()
        self.released: set[str] = set()  # forgotten even if their record still says Success
        self.closing = False  # detached on release: stop after answering
        self.timers: dict[str, threading.Timer] = {}
        self.stop = threading.Event()
        self.dlv: DlvProcess | None = None
        self.client: DelveClient | None = None
        self.version = ""
        self.restarted = False
        self.started = time.monotonic()

    # -- dlv lifecycle --------------------------------------------------------------------
    def attach(self):
        orphan = reap_orphan_dlv(self.pid, self.p.dlv_pid)
        if orphan:
            log(f"ended dlv {orphan} left attached by an earlier supervisor")
        _resume_if_stopped(self.pid)
        records.fix_async_preempt(self.p, self.pid, log)
        log_start = os.path.getsize(self.p.dlv_log) if os.path.exists(self.p.dlv_log) else 0
        self.dlv = launch_dlv(self.pid, self.p.dlv_log)
        try:
            try:
                self.client = DelveClient("127.0.0.1", self.dlv.port)
                self.version = self.client.get_version().get("DelveVersion", "").split("\n")[0]
            except (OSError, DelveError):
                # dlv prints its listening line before the attach completes: a failed attach
                # shows up as a closed connection; its log says why.
                try:
                    self.dlv.proc.wait(timeout=3)
                except Exception:
                    pass
                with open(self.p.dlv_log, errors="replace") as f:
                    f.seek(log_start)
                    raise explain_failure(self.pid, f.read()) from None
            self._clear_internal_breakpoints()
            records.record_async_preempt(self.client, self.p, self.pid, log)
        except Exception:
            self.dlv.kill()  # a killed dlv leaves no breakpoints: we set none, and cleared dlv's
            raise
        with open(self.p.dlv_pid, "w") as f:
            f.write(str(self.dlv.pid))
        self.client.continue_async()
        log(f"attached dlv pid {self.dlv.pid} ({self.version}) on port {self.dlv.port}")

    def _clear_internal_breakpoints(self):
        # ListBreakpoints{All} lists a multi-address breakpoint once per address.
        for bp_id in sorted({bp["id"] for bp in self.client.list_breakpoints(all_=True)}):
            if bp_id < 0:
                self.client.clear_breakpoint(bp_id)
        left = [bp["id"] for bp in self.client.list_breakpoints(all_=True)]
        if left:
            raise BladeError(Code.UNEXPECTED_STATUS, f"dlv kept breakpoints {left}")

    def detach(self):
        """Detach dlv (restores what it changed, target keeps running) and stop it."""
        if self.dlv is None:
            return
        try:
            if self.client and self.client.connected:
                self.client.halt(timeout=5)
                self.client.detach(kill=False, timeout=10)
        except Exception as e:
            log(f"detach failed ({e}); terminating dlv")
            self.dlv.proc.terminate()  # dlv detaches on SIGTERM
        try:
            self.dlv.proc.wait(timeout=10)
        except Exception:
            self.dlv.kill()
        if self.client:
            self.client.close()
        self.dlv = self.client = None

    # -- requests -------------------------------------------------------------------------
    def handle(self, req: dict) -> dict:
        op = req.get("op")
        if op == "facts":
            return self.facts()
        if op in ("apply", "revert") and (self.client is None or not self.client.connected):
            raise BladeError(Code.UNEXPECTED_STATUS, "the session lost its dlv; retry (a fresh "
                                                     "session will be started)")
        if op == "apply":
            patches = [Patch.from_json(d) for d in req["patches"]]
            with self.op_lock:
                res = Patcher(self.client, log).apply(patches, req.get("guard"))
                self.uids.add(req["uid"])
                self.released.discard(req["uid"])
            return res
        if op == "revert":
            patches = [Patch.from_json(d) for d in req["patches"]]
            with self.op_lock:
                return Patcher(self.client, log).revert(patches, req.get("guard"))
        if op == "watch":
            self.watch(req["uid"], float(req["timeout"]))
            return {"watching": req["uid"], "timeout": float(req["timeout"])}
        if op == "release":
            return self.release(req["uid"])
        raise BladeError(Code.PARAMETER_INVALID, f"unknown session request {op!r}")

    def facts(self) -> dict:
        return {"session": "alive", "pid": self.pid, "dlv_pid": self.dlv.pid if self.dlv else None,
                "dlv_version": self.version, "target_alive": records.process_alive(self.pid),
                "uids": sorted(self.uids)}

    def watch(self, uid: str, timeout: float):
        self.uids.add(uid)
        old = self.timers.pop(uid, None)
        if old:
            old.cancel()
        t = threading.Timer(timeout, self._expire, args=(uid,))
        t.daemon = True
        self.timers[uid] = t
        t.start()

    def _expire(self, uid: str):
        try:
            rec = records.get(self.home, uid)
            if rec and rec.get("status") in records.LIVE:
                with self.op_lock:
                    Patcher(self.client, log).revert(
                        [Patch.from_json(d) for d in records.patches_of(rec)])
                records.mark_destroyed(self.home, uid, "destroyed by timeout")
                log(f"{uid}: destroyed by timeout")
        except Exception as e:
            log(f"{uid}: timeout revert failed: {e}")
            records.note_error(self.home, uid, f"timeout revert failed: {e}")
        self.release(uid)

    def release(self, uid: str) -> dict:
        with self.op_lock:  # the monitor's idle check must not stop us mid-release
            return self._release(uid)

    def _release(self, uid: str) -> dict:
        self.uids.discard(uid)
        self.released.add(uid)
        t = self.timers.pop(uid, None)
        if t:
            t.cancel()
        live = (self.uids | records.live_uids(self.home, self.pid)) - self.released
        if not live:
            # Detach before answering: when destroy returns, dlv is gone, and a create right
            # after it starts a fresh session instead of meeting this one half closed.
            self._unpublish()
            with self.op_lock:
                self.detach()
            self.closing = True  # _serve_conn stops the supervisor once this reply is sent
        return {"released": uid, "detached": not live}

    def _unpublish(self):
        """Remove the socket path so no new client finds a session that is closing."""
        try:
            os.unlink(self.p.sock)
        except FileNotFoundError:
            pass

    # -- monitoring -----------------------------------------------------------------------
    def check_target(self):
        """Notice the target exiting or dlv dying between requests."""
        if not self.op_lock.acquire(timeout=POLL):
            return
        try:
            fut = self.client.pending_continue() if self.client else None
            if self.client and not self.client.connected or (self.dlv and not self.dlv.alive()):
                if not records.process_alive(self.pid):
                    return self.target_exited(None)
                return self.dlv_died()
            if fut is None or not fut.done():
                return
            exc = fut.exception()
            state = None if exc else fut.result()["State"]
            if exc is not None or state.get("exited"):
                status = state.get("exitStatus") if state else records.exit_status_from(str(exc))
                if state or not records.process_alive(self.pid):
                    return self.target_exited(status)
            self.client.continue_async()  # stopped for another reason: never leave it halted
        finally:
            self.op_lock.release()

    def target_exited(self, status):
        reason = f"target process exited (status {status if status is not None else 'unknown'})"
        log(reason)
        for uid in self.uids | records.live_uids(self.home, self.pid):
            records.mark_destroyed(self.home, uid, reason)
        self.uids.clear()
        if self.dlv:
            self.dlv.kill()
        self.dlv = self.client = None
        self.stop.set()

    def dlv_died(self):
        log("dlv died while the target lives")
        if self.dlv:
            self.dlv.kill()
        self.dlv = self.client = None
        if self.restarted:
            log("dlv died twice: exiting, state left as is")
            self.stop.set()
            return
        self.restarted = True
        # The kernel releases the threads of a dead tracer asynchronously; attaching before
        # it finishes fails with "no child processes".
        records.wait_untraced(self.pid, timeout=5)
        for attempt in range(3):
            try:
                self.attach()
                return
            except Exception as e:
                log(f"cannot restart dlv (attempt {attempt + 1}): {e}")
                self.dlv = self.client = None
                time.sleep(0.5)
        self.stop.set()

    def _idle_now(self) -> bool:
        if not self.op_lock.acquire(blocking=False):
            return False  # a request is running: not idle
        try:
            return self.idle()
        finally:
            self.op_lock.release()

    def idle(self) -> bool:
        """No live experiment: either all that came were released (parallel destroys may each
        have seen the others still live), or none ever arrived within IDLE_EXIT."""
        if self.closing:  # a release detached already; its connection stops us after replying
            return False
        live = (self.uids | records.live_uids(self.home, self.pid)) - self.released
        if live:
            return False
        return bool(self.released) or time.monotonic() - self.started > IDLE_EXIT

    # -- serving --------------------------------------------------------------------------
    def monitor(self):
        while not self.stop.is_set():
            try:
                self.check_target()
                if self._idle_now():
                    log("no experiment arrived: leaving")
                    self.stop.set()
            except Exception as e:  # keep watching; a broken session is handled next round
                log(f"monitor: {e}")
            self.stop.wait(POLL)

    def serve(self):
        threading.Thread(target=self.monitor, name="monitor", daemon=True).start()
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.unlink(self.p.sock)
        except FileNotFoundError:
            pass
        srv.bind(self.p.sock)
        os.chmod(self.p.sock, 0o600)
        srv.listen(16)
        srv.settimeout(POLL)
        try:
            while not self.stop.is_set():
                try:
                    conn, _ = srv.accept()
                except socket.timeout:
                    continue
                threading.Thread(target=self._serve_conn, args=(conn,), daemon=True).start()
        finally:
            srv.close()
            try:
                os.unlink(self.p.sock)
            except FileNotFoundError:
                pass

    def _serve_conn(self, conn: socket.socket):
        with conn:
            try:
                req = protocol.read_message(conn)
                if req is None:
                    return
                try:
                    resp = protocol.ok(self.handle(req))
                except Exception as e:  # every request gets an answer
                    log(f"{req.get('op')} failed: {e}")
                    resp = protocol.error(e)
                protocol.send_message(conn, resp)
            except OSError:
                pass
        if self.closing:
            self.stop.set()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="blade-go-session")
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--home", required=True)
    args = ap.parse_args(argv)
    sup = Supervisor(args.pid, args.home)
    # Held until this process ends, however it ends: the next supervisor for this pid waits
    # for it, so two never overlap (a new dlv would meet the old one still detaching).
    life = open(sup.p.life, "a")
    fcntl.flock(life, fcntl.LOCK_EX)
    signal.signal(signal.SIGTERM, lambda *_: sup.stop.set())
    signal.signal(signal.SIGINT, lambda *_: sup.stop.set())
    try:
        sup.attach()
    except Exception as e:
        code = e.code if isinstance(e, BladeError) else Code.OS_CMD_EXEC_FAILED
        with open(sup.p.err, "w") as f:
            json.dump({"code": code, "error": str(e)}, f)
        log(f"attach failed: {e}")
        return 1
    try:
        sup.serve()
    finally:
        with sup.op_lock:
            sup.detach()
        log("supervisor exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
