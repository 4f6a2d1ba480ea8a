"""Finding the right dlv, checking we may trace the target, and starting `dlv attach`.

Failures are turned into chaosblade errors that say why (not root, ptrace_scope, another tracer,
no such process, not a Go program) instead of dlv's raw output.
"""
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass

from .. import procfs
from ..errors import BladeError, Code
from ..state import open_private

# Where .ci/install.sh puts its builds (build/toolchains.env TOOLS_DIR; BLADE_GO_TOOLS_DIR as there).
TOOLS = os.environ.get("BLADE_GO_TOOLS_DIR") or "/opt/blade-go-tools"
EM_386, EM_X86_64, EM_AARCH64 = 3, 62, 183
LISTENING = re.compile(r"API server listening at:\s*(\S+)")
# dlv before 1.21 has no unix listener; it says so before attaching (nothing was stopped).
NO_UNIX_LISTENER = re.compile(r"couldn't start listener.*(unknown port|missing port|address tcp)")


def target_machine(pid: int) -> int:
    """ELF e_machine of the target's executable (tells which dlv can trace it)."""
    try:
        with open(f"/proc/{pid}/exe", "rb") as f:
            head = f.read(20)
    except FileNotFoundError:
        raise BladeError(Code.PROCESS_NOT_EXIST, f"process {pid} does not exist") from None
    except PermissionError:
        raise BladeError(Code.FORBIDDEN, f"cannot read /proc/{pid}/exe: permission denied "
                                         "(blade-go must run as root or as the target's user)") from None
    if head[:4] != b"\x7fELF":
        raise BladeError(Code.PARAMETER_INVALID, f"process {pid} is not an ELF program")
    return int.from_bytes(head[18:20], "little")


def check_go_program(pid: int):
    """Refuse targets that are not Go programs (dlv >= 1.21 would attach to any ELF)."""
    try:
        names = procfs.exe_section_names(pid)
    except FileNotFoundError:
        raise BladeError(Code.PROCESS_NOT_EXIST, f"process {pid} does not exist") from None
    except (ValueError, OSError) as e:
        raise BladeError(Code.PARAMETER_INVALID, f"process {pid}: unreadable executable: {e}") from None
    if not names & {".go.buildinfo", ".gopclntab", ".data.rel.ro.gopclntab"}:
        exe = os.path.realpath(f"/proc/{pid}/exe")
        raise BladeError(Code.PARAMETER_INVALID, f"process {pid} ({exe}) is not a Go program")


def _pinned(key: str, default: str) -> str:
    """A version from build/toolchains.env (the one place versions are pinned), when this is a
    source checkout; installed packages fall back to `default`."""
    env = os.path.join(os.path.dirname(__file__), "..", "..", "build", "toolchains.env")
    try:
        for line in open(env):
            if line.startswith(key + "="):
                return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return default


# A wheel built by setup.py carries the dlv blade-go is tested with here (amd64 only).
BUNDLED_DLV = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_bin",
                           "dlv")


def bundled_dlv():
    """The dlv shipped inside this installation (a wheel), else None (a source checkout)."""
    return BUNDLED_DLV if os.path.isfile(BUNDLED_DLV) else None


def find_dlv(machine: int = EM_X86_64) -> str:
    """dlv for the target's architecture: a 386 target needs a 386 dlv.

    amd64, first found: $BLADE_GO_DLV (an explicit choice, never replaced), the dlv bundled in
    the wheel (blade_go/_bin/dlv), `dlv` on PATH, $BLADE_GO_TOOLS_DIR/bin/dlv (default
    /opt/blade-go-tools, where .ci/install.sh builds it).
    """
    version = _pinned("DLV_VERSION", "latest")
    if machine == EM_386:
        var, found = "BLADE_GO_DLV_386", [f"{TOOLS}/bin386/dlv", f"{TOOLS}/delve-386/usr/bin/dlv"]
        hint = ("dlv for 386 targets not found: set BLADE_GO_DLV_386 or build one with "
                f"`GOARCH=386 CGO_ENABLED=0 go install github.com/go-delve/delve/cmd/dlv@{version}`")
    else:
        var, found = "BLADE_GO_DLV", [bundled_dlv(), shutil.which("dlv"), f"{TOOLS}/bin/dlv"]
        hint = (f"dlv not found: install it with `go install github.com/go-delve/delve/cmd/dlv@"
                f"{version}` (from a blade-go checkout: `build/dlv.sh`), or install blade-go's "
                "wheel, which carries one, or set BLADE_GO_DLV to its path")
    chosen = os.environ.get(var)
    if chosen:  # an explicit choice is never silently replaced by another dlv
        if os.path.isfile(chosen) and os.access(chosen, os.X_OK):
            return chosen
        raise BladeError(Code.COMMAND_NOT_FOUND, f"{var}={chosen} is not an executable file; "
                                                 + hint)
    for path in found:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise BladeError(Code.COMMAND_NOT_FOUND, hint)


