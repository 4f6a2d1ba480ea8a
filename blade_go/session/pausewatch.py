"""Measuring how long dlv's attach keeps the target stopped (the create reports it).

A thread samples the state of the target's main thread (/proc/PID/stat, field 3) every
millisecond while dlv attaches: PTRACE_ATTACH puts it in tracing stop ('t') and it stays there
until the supervisor's first `continue` reaches it. The pause is the time from the first 't'
sample to the first sample after `continue` that is no longer 't': measured, to within a
sample (about 1 ms, more when the host is busy), not estimated from dlv's timings.

    w = AttachPauseWatch(pid)        # before dlv is started
    ... dlv attaches, the supervisor clears breakpoints ...
    w.resume_sent()                  # right after Command{continue} was sent
    w.result()                       # {"attach_ms": 18.4, "resolution_ms": 1.0}
"""
import threading
import time

SAMPLE = 0.001


def thread_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # "pid (comm) S ...": comm may hold spaces and parentheses; the state follows the last ')'
    i = data.rfind(b")")
    return chr(data[i + 2]) if i > 0 and len(data) > i + 2 else None


class AttachPauseWatch:
    def __init__(self, pid: int, limit: float = 900.0):
        self.pid, self.limit = pid, limit
        self.stopped_at: float | None = None
        self.resumed_at: float | None = None
        self.samples = 0
        self._resume_sent = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="attach-pause", daemon=True)
        self._thread.start()

    def _run(self):
        end = time.monotonic() + self.limit
        while not self._done.is_set() and time.monotonic() < end:
            state = thread_state(self.pid)
            now = time.monotonic()
            self.samples += 1
            if state is None:
                break  # the target is gone
            if state == "t" and self.stopped_at is None:
                self.stopped_at = now
            elif state != "t" and self.stopped_at is not None and self._resume_sent.is_set():
                self.resumed_at = now
                break
            time.sleep(SAMPLE)
        self._done.set()

    def resume_sent(self):
        self._resume_sent.set()

    def cancel(self):
        self._done.set()

    def result(self, wait: float = 2.0) -> dict:
        """{"attach_ms", "resolution_ms"}; attach_ms None (with "note") when not seen."""
        self._done.wait(wait)
        if self.stopped_at is None or self.resumed_at is None:
            self._done.set()
            return {"attach_ms": None, "note": "the target's main thread was not seen in "
                    "tracing stop and resumed (sampled /proc/PID/stat)"}
        return {"attach_ms": round((self.resumed_at - self.stopped_at) * 1000, 1),
                "resolution_ms": SAMPLE * 1000}
