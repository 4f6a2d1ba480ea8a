"""Container targeting with real namespaces and cgroups.

A "container" here is what a runtime makes of one: `unshare --pid --mount --fork --mount-proc`
runs a shell as pid 1 of a new pid namespace, inside a cgroup named the way docker names its
containers (cgroup v1 `/docker/<64 hex>` or cgroup v2 `.../docker-<64 hex>.scope`). In it:
  - the Go target gets, inside the namespace, the pid number of a *different* process on the
    host (a sleep we start there): `--pid N` must mean the container's N;
  - a sleep gets a pid number that no host process has: it exists only inside.
blade-go resolves from the host (dlv, state and /proc/<pid>/exe all host-side) and injects.
"""
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from blade_go.container import container_id_from_cgroup, find_container, ns_pids
from blade_go.errors import BladeError, Code
from blade_go.targeting import resolve_process
from tests.support.targets import RunningTarget, differences_beyond_retained

CID = "4f1c" + "0" * 56 + "beef"
# /proc/PID/cgroup as each runtime leaves it (layouts from real hosts; ids replaced)
CGROUP_TEXTS = {
    "docker-cgroupfs-v1": f"12:pids:/docker/{CID}\n11:memory:/docker/{CID}\n0::/\n",
    "docker-systemd-v2": f"0::/system.slice/docker-{CID}.scope\n",
    "containerd-k8s-cgroupfs-v1": f"4:cpu,cpuacct:/kubepods/burstable/pod1e2d-33/{CID}\n",
    "containerd-k8s-systemd-v2": "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-"
                                 f"besteffort-pod1e2d_33.slice/cri-containerd-{CID}.scope\n",
    "crio-systemd-v2": f"0::/kubepods.slice/kubepods-pod9.slice/crio-{CID}.scope\n",
    "crio-cgroupfs-v1": f"3:pids:/kubepods/pod9/crio-{CID}\n",
    "containerd-ctr-v2": f"0::/default/{CID}\n",
    "podman-v2": f"0::/machine.slice/libpod-{CID}.scope/container\n",
}


@pytest.mark.parametrize("layout", sorted(CGROUP_TEXTS))
def test_container_id_from_every_runtime_layout(layout):
    assert container_id_from_cgroup(CGROUP_TEXTS[layout]) == CID


def test_not_a_container():
    assert container_id_from_cgroup("0::/user.slice/user-0.slice/session-3.scope\n") is None
    assert container_id_from_cgroup("0::/\n") is None
    # cri-o's monitor process lives beside the container, it is not the container
    assert container_id_from_cgroup(f"0::/system.slice/crio-conmon-{CID}.scope\n") is None
    assert container_id_from_cgroup(Path("/proc/self/cgroup").read_text()) is None


def test_container_id_syntax_and_absence():
    with pytest.raises(BladeError) as e:
        find_container("not-hex")
    assert e.value.code == Code.PARAMETER_ILLEGAL
    with pytest.raises(BladeError) as e:
        find_container(secrets.token_hex(32))
    assert e.value.code == Code.PARAMETER_INVALID and "no container" in e.value.message


# ---- real namespaces and cgroups -----------------------------------------------------------

def _cgroup_mounts():
    v1 = v2 = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fstype, _, opts = post.split(" ", 2)
        point = pre.split()[4]
        if fstype == "cgroup2" and v2 is None:
            v2 = Path(point)
        elif fstype == "cgroup" and "pids" in opts.split(",") and v1 is None:
            v1 = Path(point)
    return v1, v2


def _make_cgroup(layout, cid):
    v1, v2 = _cgroup_mounts()
    if layout == "v1":
        base, path = v1, f"docker/{cid}"
    else:
        base, path = v2, f"blade-go-test.slice/docker-{cid}.scope"
    if base is None:
        pytest.skip(f"no cgroup {layout} hierarchy mounted here")
    d = base / path
    made = [p for p in (d.parent, d) if not p.exists()]
    try:
        d.mkdir(parents=True)
    except OSError as e:
        pytest.skip(f"cannot create a cgroup here ({e}); the layouts are covered by the "
                    "parsing tests above")
    return d, made


def _rm_cgroup(made):
    for p in reversed(made):  # only what this test created, deepest first
        deadline = time.time() + 10
        while p.exists():
            try:
                p.rmdir()
            except OSError:  # still populated for a moment after the kill
                if time.time() > deadline:
                    raise
                time.sleep(0.1)


def _free_host_pid(start):
    n = start
    while Path(f"/proc/{n}").exists():
        n += 1
    return n


