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


def zombie_exit_status(pid: int):
    """A zombie's exit status as its parent will see it (exit code, or -signal), from
    /proc/PID/stat's exit_code; None when pid is not a zombie (gone, reaped, or alive)."""
    fields = _stat_fields(pid)
    if not fields or fields[0] != "Z" or len(fields) < 50:
        return None
    try:
        code = int(fields[49])  # field 52 of proc(5); the list starts at field 3
    except ValueError:
        return None
    return -(code & 0x7F) if code & 0x7F else (code >> 8) & 0xFF
