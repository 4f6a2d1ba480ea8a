"""How long to wait for dlv, scaled to the target's executable: a slow attach is slow, not failed.

dlv prints "API server listening at" before it attaches (the listener comes first); its first
answer comes only once it has loaded the executable and attached. Loading takes about 16 ms per
MB of executable on a quiet 2-CPU machine and several times that under load (docs/BENCHMARKS.md;
dlv answered an 82 MB Caddy only after 8.2 s on a busy VM), so a fixed deadline either fails
large binaries on a busy host or waits forever for a wedged dlv. The deadlines grow with the size:

    >>> first_answer_timeout(100_000_000)   # 100 MB
    70.0
    >>> first_answer_timeout(4_000_000)
    22.0
"""
import os

LISTEN_TIMEOUT = 30.0  # dlv's exec to its listening line: the binary is not read yet
ANSWER_BASE = 20.0  # first answer: fixed part ...
ANSWER_PER_MB = 0.5  # ... plus this per MB of executable (30x the quiet-machine load rate)


def exe_size(pid: int) -> int | None:
    """Size in bytes of the target's executable, None when unreadable."""
    try:
        return os.stat(f"/proc/{pid}/exe").st_size
    except OSError:
        return None


def first_answer_timeout(size: int | None) -> float:
    """Seconds from dlv's listening line to its first answer (attach and load included)."""
    return ANSWER_BASE + ANSWER_PER_MB * (size or 0) / 1e6


def session_start_timeout(size: int | None) -> float:
    """Seconds a create waits for a new supervisor: dlv's start, its attach, and a margin for
    the supervisor's own steps (clearing dlv's breakpoints, starting its socket)."""
    return LISTEN_TIMEOUT + first_answer_timeout(size) + 30.0


def load_average() -> str:
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"
