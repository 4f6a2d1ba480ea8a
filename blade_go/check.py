"""`blade-go check [--pid P]`: can blade-go work here, and on this process?

Every check is read from the machine as it is now (no experiment is created, nothing is
written): which dlv would run and what it is, whether this process may ptrace (yama, the
capability, seccomp, a real PTRACE_SEIZE of a child), the state directory's trust, the kernel;
with --pid, the target's executable (Go version, ABI, PIE, DWARF), its tracer, its namespace and
container, and the pause to expect when dlv attaches. Each check is

    {"name": "ptrace", "status": "ok" | "warn" | "fail", "detail": "...", "fix": "..."}

`fix` says what to do, for "warn" and "fail". The command's Response is success when nothing
failed (warnings listed); else code and error name the first failure and `result` still holds
the whole report:

    $ blade-go check --pid 4242
    {"code": 200, "success": true, "result": {"ok": true, "checks": [
      {"name": "dlv", "status": "ok", "detail": "/opt/blade-go-tools/bin/dlv: dlv 1.27.2 (stock)",
       ...}, ...], "environment": {...}, "process": {"pid": 4242, "go_version": "go1.26.8", ...}}}
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import signal
import subprocess
import time
from dataclasses import dataclass, field

from .errors import BladeError, Code

CAP_SYS_PTRACE = 19
PTRACE_SEIZE = 0x4206
SECCOMP_MODES = {0: "disabled", 1: "strict", 2: "filter"}
SUPPORTED_MACHINES = ("x86_64", "i386", "i686", "aarch64")

# The pause a client of the target sees while the stock dlv attaches grows with the executable:
# it stops every thread, then reads the file (DWARF most of all) before it answers. Milliseconds
# per MB of executable, from docs/BENCHMARKS.md "How long is the target paused?" (dlv 1.27.2,
# 68 and 100 MB programs, 2-vCPU AMD EPYC): with DWARF 14.4-16.7, a copy without DWARF 4.7-5.1;
# at least about 100 ms for a small program (a bare attach's longest pause on 3.8 MB: 104 ms).
PAUSE_MS_PER_MB = {True: (14.4, 16.7), False: (4.7, 5.1)}
PAUSE_FLOOR_MS = 100
# The patched dlv (dlvinfo kind "patched", preload on) loads before it stops the target: its first
# create paused a client 39-204 ms (medians) on 3.8-100 MB and 291 ms on Caddy (82 MB) on a busy
# 2-vCPU host, whatever the size (docs/BENCHMARKS.md, "The dlv blade-go installs (patched)
# against a stock dlv").
PRELOAD_PAUSE_MS = (40, 300)


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""
    code: int = Code.OK  # the chaosblade code a failure maps to

    def to_json(self) -> dict:
        out = {"name": self.name, "status": self.status, "detail": self.detail}
        if self.fix:
            out["fix"] = self.fix
        return out


@dataclass
class Report:
    checks: list = field(default_factory=list)
    environment: dict = field(default_factory=dict)
    process: dict | None = None

    def add(self, *args, **kw) -> Check:
        c = Check(*args, **kw)
        self.checks.append(c)
        return c

    @property
    def failures(self) -> list:
        return [c for c in self.checks if c.status == "fail"]

    def to_json(self) -> dict:
        out = {"ok": not self.failures, "checks": [c.to_json() for c in self.checks],
               "environment": self.environment}
        if self.process is not None:
            out["process"] = self.process
        return out


# -- /proc helpers -------------------------------------------------------------------------------

def status_fields(pid: int | str = "self") -> dict:
    """/proc/PID/status as name -> value text (FileNotFoundError when the process is gone)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, sep, value = line.partition(":")
            if sep:
                out[key] = value.strip()
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def yama_scope() -> int | None:
    """kernel.yama.ptrace_scope, None when the kernel has no Yama."""
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def has_cap_ptrace(fields: dict) -> bool:
    return bool(int(fields.get("CapEff", "0"), 16) >> CAP_SYS_PTRACE & 1)