def _status_field(pid: int, name: str) -> str | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except FileNotFoundError:
        raise BladeError(Code.PROCESS_NOT_EXIST, f"process {pid} does not exist") from None
    return None


def check_traceable(pid: int):
    """Refuse early, with the reason, when ptrace attach cannot work."""
    if not os.path.exists(f"/proc/{pid}"):
        raise BladeError(Code.PROCESS_NOT_EXIST, f"process {pid} does not exist")
    tracer = int(_status_field(pid, "TracerPid") or 0)
    if tracer:
        # TracerPid names the tracing *thread*; users know the process (its thread group).
        try:
            tracer = int(_status_field(tracer, "Tgid") or tracer)
            name = _status_field(tracer, "Name") or "?"
        except BladeError:  # the tracer ended meanwhile
            name = "?"
        raise BladeError(Code.FORBIDDEN, f"permission denied: process {pid} is already traced by "
                                         f"another tracer (pid {tracer}, {name}); only one tracer "
                                         f"may attach")
    try:
        scope = int(open("/proc/sys/kernel/yama/ptrace_scope").read().strip())
    except (OSError, ValueError):
        scope = 0
    if os.geteuid() != 0:
        if scope >= 2:
            raise BladeError(Code.FORBIDDEN, f"permission denied: kernel.yama.ptrace_scope={scope} "
                                             "allows ptrace attach only for root")
        if scope == 1:
            raise BladeError(Code.FORBIDDEN, "permission denied: kernel.yama.ptrace_scope=1 allows "
                                             "attaching only to descendants; run blade-go as root")
        uid = int((_status_field(pid, "Uid") or "0").split()[1])
        if uid != os.geteuid():
            raise BladeError(Code.FORBIDDEN, f"permission denied: process {pid} belongs to uid "
                                             f"{uid}; run blade-go as root")
    if scope == 3:
        raise BladeError(Code.FORBIDDEN, "permission denied: kernel.yama.ptrace_scope=3 forbids "
                                         "every ptrace attach (until reboot)")


def explain_failure(pid: int, output: str) -> BladeError:
    """Map dlv's startup output to a chaosblade error."""
    low = output.lower()
    tail = output.strip().splitlines()[-1] if output.strip() else "no output"
    if "no such process" in low or not os.path.exists(f"/proc/{pid}"):
        return BladeError(Code.PROCESS_NOT_EXIST, f"process {pid} does not exist")
    if "operation not permitted" in low or "permission denied" in low:
        return BladeError(Code.FORBIDDEN, f"permission denied attaching to {pid}: {tail}")
    if "could not find" in low and ("debug" in low or "dwarf" in low) or "no debug info" in low \
            or "not a go" in low or "could not read debug info" in low or "decoding dwarf" in low:
        return BladeError(Code.PARAMETER_INVALID, f"process {pid} is not a Go program with debug "
                                                  f"information (DWARF): {tail}")
    return BladeError(Code.OS_CMD_EXEC_FAILED, f"dlv failed to attach to {pid}: {tail}")


# -- ownership of dlv ---------------------------------------------------------------------------
# Every dlv is started by its guardian (guard.py): the ownership record (dlv pid + start time,
# target, supervisor) is on disk in the 0700 session directory before dlv may attach, and when
# the supervisor dies, however, the guardian ends dlv cleanly after a short grace (the target
# resumes, dlv's breakpoints go). A guardian killed too leaves the record: the next blade-go
# command's sweep ends that dlv (end_orphan_dlv).
#
# No PR_SET_PDEATHSIG on purpose: dlv must never start a detach at the instant the supervisor
# dies. dlv halts the target with a signal while detaching; a SIGKILL landing in that window (a
# controller killed as a whole) leaves the signal pending and the Go target dies of it.
GUARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guard.py")
SESSION_DIR_ENV = "BLADE_GO_SESSION_DIR"  # in dlv's environment: names its owner (tests, sweeps)

