"""The supervisor's watch over its target and dlv, between requests (a mixin of Supervisor).

Every POLL seconds `monitor` checks whether the target exited (its experiments are then
recorded Destroyed with the exit status), whether dlv died while the target lives (dlv is
restarted once), whether the target stopped for any other reason (it is continued: never left
halted), and whether the supervisor has nothing left to do (it leaves: IDLE_EXIT); every
RECLAIM_EVERY seconds it scans for value caves retained in the process (reclaim.py).
"""
import time

from . import records

POLL = 0.1
IDLE_EXIT = 120.0  # no experiment ever arrived: detach instead of staying attached forever


def log(msg: str):
    now = time.time()
    print(time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}", msg,
          flush=True)


class Monitoring:
    """Uses the Supervisor's op_lock, client, dlv, uids, released, closing, stop, attach()
    and _end_dlv(); runs in its own thread."""

    def check_target(self):
        """Notice the target exiting or dlv dying between requests."""
        if not self.op_lock.acquire(timeout=POLL):
            return
        try:
            fut = self.client.pending_continue() if self.client else None
            if self.closing or self.dlv is None and self.client is None:
                return
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
        reason = records.exit_reason(self.pid, status)
        log(reason)
        for uid in self.uids | records.live_uids(self.home, self.pid):
            records.mark_destroyed(self.home, uid, reason)
        self.uids.clear()
        self._end_dlv(wait=5)  # nothing left to restore: a dlv that hangs is killed
        self.stop.set()

    def dlv_died(self):
        log("dlv died while the target lives")
        self._end_dlv(wait=5)
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


    def reclaim_now(self):
        """While attached anyway: every RECLAIM_EVERY seconds, a scan for retained values."""
        from .reclaim import RECLAIM_EVERY
        if self.closing or time.monotonic() - self.last_reclaim < RECLAIM_EVERY:
            return
        if not self.op_lock.acquire(blocking=False):
            return  # a request is running; next round
        try:
            self.last_reclaim = time.monotonic()
            self.reclaim_quietly("reclaimed while the session was attached")
        finally:
            self.op_lock.release()

    def monitor(self):
        while not self.stop.is_set():
            try:
                self.check_target()
                self.reclaim_now()
                with self.active_lock:
                    ending = self.closing and self.active == 0
                if ending:  # e.g. the last experiment timed out: nothing left to do
                    log("released and detached: leaving")
                    self.stop.set()
                elif self._idle_now():
                    log("no experiment arrived: leaving")
                    self.stop.set()
            except Exception as e:  # keep watching; a broken session is handled next round
                log(f"monitor: {e}")
            self.stop.wait(POLL)
