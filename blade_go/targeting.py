"""Process targeting: --pid / --process / --process-cmd resolve to exactly one live process.

blade-go itself (a Python interpreter running the blade_go package or the `blade-go` script)
and any dlv are never candidates; for name matching, the caller's ancestors are excluded too
because a shell that started blade-go carries the very pattern in its own command line.

With --container-id or --ns_target the three flags are resolved inside that container's pid
namespace (blade_go/container.py): `--pid 7` names the container's pid 7, and the result is the
host pid blade-go attaches to.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from .errors import BladeError, Code

PROC = "/proc"
PF_KTHREAD = 0x00200000


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    comm: str
    argv: tuple
    exe: str | None
    state: str  # R, S, Z, ...
    kernel_thread: bool = False
    ns_pid: int | None = None  # the pid inside the container's namespace, when targeted so
    scope: str | None = None   # which container / namespace it was resolved in

    @property
    def cmdline(self) -> str:
        return " ".join(self.argv) if self.argv else f"[{self.comm}]"

    @property
    def is_blade_go(self) -> bool:
        return is_blade_go_argv(self.comm, self.argv)

    @property
    def is_dlv(self) -> bool:
        return self.comm == "dlv" or bool(self.argv and os.path.basename(self.argv[0]) == "dlv")


_PY_OPTS_WITH_ARG = ("-W", "-X", "-Q")


def is_blade_go_argv(comm: str, argv) -> bool:
    """True for blade-go's own processes: the `blade-go` console script (the kernel names a
    script's process after the script) or a Python interpreter whose script or `-m` module is
    blade_go. A program that merely has "blade_go" among its arguments is not blade-go."""
    if comm == "blade-go":
        return True
    if not argv or not os.path.basename(argv[0]).startswith("python"):
        return False
    i = 1
    while i < len(argv):  # skip the interpreter's own options up to the script or -m
        a = argv[i]
        if a == "-m":
            return i + 1 < len(argv) and argv[i + 1].split(".")[0] == "blade_go"
        if a.startswith("-m") and len(a) > 2:
            return a[2:].split(".")[0] == "blade_go"
        if a in _PY_OPTS_WITH_ARG:
            i += 2
            continue
        if a.startswith("-") and a != "-":
            i += 1
            continue
        return os.path.basename(a) == "blade-go" or "blade_go" in a.split(os.sep)
    return False


def process_info(pid: int) -> ProcessInfo | None:
    """Facts from /proc, or None when the process does not exist (or vanished meanwhile)."""
    base = f"{PROC}/{pid}"
    try:
        with open(f"{base}/cmdline", "rb") as f:
            raw = f.read()
        with open(f"{base}/stat") as f:
            stat = f.read()
        with open(f"{base}/comm") as f:
            comm = f.read().rstrip("\n")
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    argv = tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a)
    try:
        exe = os.readlink(f"{base}/exe")
    except OSError:
        exe = None
    fields = stat[stat.rfind(")") + 2:].split()
    # fields[0] is the state; fields[6] the kernel's task flags, with PF_KTHREAD for kernel threads
    kthread = len(fields) > 6 and fields[6].isdigit() and bool(int(fields[6]) & PF_KTHREAD)
    return ProcessInfo(pid=pid, comm=comm, argv=argv, exe=exe, state=fields[0] if fields else "",
                       kernel_thread=kthread)


def _all_pids():
    return sorted(int(d) for d in os.listdir(PROC) if d.isdigit())


def _ancestors(pid: int) -> set:
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        try:
            with open(f"{PROC}/{pid}/stat") as f:
                stat = f.read()
            pid = int(stat[stat.rfind(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return seen


def _excluded_reason(info: ProcessInfo) -> str | None:
    if info.pid == os.getpid() or info.is_blade_go:
        return "is blade-go itself"
    if info.is_dlv:
        return "is a dlv process"
    if info.state == "Z":
        return "is a zombie"
    if info.kernel_thread:
        return "is a kernel thread"
    return None


def _comm_matches(info: ProcessInfo, name: str) -> bool:
    # the kernel truncates comm to 15 bytes; a longer name also matches argv[0]'s basename
    if info.comm == name:
        return True
    return len(name) > 15 and info.comm == name[:15] and bool(
        info.argv and os.path.basename(info.argv[0]) == name)


def _scope(container_id=None, ns_target=None):
    from . import container
    if ns_target:
        pids = [ns_target] if isinstance(ns_target, int) else list(ns_target)
        if len(pids) != 1:
            raise BladeError(Code.PARAMETER_ILLEGAL, "illegal value for --ns_target: expected "
                             "exactly one host pid")
        return container.scope_for_ns_target(pids[0])
    if container_id:
        return container.scope_for_container(container_id)
    return None


def find_processes(pid=None, process=None, process_cmd=None, scope=None) -> list:
    """Every candidate process matching all the given criteria (pid may be an int or a list).

    With a scope (a container), pids are the container's own numbers and only its processes
    are candidates; the ProcessInfo returned carries the host pid.
    """
    pids = [pid] if isinstance(pid, int) else list(pid or [])
    if scope is not None:
        if pids:
            hosts = {p: scope.host_pid(p) for p in pids}
            candidates = [(h, p) for p, h in hosts.items() if h is not None]
        else:
            candidates = sorted(scope.members.items())
        infos = [i for i in (_scoped_info(h, inner, scope) for h, inner in candidates) if i]
        if pids and len(pids) == 1:
            for i in infos:
                reason = _excluded_reason(i)
                if reason:
                    raise BladeError(Code.PARAMETER_INVALID, f"pid {i.ns_pid} in {scope.description}"
                                     f" (host pid {i.pid}) cannot be a target: it {reason} "
                                     f"({i.cmdline})")
        infos = [i for i in infos if not _excluded_reason(i)]
    elif pids:
        infos = [i for i in (process_info(p) for p in pids) if i is not None]
        for i in infos:
            reason = _excluded_reason(i)
            if reason and len(pids) == 1:
                raise BladeError(Code.PARAMETER_INVALID, f"pid {i.pid} cannot be a target: it "
                                 f"{reason} ({i.cmdline})")
        infos = [i for i in infos if not _excluded_reason(i)]
    else:
        ancestors = _ancestors(os.getpid())
        infos = [i for i in (process_info(p) for p in _all_pids() if p not in ancestors)
                 if i is not None and not _excluded_reason(i)]
    if process:
        infos = [i for i in infos if process in " ".join(i.argv)]
    if process_cmd:
        infos = [i for i in infos if _comm_matches(i, process_cmd)]
    return infos


def _scoped_info(host_pid: int, inner: int, scope) -> ProcessInfo | None:
    info = process_info(host_pid)
    if info is None:
        return None
    return dataclasses.replace(info, ns_pid=inner, scope=scope.description)


def resolve_process(pid=None, process=None, process_cmd=None, container_id=None,
                    ns_target=None) -> ProcessInfo:
    """Exactly one process for the targeting flags, else a chaosblade error."""
    if not pid and not process and not process_cmd:
        raise BladeError(Code.PARAMETER_LESS, "less parameter: pid|process|process-cmd "
                         "(one of --pid, --process, --process-cmd is required)")
    scope = _scope(container_id, ns_target)
    found = find_processes(pid, process, process_cmd, scope=scope)
    criteria = ", ".join(f"--{k} {v!r}" for k, v in (
        ("pid", ",".join(map(str, [pid] if isinstance(pid, int) else pid or [])) or None),
        ("process", process), ("process-cmd", process_cmd)) if v)
    where = f" in {scope.description}" if scope else ""
    if not found:
        if pid:
            raise BladeError(Code.PROCESS_NOT_EXIST, f"process not exist: no live target "
                             f"process for {criteria}{where}")
        raise BladeError(Code.PROCESS_ID_BY_NAME_FAILED, f"get process id by name failed: no "
                         f"process matches {criteria}{where}")
    if len(found) > 1:
        listing = "; ".join(f"{i.ns_pid or i.pid} {i.cmdline[:200]}" for i in found[:20])
        more = f" (and {len(found) - 20} more)" if len(found) > 20 else ""
        raise BladeError(Code.PARAMETER_INVALID_TOO_MANY_PROCESS,
                         f"too many processes match {criteria}{where}: {len(found)}; give --pid "
                         f"one of: {listing}{more}")
    return found[0]


def resolve_target(pid=None, process=None, process_cmd=None, **scope) -> int:
    return resolve_process(pid, process, process_cmd, **scope).pid