from .ownership import (end_orphan_dlv, read_owner_record, reap_orphan_dlv,  # noqa: E402,F401
                        remove_owner_record, resume_if_left_stopped, wait_gone)


@dataclass
class DlvProcess:
    guard: subprocess.Popen  # its stdin stays open while we live: EOF tells it we are gone
    pid: int  # dlv's
    address: str  # "unix:PATH" or "HOST:PORT"
    path: str
    note: str = ""  # why not a unix socket, when not

    @property
    def port(self) -> int | None:
        return None if self.address.startswith("unix:") else int(self.address.rsplit(":", 1)[1])

    @property
    def transport(self) -> str:
        return "unix" if self.address.startswith("unix:") else "tcp"

    def alive(self) -> bool:
        return procfs.alive(self.pid)

    def terminate(self):
        """SIGTERM: dlv detaches (removes its breakpoints, the target resumes) and exits."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)

    def kill(self):
        """Only for a dlv whose target is gone (or that never attached)."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        wait_gone(self.pid, 5)
        self.close()

    def close(self):
        """Forget the guardian (call once dlv has ended; the guardian then exits too)."""
        _close_stdin_and_wait(self.guard)


def dlv_argv(dlv: str, pid: int, listen: str) -> list[str]:
    """The dlv command line (one place, so options are added here)."""
    return [dlv, "attach", str(pid), "--headless", "--accept-multiclient", "--api-version=2",
            "--check-go-version=false", f"--listen={listen}"]


class PendingGuard:
    """A guardian started ahead of need (by a standby supervisor): Python started, waiting for
    "go" on its stdin before it forks dlv; closing its stdin ends it, nothing started."""

    def __init__(self, pid: int, dlv: str, log_path: str, record: str, sock: str):
        self.key = (pid, dlv, log_path, record, sock)
        self.log = open_private(log_path, "ab+")
        self.log_start = self.log.seek(0, os.SEEK_END)
        self.guard = _spawn_guard(pid, dlv_argv(dlv, pid, f"unix:{os.path.basename(sock)}"),
                                  record, self.log, cwd=os.path.dirname(sock))

    def cancel(self):
        _close_stdin_and_wait(self.guard)  # EOF before go: it exits having started nothing
        self.log.close()


def _close_stdin_and_wait(guard: subprocess.Popen, timeout: float = 5):
    """EOF on a guardian's stdin ends it (its dlv too, if it started one); wait briefly."""
    try:
        guard.stdin.close()
    except OSError:
        pass
    try:
        guard.wait(timeout)
    except subprocess.TimeoutExpired:
        pass


def prepare_guard(pid: int, log_path: str, *, record: str, sock: str) -> PendingGuard | None:
    """Start the guardian of a later launch_dlv(pid, log_path, record=, sock=) now; None when
    the checks fail (launch_dlv raises the same error then) or it cannot start."""
    try:
        machine = target_machine(pid)
        check_go_program(pid)
        return PendingGuard(pid, find_dlv(machine), log_path, record, sock)
    except Exception:
        return None


def launch_dlv(pid: int, log_path: str, timeout: float = 30.0, *, record: str | None = None,
               sock: str | None = None, pending: PendingGuard | None = None) -> DlvProcess:
    """Start a headless dlv attached to pid, under its guardian.

    sock: a unix socket path for dlv's API (in the 0700 session directory); without it, or when
    this dlv has no unix listener (before 1.21), loopback TCP on a free port, said in .note.
    record: the ownership record's path (default: beside log_path).
    pending: a guardian prepare_guard() started for these same arguments (used, or ended).
    """
    try:
        check_traceable(pid)
        machine = target_machine(pid)
        check_go_program(pid)
        dlv = find_dlv(machine)
    except BaseException:
        if pending:
            pending.cancel()
        raise
    record = record or log_path + ".owner"
    if pending and pending.key != (pid, dlv, log_path, record, sock):
        pending.cancel()
        pending = None
    note = ""
    if sock:
        try:
            os.unlink(sock)
        except FileNotFoundError:
            pass
        # Relative to dlv's working directory: a unix socket path is limited to 107 bytes.
        try:
            return _start(pid, dlv, f"unix:{os.path.basename(sock)}", log_path, timeout,
                          record, cwd=os.path.dirname(sock), sock=sock, pending=pending)
        except _NoUnixListener:
            note = (f"dlv {dlv} cannot listen on a unix socket (dlv < 1.21): its API listens on "
                    "TCP 127.0.0.1, reachable by every process of the same uid in this network "
                    "namespace")
    proc = _start(pid, dlv, "127.0.0.1:0", log_path, timeout, record)
    proc.note = note
    return proc


