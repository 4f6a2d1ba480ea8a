"""Process targeting: --pid / --process / --process-cmd resolve to exactly one live process.

blade-go itself (any process running blade-go or its session supervisor) and any dlv are never
candidates; for name matching, the caller's ancestors are excluded too because a shell that
started blade-go carries the very pattern in its own command line.
"""
from __future__ import annotations

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

    @property
    def cmdline(self) -> str:
        return " ".join(self.argv) if self.argv else f"[{self.comm}]"

    @property
    def is_blade_go(self) -> bool:
        words = [os.path.basename(a) for a in self.argv[:3]]
        return ("blade-go" in words or "blade_go" in " ".join(self.argv[:3])
                or self.comm == "blade-go")

    @property
    def is_dlv(self) -> bool:
        return self.comm == "dlv" or bool(self.argv and os.path.basename(self.argv[0]) == "dlv")


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


def find_processes(pid=None, process=None, process_cmd=None) -> list:
    """Every candidate process matching all the given criteria (pid may be an int or a list)."""
    pids = [pid] if isinstance(pid, int) else list(pid or [])
    if pids:
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


def resolve_process(pid=None, process=None, process_cmd=None) -> ProcessInfo:
    """Exactly one process for the targeting flags, else a chaosblade error."""
    if not pid and not process and not process_cmd:
        raise BladeError(Code.PARAMETER_LESS, "less parameter: pid|process|process-cmd "
                         "(one of --pid, --process, --process-cmd is required)")
    found = find_processes(pid, process, process_cmd)
    criteria = ", ".join(f"--{k} {v!r}" for k, v in (
        ("pid", ",".join(map(str, [pid] if isinstance(pid, int) else pid or [])) or None),
        ("process", process), ("process-cmd", process_cmd)) if v)
    if not found:
        if pid:
            raise BladeError(Code.PROCESS_NOT_EXIST, f"process not exist: no live target "
                             f"process for {criteria}")
        raise BladeError(Code.PROCESS_ID_BY_NAME_FAILED, f"get process id by name failed: no "
                         f"process matches {criteria}")
    if len(found) > 1:
        listing = "; ".join(f"{i.pid} {i.cmdline[:200]}" for i in found[:20])
        more = f" (and {len(found) - 20} more)" if len(found) > 20 else ""
        raise BladeError(Code.PARAMETER_INVALID_TOO_MANY_PROCESS,
                         f"too many processes match {criteria}: {len(found)}; give --pid one of: "
                         f"{listing}{more}")
    return found[0]


def resolve_target(pid=None, process=None, process_cmd=None) -> int:
    return resolve_process(pid, process, process_cmd).pid
