"""The session supervisor: one background process per target pid holding its dlv session.

    python -m blade_go.session.supervisor --pid P --home DIR [--standby | --resume] [--ready-fd FD]

It attaches dlv, removes dlv's internal panic/throw breakpoints (a panicking target must die as
it would without us, not freeze at a breakpoint nobody continues), keeps the target running and
serves apply/revert/watch/facts/release on $home/sessions/<pid>.sock. Every exit path detaches or
kills its dlv and never leaves the target halted.

--standby: imported and idle until its creator writes "go" on stdin (session/__init__.py),
with dlv's guardian started and idle too (guard.py step 0); EOF or anything else first, or no
word within STANDBY_WAIT: exit having touched nothing (no lock taken, no record, no dlv).
--ready-fd: write "ready" there once the socket serves, or close it by exiting (the failure is
in $pid.err).
--resume: started by dlv's guardian after the previous supervisor died with a deadline pending
(guard.py step 4): under the per-pid lock (so a create meanwhile waits, then finds us), unless
another supervisor serves already or no recorded deadline is left, attach, re-arm the recorded
deadlines and enforce them; the record says so (`deadline_enforced_by`).
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
from ..fastpath import load_site
from ..patch import Patch
from ..state import open_private, write_private
from ..trust import trusted_patches
from . import forkserver, paths, protocol, reclaim, records, standby
from .monitoring import POLL, Monitoring, log
from . import deadlines, dlvinfo
from .delve_client import DelveClient, DelveError, DelveTimeout
from .pausewatch import AttachPauseWatch
from .launcher import DlvProcess, explain_failure, launch_dlv, prepare_guard
from .ownership import end_orphan_dlv, remove_owner_record, resume_if_left_stopped, wait_gone
from .patching import Patcher
from .text import repair_int3



class Supervisor(Monitoring):
    def __init__(self, pid: int, home: str):
        self.pid, self.home = pid, home
        self.p = paths.SessionPaths(home, pid)
        self.op_lock = threading.RLock()  # one dlv conversation at a time
        self.uids: set[str] = set()
        self.released: set[str] = set()  # forgotten even if their record still says Success
        self.closing = False  # detached on release: stop once no request is being answered
        self.active = 0  # connections being served
        self.active_lock = threading.Lock()
        self.timers: dict[str, threading.Timer] = {}
        self.stop = threading.Event()
        self.dlv: DlvProcess | None = None
        self.client: DelveClient | None = None
        self.version = ""
        self.restarted = False
        self.detached = False  # dlv let the target go (Detach answered); its exit may follow
        self.started = time.monotonic()
        self.ready_fd: int | None = None  # told "ready" once the socket serves
        self.pending = None  # launcher.PendingGuard started in standby
        self.last_reclaim = time.monotonic()  # retained values: see monitoring.reclaim_now
        self.deadlines: dict[str, float] = {}  # uid -> absolute deadline (told to the guardian)
        self.resumed = False  # started by the guardian to enforce a dead supervisor's deadlines
        self.start_lock = None  # --resume: the per-pid lock, released once we serve
        self.attach_pause: dict = {}  # pausewatch: how long dlv's attach stopped the target
        self.answered_ms = None  # dlv's listening line to its first answer

    # -- dlv lifecycle --------------------------------------------------------------------
    def attach(self):
        end_orphan_dlv(self.p.dlv_pid, log=log)  # a dead supervisor's dlv: detached cleanly
        resume_if_left_stopped(self.pid, log)
        records.fix_async_preempt(self.p, self.pid, log)
        log_start = os.path.getsize(self.p.dlv_log) if os.path.exists(self.p.dlv_log) else 0
        # The ownership record is on disk before dlv can stop the target (guard.py).
        log(f"attaching to {self.pid}")
        pending, self.pending = self.pending, None  # a standby's guardian: first attach only
        self.detached = False
        size = deadlines.exe_size(self.pid)
        watch = AttachPauseWatch(self.pid)  # how long the target stays stopped (measured)
        try:
            self.dlv = launch_dlv(self.pid, self.p.dlv_log, record=self.p.dlv_pid,
                                  sock=self.p.dlv_sock, pending=pending)
        except BaseException:
            watch.cancel()
            raise
        log(f"dlv {self.dlv.pid} listens")
        if self.dlv.note:
            log(self.dlv.note)
        load_site()  # started with -S (standby.py): while dlv attaches, before anything needs it
        t_listen = time.monotonic()
        answer_timeout = deadlines.first_answer_timeout(size)
        try:
            try:
                self.client = DelveClient(self.dlv.address)
                # dlv answers once it has loaded the executable and attached: the deadline
                # grows with the executable (deadlines.py); slow is not failed.
                self.version = self.client.call("GetVersion", timeout=answer_timeout).get(
                    "DelveVersion", "").split("\n")[0]
            except DelveTimeout:
                raise BladeError(Code.OS_CMD_EXEC_FAILED, self._slow_attach(size, t_listen)) \
                    from None
            except (OSError, DelveError):
                # dlv prints its listening line before the attach completes: a failed attach
                # shows up as a closed connection; its log says why.
                wait_gone(self.dlv.pid, 3)
                with open_private(self.p.dlv_log, errors="replace") as f:
                    f.seek(log_start)
                    raise explain_failure(self.pid, f.read()) from None
            self.answered_ms = round((time.monotonic() - t_listen) * 1000, 1)
            log(f"dlv {self.dlv.pid} answered after {self.answered_ms} ms")
            self._clear_internal_breakpoints()
            records.record_async_preempt(self.client, self.p, self.pid, log)
            self.client.continue_async()
            watch.resume_sent()
        except Exception:
            watch.cancel()
            self._end_dlv()
            raise
        self.attach_pause = watch.result()
        log(f"attached dlv pid {self.dlv.pid} ({self.version}) on {self.dlv.address}; the target "
            f"was stopped {self.attach_pause.get('attach_ms')} ms")
        self._tell_guard()  # a new guardian (a dlv restart) must know the deadlines too

    def _slow_attach(self, size, t_listen) -> str:
        """The message of an attach that outlived its deadline: what was slow, and why."""
        waited = time.monotonic() - t_listen
        mb = f"{size / 1e6:.0f} MB" if size else "its"
        info = dlvinfo.describe(self.dlv.path)
        how = ("it loads the executable before stopping the process, so the target kept "
               "running meanwhile" if info.get("preload") else
               "this stock dlv stops the process first, so the target was stopped meanwhile; "
               "a dlv built by build/delve/build.sh loads it before stopping the process")
        return (f"dlv (pid {self.dlv.pid}) listens but had not finished attaching to {self.pid} "
                f"and loading {mb} executable after {waited:.0f} s (the deadline for this size; "
                f"load average {deadlines.load_average()}): slow, not failed; {how}. dlv was "
                "ended (the target resumes); retry when the host is less busy")

    def _end_dlv(self, wait: float = 15.0):
        """SIGTERM (dlv detaches: its breakpoints go, the target resumes) and wait. Never
        SIGKILL while the target lives: a killed dlv leaves its int3s in the target's text.
        A dlv that will not end keeps its ownership record: a later command ends it."""
        dlv, self.dlv = self.dlv, None
        if self.client:
            self.client.close()
        self.client = None
        if dlv is None:
            return
        dlv.terminate()
        if not wait_gone(dlv.pid, wait):
            if records.process_alive(self.pid):
                log(f"dlv {dlv.pid} has not ended; its guardian or the next command ends it")
                dlv.guard.stdin.close()  # the guardian takes over (SIGTERM again, waits)
                return
            dlv.kill()  # its target is gone: nothing to restore
        dlv.close()
        remove_owner_record(self.p.dlv_pid, dlv.pid)

    def _clear_internal_breakpoints(self):
        # ListBreakpoints{All} lists a multi-address breakpoint once per address.
        bps = self.client.list_breakpoints(all_=True)
        for bp_id in sorted({bp["id"] for bp in bps}):
            if bp_id < 0:
                self.client.clear_breakpoint(bp_id)
        left = [bp["id"] for bp in self.client.list_breakpoints(all_=True)]
        if left:
            raise BladeError(Code.UNEXPECTED_STATUS, f"dlv kept breakpoints {left}")
        repair_int3(self.client, self.pid,
                    [a for bp in bps for a in (bp.get("addrs") or [bp.get("addr")]) if a], log)

    def detach(self):
        """Detach dlv (restores what it changed, target keeps running) and stop it."""
        if self.dlv is None:
            return
        if not self.detached:  # the supervisor's exit: a last scan for retained values
            self.reclaim_quietly("reclaimed as the session ended")
        self._detach_target()
        self._end_dlv()

    def _detach_target(self) -> bool:
        """Halt and Detach over dlv's API; True once dlv has let the target go (it runs,
        untraced). dlv's own exit follows (_end_dlv waits for it)."""
        if self.detached:
            return True
        t0 = time.monotonic()
        try:
            if self.client and self.client.connected:
                self.client.halt(timeout=5)
                halted = (time.monotonic() - t0) * 1e3
                self.client.detach(kill=False, timeout=10)
                self.detached = True
                done = (time.monotonic() - t0) * 1e3
                log(f"detached: halt {halted:.0f} ms, detach {done:.0f} ms")
        except Exception as e:
            log(f"detach failed ({e}); terminating dlv")
        return self.detached

    # -- requests -------------------------------------------------------------------------
    def handle(self, req: dict) -> dict:
        op = req.get("op")
        if op == "facts":
            return self.facts()
        if op in ("apply", "revert", "watch", "reclaim") and self.closing:
            raise BladeError(Code.OS_CMD_EXEC_FAILED, protocol.CLOSING + "this supervisor has "
                             "detached and is ending")
        if op in ("apply", "revert", "reclaim") and (self.client is None
                                                      or not self.client.connected):
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
        if op == "reclaim":
            with self.op_lock:
                return self.reclaim("reclaimed at a later command on this process")
        if op == "watch":
            self.watch(req["uid"], float(req["timeout"]))
            return {"watching": req["uid"], "timeout": float(req["timeout"])}
        if op == "release":
            return self.release(req["uid"])
        raise BladeError(Code.PARAMETER_INVALID, f"unknown session request {op!r}")

    def facts(self) -> dict:
        dlv = self.dlv
        return {"session": "alive", "pid": self.pid, "dlv_pid": dlv.pid if dlv else None,
                "dlv_version": self.version, "target_alive": records.process_alive(self.pid),
                "dlv_transport": dlv.transport if dlv else None,
                "dlv_note": dlv.note if dlv else "", "uids": sorted(self.uids),
                "dlv_path": dlv.path if dlv else None,
                "dlv_kind": dlvinfo.describe(dlv.path).get("kind") if dlv else None,
                "attach_pause_ms": self.attach_pause.get("attach_ms"),
                "attach_all_stopped_ms": self.attach_pause.get("attach_all_stopped_ms"),
                "dlv_answered_ms": self.answered_ms}

    def reclaim(self, how: str) -> dict:
        """Restore retained value caves of this process that a scan proves unreferenced
        (session/reclaim.py). Call with op_lock held and dlv connected."""
        self.last_reclaim = time.monotonic()
        return reclaim.reclaim_process(Patcher(self.client, log), self.home, self.pid, log, how)

    def reclaim_quietly(self, how: str):
        """reclaim() when anything is retained here; failures are logged, values stay."""
        try:
            if self.client and self.client.connected and reclaim.on_process(self.home, self.pid):
                res = self.reclaim(how)
                log(f"reclaim ({how}): {res['reclaimed']} bytes restored, "
                    f"{res['retained_bytes']} still retained")
        except Exception as e:
            log(f"reclaim ({how}) failed: {e}")

    def watch(self, uid: str, timeout: float):
        """Destroy uid after timeout seconds. The deadline goes into the experiment's record
        (absolute time): a later command or a restarted supervisor enforces it if we die."""
        deadline = time.time() + timeout
        try:
            records.set_deadline(self.home, uid, deadline)
        except Exception as e:  # the timer still runs; only a restart would lose it
            log(f"{uid}: cannot record the deadline: {e}")
        self._arm(uid, deadline)

    def _arm(self, uid: str, deadline: float):
        self.uids.add(uid)
        old = self.timers.pop(uid, None)
        if old:
            old.cancel()
        t = threading.Timer(max(0.0, deadline - time.time()), self._expire, args=(uid,))
        t.daemon = True
        self.timers[uid] = t
        self.deadlines[uid] = deadline
        t.start()
        self._tell_guard()

    def _tell_guard(self):
        """dlv's guardian outlives us: it learns our earliest deadline and how to start a
        supervisor that enforces it should we die (guard.py step 4)."""
        dlv = self.dlv
        if dlv is None or dlv.guard.stdin is None or dlv.guard.stdin.closed:
            return
        msg = {"deadline": min(self.deadlines.values(), default=0),
               "resume": [sys.executable, "-m", "blade_go.session.supervisor",
                          "--pid", str(self.pid), "--home", self.home, "--resume"],
               "log": self.p.log}
        try:
            dlv.guard.stdin.write(json.dumps(msg).encode() + b"\n")
            dlv.guard.stdin.flush()
        except (OSError, ValueError) as e:
            log(f"cannot tell dlv's guardian the deadline: {e}")

    def arm_recorded_deadlines(self):
        """A restarted supervisor takes over the deadlines of this process's experiments."""
        started = records.start_time(self.pid)
        for rec in records.live_records(self.home, self.pid):
            if rec.get("deadline") and records.target_start_time(rec) in (None, started):
                self._arm(rec["uid"], float(rec["deadline"]))

    def _expire(self, uid: str):
        # The uid lock first (a create still finishing holds it), the dlv lock second.
        try:
            with records.uid_lock(self.home, uid):
                rec = records.get(self.home, uid)
                if rec and rec.get("status") in records.LIVE:
                    if float(rec.get("deadline") or 0) > time.time() + 0.05:
                        return self._arm(uid, float(rec["deadline"]))  # moved later meanwhile
                    with self.op_lock:
                        if self.client is None:
                            raise BladeError(Code.UNEXPECTED_STATUS, "the session lost its dlv")
                        facts = Patcher(self.client, log).revert(  # checked against the file
                            trusted_patches(self.pid, rec.get("record") or rec, uid))
                    by = ("a supervisor dlv's guardian restarted after the previous one died"
                          if self.resumed else "the session supervisor")
                    records.mark_destroyed(self.home, uid, "destroyed by timeout", facts,
                                           enforced_by=by)
                    log(f"{uid}: destroyed by timeout: {facts}")
        except Exception as e:
            log(f"{uid}: timeout revert failed: {e}")
            records.note_error(self.home, uid, f"timeout revert failed: {e}")
            return  # still live: a later destroy (or command) tries again
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
        if self.deadlines.pop(uid, None) is not None:
            self._tell_guard()
        live = (self.uids | records.live_uids(self.home, self.pid)) - self.released
        if not live:
            # Detach before answering: when destroy returns, the target runs untraced, and a
            # create right after it starts a fresh session instead of meeting this one half
            # closed (the socket is gone; that create waits for our life lock, i.e. for dlv's
            # exit, which we wait for after replying). A failed detach ends dlv first.
            self._unpublish()
            with self.op_lock:
                # the supervisor's exit: a last scan for values retained in this process
                self.reclaim_quietly("reclaimed as the session ended")
                if not self._detach_target():
                    self.detach()
            self.closing = True  # _serve_conn stops the supervisor once this reply is sent
        return {"released": uid, "detached": not live}

    def _unpublish(self):
        """Remove the socket path so no new client finds a session that is closing."""
        try:
            os.unlink(self.p.sock)
        except FileNotFoundError:
            pass

    # -- serving --------------------------------------------------------------------------
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
        self._say_ready()
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

    def _say_ready(self):
        fd, self.ready_fd = self.ready_fd, None
        standby.say_ready(fd)
        lock, self.start_lock = self.start_lock, None
        if lock is not None:  # --resume: creators waiting on the per-pid lock now find us
            lock.close()

    def _serve_conn(self, conn: socket.socket):
        with self.active_lock:
            self.active += 1
        try:
            self._serve_one(conn)
        finally:
            with self.active_lock:
                self.active -= 1

    def _serve_one(self, conn: socket.socket):
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
    ap.add_argument("--standby", action="store_true")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--ready-fd", type=int, default=None)
    args = ap.parse_args(argv)
    if args.ready_fd is not None:
        os.set_inheritable(args.ready_fd, False)  # never into dlv's guardian
    pending = None
    if args.standby:
        p = paths.SessionPaths(args.home, args.pid)
        # dlv's guardian starts too (Python, a few ms to tens of ms), equally idle until told
        pending = prepare_guard(args.pid, p.dlv_log, record=p.dlv_pid, sock=p.dlv_sock)
        if not standby.wait_for_go():
            if pending:
                pending.cancel()
            return 0
    sup = Supervisor(args.pid, args.home)
    sup.ready_fd = args.ready_fd
    sup.pending = pending
    if args.resume:
        sup.resumed = True
        sup.start_lock = _resume_lock(sup)
        if sup.start_lock is None:
            return 0
    # Held until this process ends, however it ends: the next supervisor for this pid waits
    # for it, so two never overlap (a new dlv would meet the old one still detaching).
    life = open_private(sup.p.life, "a")
    fcntl.flock(life, fcntl.LOCK_EX)
    signal.signal(signal.SIGTERM, lambda *_: sup.stop.set())
    signal.signal(signal.SIGINT, lambda *_: sup.stop.set())
    try:
        sup.attach()
        sup.arm_recorded_deadlines()
    except Exception as e:
        code = e.code if isinstance(e, BladeError) else Code.OS_CMD_EXEC_FAILED
        write_private(sup.p.err, json.dumps({"code": code, "error": str(e)}))
        log(f"attach failed: {e}")
        return 1
    # Later creates on this process start warm (session/forkserver.py); it ends with us.
    warm = forkserver.start(args.home, args.pid, sup.p.log, standby.PACKAGE_ROOT)
    try:
        sup.serve()
    finally:
        forkserver.stop(warm)
        with sup.op_lock:
            sup.detach()
        log("supervisor exiting")
    return 0