class _NoUnixListener(Exception):
    pass


def _wait_record(record: str, guard: subprocess.Popen, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        rec = read_owner_record(record)
        if rec and rec.get("guard_pid") == guard.pid:
            return rec
        if guard.poll() is not None or time.monotonic() > deadline:
            raise BladeError(Code.OS_CMD_EXEC_FAILED, "the dlv guardian did not start dlv "
                                                      f"(status {guard.poll()})")
        time.sleep(0.005)


# dlv's heap after loading a 68 MB executable is about 100 MB; with Go's default GOGC=100 its
# peak RSS is twice that. GOGC=50 cut the peak from 199 to 162 MB at the same load time
# (bench/dlv_memory.py, docs/BENCHMARKS.md). Only for a dlv that loads before it stops the
# target (dlvinfo "preload"): with a stock dlv the load time is the target's pause.
DLV_GOGC = "50"


def _spawn_guard(pid, argv, record, log, cwd) -> subprocess.Popen:
    import sys
    from . import dlvinfo
    env = dict(os.environ)
    env[SESSION_DIR_ENV] = os.path.dirname(record)
    if "GOGC" not in env and dlvinfo.describe(argv[0]).get("preload"):
        env["GOGC"] = DLV_GOGC
    return subprocess.Popen([sys.executable, "-I", "-S", GUARD, record, str(pid), "--", *argv],
                            stdin=subprocess.PIPE, stdout=log, stderr=log, cwd=cwd, env=env,
                            process_group=0)


def _start(pid, dlv, listen, log_path, timeout, record, cwd="/", sock=None,
           pending=None) -> DlvProcess:
    if pending:
        log, start, guard = pending.log, pending.log_start, pending.guard
    else:
        # Output goes to a file, not a pipe: dlv keeps writing after startup and a full pipe
        # would block it while it holds the target stopped.
        log = open_private(log_path, "ab+")
        start = log.seek(0, os.SEEK_END)
        guard = _spawn_guard(pid, dlv_argv(dlv, pid, listen), record, log, cwd)
    try:
        try:
            guard.stdin.write(b"go\n")  # the guardian writes the record, then starts dlv
            guard.stdin.flush()
        except OSError:
            pass  # it died: _wait_record says so
        rec = _wait_record(record, guard)
    except BaseException:
        guard.stdin.close()  # dlv was never told to start, or ends through its guardian
        log.close()
        raise
    proc = DlvProcess(guard, rec["dlv_pid"], "", dlv)
    deadline = time.monotonic() + timeout
    try:
        while True:
            log.seek(start)
            out = log.read().decode(errors="replace")
            m = LISTENING.search(out)
            if m:
                proc.address = f"unix:{sock}" if sock else m.group(1)
                return proc
            if not proc.alive():
                # What it wrote just before it died may have come after our read above.
                log.seek(start)
                out = log.read().decode(errors="replace")
                proc.close()
                remove_owner_record(record, proc.pid)
                if sock and NO_UNIX_LISTENER.search(out):
                    raise _NoUnixListener(out)
                raise explain_failure(pid, out)
            if time.monotonic() > deadline:
                proc.terminate()  # SIGTERM: dlv detaches if it attached meanwhile
                if wait_gone(proc.pid, 10):
                    remove_owner_record(record, proc.pid)
                proc.close()
                from .deadlines import load_average
                raise BladeError(Code.OS_CMD_EXEC_FAILED,
                                 f"dlv {dlv} did not start listening within {timeout:.0f}s "
                                 f"(its own start, before it reads the target; load average "
                                 f"{load_average()}): the host is too busy; retry")
            time.sleep(0.005)  # a few bytes of log read: cheap; every ms here delays the attach
    finally:
        log.close()
