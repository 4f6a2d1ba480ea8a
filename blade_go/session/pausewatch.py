"""Measuring how long dlv's attach keeps the target stopped (the create reports it).

A thread samples the state of every thread of the target (/proc/PID/task/*/stat, field 3)
every millisecond while dlv attaches: PTRACE_ATTACH puts a thread in tracing stop ('t') and it
stays there until the supervisor's first `continue` reaches it. dlv attaches the main thread
first and the others one by one, so two spans are reported, both measured to within a sample
(about 1 ms, more when the host is busy), not estimated from dlv's timings:
- attach_ms: from the first sample with any thread stopped to the first sample after the
  `continue` with none stopped (the longest any thread of the target waited);
- attach_all_stopped_ms: while every thread was stopped (what every goroutine felt).

    w = AttachPauseWatch(pid)        # before dlv is started
    ... dlv attaches, the supervisor clears breakpoints ...
    w.resume_sent()                  # right after Command{continue} was sent
    w.result()                       # {"attach_ms": 18.4, "attach_all_stopped_ms": 12.0, ...}
"""
import os
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


def stopped_threads(pid: int) -> tuple[int, int] | None:
    """(threads in tracing stop, threads) of pid; None when it is gone."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    states = [thread_state_of(f"/proc/{pid}/task/{tid}/stat") for tid in tids]
    states = [s for s in states if s is not None]
    return (states.count("t"), len(states)) if states else None


def thread_state_of(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    i = data.rfind(b")")
    return chr(data[i + 2]) if i > 0 and len(data) > i + 2 else None


class AttachPauseWatch:
    def __init__(self, pid: int, limit: float = 900.0):
        self.pid, self.limit = pid, limit
        self.stopped_at: float | None = None  # first sample with a thread stopped
        self.resumed_at: float | None = None  # first sample after continue with none
        self.all_at: float | None = None  # first sample with every thread stopped
        self.all_until: float | None = None  # first sample after that with one running
        self.samples = 0
        self._resume_sent = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="attach-pause", daemon=True)
        self._thread.start()

    def _run(self):
        end = time.monotonic() + self.limit
        while not self._done.is_set() and time.monotonic() < end:
            seen = stopped_threads(self.pid)
            now = time.monotonic()
            self.samples += 1
            if seen is None:
                break  # the target is gone
            stopped, total = seen
            if stopped and self.stopped_at is None:
                self.stopped_at = now
            if stopped == total and self.all_at is None:
                self.all_at = now
            elif stopped < total and self.all_at is not None and self.all_until is None:
                self.all_until = now
            if not stopped and self.stopped_at is not None and self._resume_sent.is_set():
                self.resumed_at = now
                break
            time.sleep(SAMPLE)
        self._done.set()

    def resume_sent(self):
        self._resume_sent.set()

    def cancel(self):
        self._done.set()

    def result(self, wait: float = 2.0) -> dict:
        """{"attach_ms", "attach_all_stopped_ms", "resolution_ms"}; attach_ms None (with
        "note") when not seen."""
        self._done.wait(wait)
        if self.stopped_at is None or self.resumed_at is None:
            self._done.set()
            return {"attach_ms": None, "note": "the target's threads were not seen in tracing "
                    "stop and resumed (sampled /proc/PID/task/*/stat)"}
        out = {"attach_ms": round((self.resumed_at - self.stopped_at) * 1000, 1)}
        if self.all_at is not None:
            until = self.all_until or self.resumed_at
            out["attach_all_stopped_ms"] = round((until - self.all_at) * 1000, 1)
        out["resolution_ms"] = SAMPLE * 1000
        return out
