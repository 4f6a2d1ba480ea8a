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

from ..errors import BladeError, Code

TOOLS = "/opt/blade-go-tools"
EM_386, EM_X86_64, EM_AARCH64 = 3, 62, 183
LISTENING = re.compile(r"API server listening at:\s*\S+:(\d+)")


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
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    try:
        with open(f"/proc/{pid}/exe", "rb") as f:
            names = {s.name for s in ELFFile(f).iter_sections()}
    except FileNotFoundError:
        raise BladeError(Code.PROCESS_NOT_EXIST, f"process {pid} does not exist") from None
    except ELFError as e:
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


def find_dlv(machine: int = EM_X86_64) -> str:
    """dlv for the target's architecture: a 386 target needs a 386 dlv."""
    version = _pinned("DLV_VERSION", "latest")
    if machine == EM_386:
        var, found = "BLADE_GO_DLV_386", [f"{TOOLS}/bin386/dlv", f"{TOOLS}/delve-386/usr/bin/dlv"]
        hint = ("dlv for 386 targets not found: set BLADE_GO_DLV_386 or build one with "
                f"`GOARCH=386 CGO_ENABLED=0 go install github.com/go-delve/delve/cmd/dlv@{version}`")
    else:
        var, found = "BLADE_GO_DLV", [shutil.which("dlv"), f"{TOOLS}/bin/dlv"]
        hint = (f"dlv not found: install it with `go install github.com/go-delve/delve/cmd/dlv@"
                f"{version}` (or `bash .ci/install.sh`), or set BLADE_GO_DLV to its path")
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


def _own_process_group():
    # No PR_SET_PDEATHSIG on purpose: dlv must never start a detach on its own when the
    # supervisor dies. dlv halts the target with a signal while detaching; a SIGKILL landing
    # in that window (a controller killed as a whole) leaves the signal pending and the Go
    # target dies of it. An orphaned dlv just keeps the target running; the next supervisor
    # for this pid ends it with a clean SIGTERM detach and waits for it (reap_orphan_dlv).
    os.setpgrp()


def reap_orphan_dlv(pid: int, pid_file: str, wait: float = 20.0) -> int | None:
    """End the dlv a dead supervisor left attached to pid; returns its pid, or None."""
    try:
        dlv_pid = int(open(pid_file).read().strip())
        cmd = open(f"/proc/{dlv_pid}/cmdline", "rb").read().split(b"\0")
    except (OSError, ValueError):
        return None
    if not (cmd and b"dlv" in os.path.basename(cmd[0]) and b"attach" in cmd
            and str(pid).encode() in cmd):
        return None  # the pid was reused by something else
    os.kill(dlv_pid, signal.SIGTERM)  # dlv detaches cleanly on SIGTERM
    deadline = time.monotonic() + wait
    while os.path.exists(f"/proc/{dlv_pid}") and _status_field(dlv_pid, "State") not in (None,) \
            and not (_status_field(dlv_pid, "State") or "").startswith("Z"):
        if time.monotonic() > deadline:
            raise BladeError(Code.UNEXPECTED_STATUS,
                             f"an earlier dlv (pid {dlv_pid}) attached to {pid} does not detach; "
                             "not touching the target while it may be mid-detach")
        time.sleep(0.05)
    return dlv_pid


@dataclass
class DlvProcess:
    proc: subprocess.Popen
    port: int
    path: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.kill()
        self.proc.wait()


def launch_dlv(pid: int, log_path: str, timeout: float = 30.0) -> DlvProcess:
    """Start a headless dlv attached to pid, listening on a free loopback port."""
    check_traceable(pid)
    machine = target_machine(pid)
    check_go_program(pid)
    dlv = find_dlv(machine)
    argv = [dlv, "attach", str(pid), "--headless", "--accept-multiclient", "--api-version=2",
            "--check-go-version=false", "--listen=127.0.0.1:0"]
    # Output goes to a file, not a pipe: dlv keeps writing after startup and a full pipe would
    # block it while it holds the target stopped.
    log = open(log_path, "ab+")
    start = log.seek(0, os.SEEK_END)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            preexec_fn=_own_process_group)
    deadline = time.monotonic() + timeout
    try:
        while True:
            log.seek(start)
            out = log.read().decode(errors="replace")
            m = LISTENING.search(out)
            if m:
                return DlvProcess(proc, int(m.group(1)), dlv)
            if proc.poll() is not None:
                raise explain_failure(pid, out)
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise BladeError(Code.OS_CMD_EXEC_FAILED,
                                 f"dlv did not start listening within {timeout:.0f}s")
            time.sleep(0.02)
    finally:
        log.close()
