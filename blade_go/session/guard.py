"""dlv's guardian: the process that starts dlv, owns it, and ends it when its supervisor dies.

    python -I -S guard.py RECORD TARGET_PID -- DLV ARGV...   (stdin: a pipe from the supervisor)

0. wait for "go" on stdin from the supervisor (a supervisor in standby starts us early, while
   its creator still analyses); EOF or anything else first: exit, nothing started, no record;
1. fork; the child waits for "go" on a private pipe before exec-ing dlv (exec keeps its pid);
2. write the ownership record (dlv pid + start time, target pid + start time, supervisor and
   guard pids) atomically, then say "go": no dlv ever stops the target before a record names it;
   a guard killed before "go" leaves a child that reads EOF and exits without starting dlv;
3. wait. dlv ends first (a clean detach by its supervisor): exit. Stdin reaches EOF first (the
   supervisor died, however): after GRACE, SIGTERM dlv (it removes its breakpoints, detaches and
   resumes the target), wait for it, SIGCONT a target left stopped, remove the record;
4. deadlines (--timeout) outlive the supervisor: while it lives, the supervisor writes a line
   {"deadline": T, "resume": ARGV, "log": PATH} whenever its earliest deadline changes (T 0:
   none). At its death, with a deadline pending and the target alive, the guardian starts ARGV
   (a supervisor in --resume mode: it loads while the guardian ends dlv as above, attaches
   afresh once that dlv is gone, re-arms the recorded deadlines and enforces them on time,
   session/supervisor.py), so a timeout holds with no command run.

Why the grace: dlv halts the target with a signal while detaching; a SIGKILL landing in that
window leaves the signal pending and the Go target dies of it. When a whole controller is killed
at once, dlv dies with it within the grace and nothing starts a detach (see launcher.py).
Never SIGKILL a dlv whose target lives (its int3s would stay in the target's text).

Standard library only, run by path with -I -S: it starts in a few milliseconds.
"""
import json
import os
import select
import signal
import sys
import time

GRACE = 1.0
DETACH_WAIT = 60.0


def start_time(pid):
    """As procfs.start_time (this file runs alone): None for a process gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _tracer(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def write_record(path, rec):
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, json.dumps(rec).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def remove_record(path, dlv_pid):
    try:
        with open(path) as f:
            if json.load(f).get("dlv_pid") != dlv_pid:
                return
        os.unlink(path)
    except (OSError, ValueError, AttributeError):
        pass


def reaped(child, timeout):
    """True once child has exited (and is reaped) within timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, _ = os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def log(msg):
    print(time.strftime("%H:%M:%S"), "guard:", msg, file=sys.stderr, flush=True)


STANDBY_WAIT = 600.0


def wait_for_go():
    ready, _, _ = select.select([0], [], [], STANDBY_WAIT)
    return bool(ready) and os.read(0, 3) == b"go\n"


def main(argv):
    record, target = argv[0], int(argv[1])
    dlv_argv = argv[argv.index("--") + 1:]
    supervisor = os.getppid()
    if not wait_for_go():
        return 0  # the supervisor ended (or gave up) before asking for dlv: nothing to undo
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(w)
        go = os.read(r, 3)
        if go != b"go\n":
            os._exit(1)
        os.close(r)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)  # dlv must not hold the supervisor's pipe
        os.execv(dlv_argv[0], dlv_argv)
    os.close(r)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only the supervisor's death ends our watch
    write_record(record, {
        "dlv_pid": child, "dlv_start_time": start_time(child),
        "target_pid": target, "target_start_time": start_time(target),
        "supervisor_pid": supervisor, "supervisor_start_time": start_time(supervisor),
        "guard_pid": os.getpid(), "guard_start_time": start_time(os.getpid())})
    os.write(w, b"go\n")
    os.close(w)
    target_started = start_time(target)
    said = Said()
    while True:
        if reaped(child, 0):
            return 0  # ended by its supervisor (or died): nothing to do
        ready, _, _ = select.select([0], [], [], 0.2)
        if ready and not said.read(os.read(0, 4096)):
            break  # EOF: the supervisor is gone
    # A deadline pending: its enforcer starts now (Python loads while we wait out the grace)
    # and attaches only once this dlv has ended (supervisor.py --resume).
    said.resume_if_due(target, target_started)
    if reaped(child, GRACE):
        remove_record(record, child)
        return 0
    target_alive = start_time(target) == target_started
    log(f"supervisor {supervisor} is gone; ending dlv {child} (SIGTERM: it detaches)")
    os.kill(child, signal.SIGTERM)
    if not reaped(child, DETACH_WAIT):
        if target_alive and start_time(target) == target_started:
            log(f"dlv {child} does not end; left for the next blade-go command")
            return 1  # the record stays: the next command's sweep tries again
        os.kill(child, signal.SIGKILL)  # its target is gone: nothing to restore
        reaped(child, 5)
    remove_record(record, child)
    if start_time(target) == target_started:
        for _ in range(100):  # the kernel releases a dead tracer's threads asynchronously
            if _tracer(target) == 0:
                break
            time.sleep(0.05)
        if _state(target) in ("T", "t") and _tracer(target) == 0:
            log(f"target {target} was left stopped; resuming it")
            os.kill(target, signal.SIGCONT)
    return 0


class Said:
    """What the supervisor told us on stdin after "go": its earliest pending deadline."""

    def __init__(self):
        self.buf, self.last = b"", {}

    def read(self, data: bytes) -> bool:
        """Take data read from stdin; False at EOF."""
        if not data:
            return False
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict):
                self.last = msg
        return True

    def resume_if_due(self, target, target_started):
        """The supervisor died with a deadline pending: start the one that enforces it."""
        argv, deadline = self.last.get("resume"), self.last.get("deadline") or 0
        if not argv or not deadline or start_time(target) != target_started:
            return
        log(f"a deadline is pending ({deadline - time.time():.1f}s from now): starting "
            "a supervisor that enforces it")
        try:
            out = os.open(self.last["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT
                          | os.O_NOFOLLOW, 0o600)
        except (OSError, KeyError):
            out = os.open(os.devnull, os.O_WRONLY)
        null = os.open(os.devnull, os.O_RDONLY)
        if os.fork() == 0:  # its own session: it outlives us (we exit next)
            os.setsid()
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.chdir("/")
            try:
                os.execv(argv[0], argv)
            finally:
                os._exit(127)
        os.close(out)
        os.close(null)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