def _resume_lock(sup: "Supervisor"):
    """--resume: the per-pid lock, held until we serve; None when there is nothing to do (a
    supervisor serves already, or no live experiment of this process has a deadline)."""
    load_site()
    from . import connect_session
    lock = open_private(sup.p.lock, "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    started = records.start_time(sup.pid)
    due = [r for r in records.live_records(sup.home, sup.pid) if r.get("deadline")
           and records.target_start_time(r) in (None, started)]
    if started is None or not due or connect_session(sup.pid, sup.home) is not None:
        log("resume: nothing to enforce (or another supervisor serves); exiting")
        lock.close()
        return None
    log(f"resumed to enforce {len(due)} deadline(s) of a supervisor that died")
    # The dead supervisor's guardian ends its dlv after a grace (guard.py: never at once);
    # attach only after that, or (its guardian gone too) end that dlv ourselves in attach().
    from .ownership import read_owner_record
    until = time.monotonic() + 90
    while time.monotonic() < until:
        rec = read_owner_record(sup.p.dlv_pid)
        if not rec or not records.process_alive(rec["dlv_pid"]):
            records.wait_untraced(sup.pid, 5)  # a dead tracer's threads are let go async.
            break
        if not records.process_alive(rec.get("guard_pid") or 0):
            break  # an orphan: attach() ends it
        time.sleep(0.05)
    return lock


if __name__ == "__main__":
    sys.exit(main())