def ptrace_probe() -> tuple[bool, str]:
    """Try PTRACE_SEIZE on a child of ours (a fork that only sleeps): allowed by yama at every
    scope below 3 and by the uid check, so a refusal means seccomp, a missing capability in a
    user namespace or scope 3. Returns (allowed, why not)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.ptrace.restype = ctypes.c_long
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    child = os.fork()
    if child == 0:  # pragma: no cover - the child only waits to be killed
        try:
            time.sleep(30)
        finally:
            os._exit(0)
    try:
        rc = libc.ptrace(PTRACE_SEIZE, child, None, None)
        err = ctypes.get_errno()
    finally:
        os.kill(child, signal.SIGKILL)  # ends the tracing with it
        os.waitpid(child, 0)
    if rc == 0:
        return True, ""
    return False, f"PTRACE_SEIZE of a child process failed: {errno.errorcode.get(err, err)} " \
                  f"({os.strerror(err)})"


# -- environment -----------------------------------------------------------------------------

def check_dlv(rep: Report):
    from .session import dlvinfo
    from .session.launcher import _pinned, find_dlv
    pinned = _pinned("DLV_VERSION", "").lstrip("v")
    try:
        path = find_dlv()
    except BladeError as e:
        rep.environment["dlv"] = None
        rep.add("dlv", "fail", e.message.split(":", 1)[0],
                fix=e.message.split(": ", 1)[-1] if ": " in e.message else e.message,
                code=e.code)
        return
    info = dlvinfo.describe(path)
    if info.get("error") or not info.get("version"):
        rep.environment["dlv"] = {"path": path}
        rep.add("dlv", "fail", f"{path} does not run: "
                f"{info.get('error') or '`dlv version` names no version'}",
                fix="replace it with a working dlv (build/setup.sh builds one), or point "
                    "BLADE_GO_DLV at one", code=Code.COMMAND_NOT_FOUND)
        return
    info["chosen_by"] = _dlv_source(path)
    rep.environment["dlv"] = info
    detail = f"{path}: dlv {info['version']} ({info['kind']}; {info['chosen_by']})"
    base = info["version"].split("-")[0].split("+")[0]  # a patched build's suffix aside
    if pinned and base != pinned:
        rep.add("dlv", "warn", detail + f"; blade-go is tested with dlv {pinned}",
                fix=f"use dlv {pinned} (build/setup.sh builds it; BLADE_GO_DLV names it)")
    else:
        rep.add("dlv", "ok", detail)


def _dlv_source(path: str) -> str:
    from .session import launcher
    if os.environ.get("BLADE_GO_DLV"):
        return "BLADE_GO_DLV"
    if path == launcher.bundled_dlv():
        return "bundled with blade-go"
    return "PATH" if os.path.dirname(path) in os.environ.get("PATH", "").split(os.pathsep) \
        else launcher.TOOLS + "/bin (.ci/install.sh)"


def check_ptrace(rep: Report):
    me = status_fields()
    scope = yama_scope()
    cap = has_cap_ptrace(me)
    seccomp = int(me.get("Seccomp", "0") or 0)
    allowed, why = ptrace_probe()
    rep.environment.update({
        "euid": os.geteuid(), "yama_ptrace_scope": scope, "cap_sys_ptrace": cap,
        "seccomp": SECCOMP_MODES.get(seccomp, str(seccomp)),
        "seccomp_filters": int(me.get("Seccomp_filters", "0") or 0),
        "no_new_privs": me.get("NoNewPrivs") == "1", "ptrace_probe": allowed})
    yama = "no Yama" if scope is None else f"kernel.yama.ptrace_scope={scope}"
    facts = (f"{yama}; CAP_SYS_PTRACE {'in' if cap else 'not in'} the effective set; "
             f"seccomp {SECCOMP_MODES.get(seccomp, seccomp)}")
    if not allowed:
        if scope == 3:
            fix = "ptrace_scope=3 forbids every attach until reboot: boot with a lower value"
        elif seccomp == 2:
            fix = ("a seccomp filter refuses ptrace (a container's profile): run the container "
                   "with a profile that allows ptrace (e.g. docker --security-opt "
                   "seccomp=unconfined, or Kubernetes securityContext.seccompProfile "
                   "Unconfined) and CAP_SYS_PTRACE")
        else:
            fix = _grant_cap()
        rep.add("ptrace", "fail", f"ptrace is not allowed: {why}; {facts}", fix=fix,
                code=Code.FORBIDDEN)
        return
    if cap:
        if scope == 3:
            rep.add("ptrace", "fail", facts, code=Code.FORBIDDEN,
                    fix="ptrace_scope=3 forbids every attach until reboot")
        else:
            rep.add("ptrace", "ok", facts + "; may attach to any process")
        return
    if scope in (1, 2, 3):
        what = {1: "only to its own descendants", 2: "only with CAP_SYS_PTRACE",
                3: "to nothing"}[scope]
        rep.add("ptrace", "fail", f"{facts}: this user may attach {what}", code=Code.FORBIDDEN,
                fix=_grant_cap() + ("" if scope == 3 else
                                    ", or lower it: `sysctl kernel.yama.ptrace_scope=0`"))
        return
    rep.add("ptrace", "warn", f"{facts}: this user may attach only to its own uid's processes",
            fix=_grant_cap() + " to inject into other users' processes")


def _grant_cap() -> str:
    if os.geteuid() == 0:  # root without the capability: a container's default set
        return ("grant CAP_SYS_PTRACE (docker run --cap-add SYS_PTRACE; Kubernetes "
                "securityContext.capabilities.add: [SYS_PTRACE], or a privileged pod)")
    return "run blade-go as root (with CAP_SYS_PTRACE)"


def check_state_home(rep: Report):
    from .state import check_trusted_dir, home
    path = home()
    rep.environment["state_home"] = str(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if existing == path:
            check_trusted_dir(path)
        else:  # would be created 0700 in `existing`, whose trust decides
            for parent in [existing, *existing.parents]:
                st = os.stat(parent)
                if st.st_uid not in (0, os.geteuid()):
                    raise BladeError(Code.FORBIDDEN, f"{path} would lie in {parent}, owned by "
                                                     f"uid {st.st_uid}")
                if st.st_mode & 0o022 and not st.st_mode & 0o1000:
                    raise BladeError(Code.FORBIDDEN, f"{path} would lie in {parent}, writable "
                                                     "by group or others without the sticky bit")
    except BladeError as e:
        rep.add("state_home", "fail", e.message, code=e.code,
                fix=f"make {existing} owned by uid {os.geteuid()} and writable by nobody else "
                    f"(chown {os.geteuid()} DIR; chmod go-w DIR), or set BLADE_GO_HOME to a "
                    "private directory")
        return
    rep.add("state_home", "ok", f"{path}: " + ("trusted (ours, writable by nobody else)"
                                               if existing == path else
                                               f"not created yet; {existing} is trusted"))


def check_kernel(rep: Report):
    u = os.uname()
    rep.environment["kernel"] = {"release": u.release, "machine": u.machine,
                                 "python": platform.python_version()}
    if u.machine in SUPPORTED_MACHINES:
        rep.add("kernel", "ok", f"Linux {u.release} on {u.machine}")
    else:
        rep.add("kernel", "fail", f"Linux {u.release} on {u.machine}: blade-go injects into "
                f"amd64, 386 and arm64 programs only", code=Code.ACTION_NOT_SUPPORT,
                fix="run blade-go on an amd64 or arm64 node")


# -- a process ---------------------------------------------------------------------------------

def tracer_of(pid: int) -> dict | None:
    """The process tracing pid: TracerPid names the tracing *thread*, mapped to its process."""
    tid = int(status_fields(pid).get("TracerPid", "0") or 0)
    if not tid:
        return None
    try:
        f = status_fields(tid)
        tgid = int(f.get("Tgid", tid))
        name = status_fields(tgid).get("Name", "?")
    except OSError:  # ended meanwhile
        return {"pid": tid, "thread": tid, "name": "?", "cmdline": "", "blade_go": False}
    return {"pid": tgid, "thread": tid, "name": name, "cmdline": _cmdline(tgid),
            "blade_go": _is_blade_go_dlv(tgid)}


def _is_blade_go_dlv(pid: int) -> bool:
    """A dlv started by a blade-go supervisor carries its session directory in its environment
    (launcher.SESSION_DIR_ENV)."""
    from .session.launcher import SESSION_DIR_ENV
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return any(v.startswith(SESSION_DIR_ENV.encode() + b"=") for v in f.read().split(b"\0"))
    except OSError:
        return False


def estimate_pause_ms(size_mb: float, dwarf: bool) -> tuple[int, int]:
    lo, hi = PAUSE_MS_PER_MB[dwarf]
    return max(PAUSE_FLOOR_MS, round(size_mb * lo)), max(PAUSE_FLOOR_MS, round(size_mb * hi))


def check_process(rep: Report, pid: int):
    from . import container
    from .inspector.binary import open_binary
    proc = {"pid": pid}
    rep.process = proc
    try:
        fields = status_fields(pid)
    except FileNotFoundError:
        rep.add("process", "fail", f"process {pid} does not exist", code=Code.PROCESS_NOT_EXIST,
                fix="give the pid of a running process (as the host sees it; inside a "
                    "container use --container-id or --ns_target with create)")
        return
    try:
        exe = os.path.realpath(f"/proc/{pid}/exe")
        size = os.stat(f"/proc/{pid}/exe").st_size
    except OSError as e:
        rep.add("process", "fail", f"cannot read process {pid}'s executable: {e.strerror}",
                code=Code.FORBIDDEN, fix="run blade-go as root or as the process's user")
        return
    proc.update({"name": fields.get("Name", ""), "exe": exe, "uid": int(fields["Uid"].split()[1]),
                 "threads": int(fields.get("Threads", "0")), "exe_mb": round(size / 1e6, 1)})

    # the executable
    binary = None
    try:
        binary = open_binary(pid=pid)
        facts = binary.facts()
    except BladeError as e:
        rep.add("go_program", "fail", f"process {pid} ({exe}): {e.message}", code=e.code,
                fix="blade-go injects only into Go programs: pick the Go process (`blade-go "
                    "inspect --pid P` shows what it sees)")
    else:
        proc.update({k: facts[k] for k in ("go_version", "module_path", "goarch", "abi", "pie",
                                            "has_dwarf", "has_symtab", "stripped")})
        detail = (f"{facts['go_version'] or 'Go (version unknown)'} {facts['goarch']}, ABI "
                  f"{facts['abi']}, {'PIE' if facts['pie'] else 'not PIE'}")
        if not facts["arch_supported"]:
            rep.add("go_program", "fail", detail + ": this architecture is not supported yet",
                    code=Code.ACTION_NOT_SUPPORT, fix="blade-go injects into amd64, 386 and "
                    "arm64 programs only")
        else:
            rep.add("go_program", "ok", detail)
        if facts["has_dwarf"]:
            rep.add("dwarf", "ok", "DWARF present: every action, signatures from the binary")
        else:
            rep.add("dwarf", "warn", f"no DWARF ({facts['stripped']}): return needs "
                    "--signature or --debug-binary; delay, panic and args are refused",
                    fix="give `--signature 'func(...) (...)'` or `--debug-binary PATH` (the "
                        "unstripped build) with return; build without -w for the other actions")
    finally:
        if binary is not None:
            binary.close()

    # ptrace: another tracer, and the uid rule for an unprivileged user
    tracer = tracer_of(pid)
    proc["tracer"] = tracer
    if tracer and tracer["blade_go"]:
        rep.add("tracer", "ok", f"attached by blade-go's own dlv (pid {tracer['pid']}): "
                "experiments are active; a new create joins that session")
    elif tracer:
        rep.add("tracer", "fail", f"process {pid} is already traced by pid {tracer['pid']} "
                f"({tracer['name']}: {tracer['cmdline'][:120]}); only one tracer may attach",
                code=Code.FORBIDDEN, fix=f"detach or end the tracer (pid {tracer['pid']}: a "
                "debugger, strace, another dlv) before injecting")
    else:
        rep.add("tracer", "ok", "not traced")
    if not has_cap_ptrace(status_fields()) and proc["uid"] != os.geteuid():
        rep.add("permission", "fail", f"process {pid} belongs to uid {proc['uid']}, blade-go runs "
                f"as uid {os.geteuid()} without CAP_SYS_PTRACE", code=Code.FORBIDDEN,
                fix="run blade-go as root (or as the process's user)")

    # namespace and container
    nspids = container.ns_pids(pid) or [pid]
    mine, theirs = container.pid_namespace(os.getpid()), container.pid_namespace(pid)
    cid = container.container_of(pid)
    proc.update({"nspid": nspids, "same_pid_namespace": mine == theirs, "container_id": cid})
    if mine == theirs:
        where = "in blade-go's pid namespace"
    else:
        where = f"in another pid namespace (pid {nspids[-1]} inside)"
    rep.add("namespace", "ok", where + (f", container {cid[:12]}" if cid else ", no container"))

    # the pause at attach
    dlv = rep.environment.get("dlv") or {}
    if "has_dwarf" in proc and dlv.get("preload"):
        lo, hi = PRELOAD_PAUSE_MS
        proc["attach_pause_ms"] = [lo, hi]
        rep.add("attach_pause", "ok", f"expect the first create to stop the target about "
                f"{lo}-{hi} ms: this dlv ({dlv.get('build')}) reads the {proc['exe_mb']} MB "
                "executable before it stops the process (docs/BENCHMARKS.md, \"The dlv "
                "blade-go installs (patched) against a stock dlv\"); the create reports the "
                "pause it caused in target_paused")
    elif "has_dwarf" in proc:
        lo, hi = estimate_pause_ms(size / 1e6, proc["has_dwarf"])
        proc["attach_pause_ms"] = [lo, hi]
        span = f"about {lo} ms" if lo == hi else f"{lo}-{hi} ms"
        note = (f"expect the target to stop {span} while this stock dlv attaches "
                f"({proc['exe_mb']} MB executable, {'with' if proc['has_dwarf'] else 'without'}"
                " DWARF; docs/BENCHMARKS.md \"How long is the target paused?\"): it loads the "
                "executable with every thread stopped")
        rep.add("attach_pause", "ok", note,
                fix="use the dlv build/delve/build.sh builds (it loads before it stops the "
                    "process) to make that pause tens of ms")


def run(pid: int | None = None) -> Report:
    rep = Report()
    check_kernel(rep)
    check_dlv(rep)
    check_ptrace(rep)
    check_state_home(rep)
    if pid is not None:
        check_process(rep, pid)
    return rep


def response(pid: int | None = None) -> dict:
    """The command's Response: success with the report, or the first failure's code and every
    failure's detail and fix in `error`, the report in `result`."""
    from .response import fail, ok
    rep = run(pid)
    warnings = [f"{c.name}: {c.detail} (do: {c.fix})" for c in rep.checks if c.status == "warn"]
    if not rep.failures:
        return ok(rep.to_json(), warnings=warnings or None)
    msg = "; ".join(f"{c.name}: {c.detail} (do: {c.fix})" for c in rep.failures)
    return fail(rep.failures[0].code, f"{len(rep.failures)} check(s) failed: {msg}",
                result=rep.to_json())
