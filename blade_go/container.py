"""Containers seen from the host: which processes belong to a container, and pids inside it.

blade-go always works from the host (dlv, the state file and the executable read through the
host's /proc/<pid>/exe), so a container is only a *scope* for resolving --pid / --process /
--process-cmd: its processes (by cgroup for --container-id, by pid namespace for --ns_target)
and the pid numbers its own processes see (the NSpid line of /proc/<pid>/status).

Runtimes name a container's cgroup after its 64-hex id, in these layouts (cgroup v1 and v2):
  docker (cgroupfs)          /docker/<id>
  docker (systemd)           /system.slice/docker-<id>.scope
  containerd under k8s       /kubepods/burstable/pod<uid>/<id>   or
                             /kubepods.slice/.../cri-containerd-<id>.scope
  containerd (ctr)           /<namespace>/<id>
  cri-o                      /kubepods.slice/.../crio-<id>.scope  (crio-conmon-<id>: the monitor)
  podman                     /machine.slice/libpod-<id>.scope
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .errors import BladeError, Code

PROC = "/proc"
# the last path component naming a container; conmon (cri-o's monitor) is not the container
_ID_COMPONENT = re.compile(r"^(?:(?:docker|cri-containerd|crio|libpod)-)?([0-9a-f]{64})(?:\.scope)?$")


def container_id_from_cgroup(text: str) -> str | None:
    """The container id in /proc/PID/cgroup text (any hierarchy, v1 or v2), else None."""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for comp in reversed(parts[2].split("/")):
            m = _ID_COMPONENT.match(comp)
            if m:
                return m.group(1)
    return None


def container_of(pid: int) -> str | None:
    try:
        with open(f"{PROC}/{pid}/cgroup") as f:
            return container_id_from_cgroup(f.read())
    except OSError:
        return None


def ns_pids(pid: int) -> list | None:
    """The NSpid line: the process's pid in each pid namespace, outermost (this /proc's) first."""
    try:
        with open(f"{PROC}/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return [int(x) for x in line.split()[1:]]
    except (OSError, ValueError):
        return None
    return None


def pid_namespace(pid: int) -> tuple | None:
    """(device, inode) of the process's pid namespace, else None (gone or not readable)."""
    try:
        st = os.stat(f"{PROC}/{pid}/ns/pid")
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _host_pids():
    return sorted(int(d) for d in os.listdir(PROC) if d.isdigit())


@dataclass(frozen=True)
class Scope:
    """A set of host processes and the pid numbers they have inside the container.

    level: index into NSpid of the container's pid namespace (0 when it is the host's own).
    members: host pid -> pid inside the container's namespace.
    """
    description: str
    level: int
    members: dict

    def host_pid(self, inner: int) -> int | None:
        return next((h for h, i in self.members.items() if i == inner), None)


def _scope_of_namespace(anchor: int, description: str, keep=None) -> Scope:
    ns = pid_namespace(anchor)
    nsp = ns_pids(anchor)
    if ns is None or not nsp:
        raise BladeError(Code.PROCESS_NOT_EXIST, f"process not exist: {description}: host pid "
                         f"{anchor} is gone or its namespaces cannot be read")
    level = len(nsp) - 1
    members = {}
    for h in _host_pids():
        # a container's members are its cgroup's processes (nested namespaces included);
        # --ns_target's are exactly the processes of that pid namespace
        if (not keep(h)) if keep is not None else pid_namespace(h) != ns:
            continue
        p = ns_pids(h)
        if p is not None and len(p) > level:
            members[h] = p[level]
    return Scope(description, level, members)


def scope_for_ns_target(pid: int) -> Scope:
    """The pid namespace of host pid `pid` (blade's --ns_target)."""
    return _scope_of_namespace(pid, f"pid namespace of host pid {pid} (--ns_target)")


def find_container(prefix: str) -> tuple:
    """(full id, sorted host pids) of the one container whose id starts with prefix."""
    if not re.fullmatch(r"[0-9a-f]{1,64}", prefix or ""):
        raise BladeError(Code.PARAMETER_ILLEGAL, f"illegal value {prefix!r} for --container-id: "
                         "expected a container id (hex) or a prefix of one")
    found = {}
    for h in _host_pids():
        cid = container_of(h)
        if cid and cid.startswith(prefix):
            found.setdefault(cid, []).append(h)
    if not found:
        raise BladeError(Code.PARAMETER_INVALID, f"invalid parameter container-id: no container "
                         f"with id {prefix} has a process on this host (looked in "
                         f"{PROC}/*/cgroup)")
    if len(found) > 1:
        raise BladeError(Code.PARAMETER_INVALID, f"invalid parameter container-id: {prefix} is a "
                         "prefix of several containers: " + ", ".join(sorted(found)))
    cid, pids = next(iter(found.items()))
    return cid, sorted(pids)


def scope_for_container(prefix: str) -> Scope:
    """The container's processes (by cgroup), numbered as its pid namespace numbers them."""
    cid, pids = find_container(prefix)
    members = set(pids)
    # the container's pid namespace is its init's (inner pid 1; the outermost such, should the
    # container nest namespaces); a hostPID container has none: its shallowest member then
    def rank(h):
        p = ns_pids(h) or []
        return (not (p and p[-1] == 1), len(p), h)
    anchor = min(pids, key=rank)
    return _scope_of_namespace(anchor, f"container {cid[:12]}", keep=lambda h: h in members)
