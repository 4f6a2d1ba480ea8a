"""The few /proc/PID/stat facts several layers need, parsed in one place.

Fields after the command name (which may itself contain spaces and parentheses) are split
from the last ')'.
"""


def _stat_fields(pid: int):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def state(pid: int):
    """One-letter process state (R, S, T, Z, ...), or None when there is no such process."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def alive(pid: int) -> bool:
    return state(pid) not in (None, "Z", "X")


def start_time(pid: int):
    """Start time in clock ticks since boot: with the pid, it names one process (pids are
    reused). None when there is no such process."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None