class Container:
    """The namespace's processes, by their host pids and inner pids."""

    def __init__(self, runner, cgroup, cid, inner_go, inner_only):
        self.runner, self.cgroup, self.cid = runner, cgroup, cid
        self.inner_go, self.inner_only = inner_go, inner_only

    def host_pid_of(self, inner):
        for d in os.listdir("/proc"):
            if d.isdigit():
                p = ns_pids(int(d))
                if p and len(p) == 2 and p[1] == inner and self.init in self._family(int(d)):
                    return int(d)
        return None

    def _family(self, pid):
        seen = []
        while pid > 1:
            seen.append(pid)
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                break
            pid = int(stat[stat.rfind(")") + 2:].split()[1])
        return seen

    @property
    def init(self):
        for d in os.listdir("/proc"):
            if d.isdigit():
                p = ns_pids(int(d))
                if p and len(p) == 2 and p[1] == 1 and self.runner.pid in self._family(int(d)):
                    return int(d)
        return None


@pytest.fixture(params=["v1", "v2"])
def container(request, e2e_binary):
    if not shutil.which("unshare"):
        pytest.skip("unshare not installed")
    cid = secrets.token_hex(32)
    cgroup, made = _make_cgroup(request.param, cid)
    host_sleep = subprocess.Popen(["sleep", "300"])  # a host process whose pid the Go
    inner_go = host_sleep.pid                          # target will have inside
    inner_only = _free_host_pid(host_sleep.pid + 5000)  # a pid no host process has
    script = (f"exec 3<&0; echo {inner_go - 1} > /proc/sys/kernel/ns_last_pid; "
              f"{e2e_binary} <&3 & "
              f"echo {inner_only - 1} > /proc/sys/kernel/ns_last_pid; sleep 300 </dev/null & "
              "exec 3<&-; wait")
    outer = (f'echo $$ > {cgroup}/cgroup.procs && exec unshare --pid --mount --fork '
             f'--mount-proc --kill-child sh -c "$0"')
    runner = RunningTarget(["sh", "-c", outer, script])
    c = Container(runner, cgroup, cid, inner_go, inner_only)
    c.name = Path(e2e_binary).name
    try:
        runner.wait_for_line("READY", timeout=20)
        # the inner sleep is forked after the Go target, which can say READY before it exists
        # (seen once in CI: host_pid_of(inner_only) was None)
        deadline = time.monotonic() + 10
        while c.host_pid_of(inner_only) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        yield c
    finally:
        init = c.init
        if init:
            os.kill(init, signal.SIGKILL)  # the kernel ends the whole namespace with it
        runner.stop()
        host_sleep.kill()
        host_sleep.wait()
        _rm_cgroup(made)
    assert ns_pids(host_sleep.pid) is None


def test_pids_resolve_inside_the_namespace(container):
    host_go = container.host_pid_of(container.inner_go)
    host_only = container.host_pid_of(container.inner_only)
    assert host_go and host_go != container.inner_go
    assert host_only and not Path(f"/proc/{container.inner_only}").exists()
    for scope in ({"ns_target": (container.init,)}, {"container_id": container.cid},
                  {"container_id": container.cid[:12]}):
        info = resolve_process(pid=(container.inner_go,), **scope)
        assert (info.pid, info.ns_pid) == (host_go, container.inner_go), scope
        assert resolve_process(pid=(container.inner_only,), **scope).pid == host_only
        # by name, too: only the container's processes are candidates
        assert resolve_process(process_cmd=container.name, **scope).pid == host_go
        with pytest.raises(BladeError) as e:
            resolve_process(pid=(4194300,), **scope)
        assert e.value.code == Code.PROCESS_NOT_EXIST and "in " in e.value.message
    # on the host, the same numbers are other processes, or none
    assert resolve_process(pid=(container.inner_go,)).comm == "sleep"
    with pytest.raises(BladeError) as e:
        resolve_process(pid=(container.inner_only,))
    assert e.value.code == Code.PROCESS_NOT_EXIST


def call(runner, name):
    mark = runner.mark()
    runner.send_line(f"call {name}")
    return runner.wait_for_line(rf"^{name} => ", since=mark, timeout=10).split(" => ", 1)[1]


def test_inject_through_the_container_pid(container, blade):
    host_go = container.host_pid_of(container.inner_go)
    original = call(container.runner, "Query")
    # blade's cri path: --channel=nsexec --ns_target=<container pid 1 on the host> --ns_pid --ns_mnt
    uid = blade.ok("create", "go", "return", f"--pid={container.inner_go}", "--func=main.Query",
                   '--value="ns",nil', "--uid=ns-1", "--channel=nsexec",
                   f"--ns_target={container.init}", "--ns_pid=true", "--ns_mnt=true")
    assert uid == "ns-1"
    assert call(container.runner, "Query") == '"ns",<nil>'
    rec = blade.ok("status", uid)
    assert rec["pid"] == host_go and rec["status"] == "Success"
    blade.ok("destroy", uid)
    assert call(container.runner, "Query") == original
    assert differences_beyond_retained(blade.home, host_go) == []
    # the same through --container-id (a prefix, as docker accepts)
    uid = blade.ok("create", "go", "return", "--container-id", container.cid[:16],
                   "--pid", container.inner_go, "--func", "main.Store.Count", "--value", "77")
    assert call(container.runner, "Count") == "77"
    blade.ok("destroy", uid)
    assert differences_beyond_retained(blade.home, host_go) == []
