"""A private containerd (Debian's 1.6, with runc) for tests, and containers run from a root
filesystem directory, no image.

    with Containerd(tmp_path / "ctd") as ctd:
        c = ctd.run(rootfs_dir, ["/app/crisvc"])     # a 64-hex id in namespace k8s.io
        c.pid                                        # its pid 1, as the host sees it
        c.wait_for_line(r"^tick=", since=c.mark())   # its stdout, through --log-uri file://

containerd gets a config of its own: root, state and the grpc/ttrpc sockets under the given
directory, the CRI plugin disabled (no kubelet here). Everything is torn down on exit, pass or
fail: tasks killed and deleted, containers deleted, containerd stopped by its pid, and any shim
of this daemon (its command line names this socket) killed.
"""
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support import toolchains

NAMESPACE = "k8s.io"  # what kubelet uses, and blade's default --container-namespace
CONFIG = """version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
"""


def require():
    """containerd, ctr, runc and the runc shim (Debian: apt-get install containerd runc)."""
    missing = [t for t in ("containerd", "ctr", "runc", "containerd-shim-runc-v2")
               if not shutil.which(t)]
    if missing:
        toolchains.missing(f"{', '.join(missing)} not installed (apt-get install containerd runc)")
    if os.geteuid() != 0:
        toolchains.missing("containerd needs root")


def _pids_with_cmdline(pattern: str) -> list:
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if pattern in cmd:
                found.append(int(d))
    return found


class Container:
    def __init__(self, ctd, cid, log):
        self.ctd, self.id, self.log = ctd, cid, Path(log)

    @property
    def pid(self) -> int:
        out = self.ctd.ctr("task", "ls").stdout
        for line in out.splitlines()[1:]:
            parts = line.split()
            if parts and parts[0] == self.id and parts[2] == "RUNNING":
                return int(parts[1])
        raise AssertionError(f"container {self.id[:12]} has no running task: {out}")

    def text_differences(self, home=None) -> list:
        """[(start, end)) where pid 1's live code differs from its executable file. The maps
        name the file as the container sees it; /proc/PID/exe opens it from the host.

        home: blade-go's state directory; differences inside the value caves it retains in
        this process (values the program may still hold, issue 16) are then not counted, but
        any difference inside `.text` still is."""
        from tests.support.targets import _differing_runs
        pid = self.pid
        data = Path(f"/proc/{pid}/exe").read_bytes()
        inner = os.readlink(f"/proc/{pid}/exe")
        diffs, seen = [], 0
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                parts = line.split(None, 5)
                if len(parts) < 6 or "x" not in parts[1] or parts[5] != inner:
                    continue
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                off = int(parts[2], 16)
                mem.seek(lo)
                live = mem.read(hi - lo)
                want = data[off:off + len(live)]
                want += bytes(len(live) - len(want))
                seen += 1
                if live != want:
                    diffs.extend(_differing_runs(live, want, lo))
        assert seen, f"no executable mapping of {inner} in pid {pid}"
        if home is not None:
            from tests.support.targets import outside_retained
            diffs = outside_retained(diffs, home, pid, f"/proc/{pid}/exe")
        return diffs

    def mark(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def lines(self, since=0) -> list:
        if not self.log.exists():
            return []
        with open(self.log, "rb") as f:
            f.seek(since)
            return f.read().decode(errors="replace").splitlines()

    def wait_for_line(self, pattern, since=0, timeout=20, count=1) -> list:
        """The first `count` log lines after `since` matching pattern (a regex)."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            hits = [line for line in self.lines(since) if rx.search(line)]
            if len(hits) >= count:
                return hits[:count]
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} line(s) matching {pattern!r} in the container's "
                                     f"output within {timeout}s; last: {self.lines(since)[-3:]}")
            time.sleep(0.05)


class Containerd:
    def __init__(self, base: Path):
        self.base = Path(base)
        self.sock = str(self.base / "containerd.sock")
        self.proc = None
        self.containers = []

    def ctr(self, *args, check=True, timeout=60):
        p = subprocess.run(["ctr", "--address", self.sock, "-n", NAMESPACE, *map(str, args)],
                           capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"ctr {' '.join(map(str, args))}: {p.stderr.strip()}")
        return p

    def __enter__(self):
        require()
        self.base.mkdir(parents=True, exist_ok=True)
        config = self.base / "config.toml"
        config.write_text(CONFIG.format(root=self.base / "root", state=self.base / "state",
                                        sock=self.sock))
        self.proc = subprocess.Popen(["containerd", "--config", str(config)],
                                     stdout=open(self.base / "containerd.log", "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while self.ctr("version", check=False, timeout=10).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise AssertionError("containerd did not start: " +
                                     (self.base / "containerd.log").read_text()[-2000:])
            time.sleep(0.2)
        return self

    def run(self, rootfs: Path, argv, cid=None, labels=()) -> Container:
        cid = cid or secrets.token_hex(32)  # what Kubernetes ids look like
        log = self.base / f"{cid[:12]}.log"
        extra = [a for k, v in labels for a in ("--label", f"{k}={v}")]
        self.containers.append(cid)
        self.ctr("run", "-d", "--log-uri", f"file://{log}", *extra, "--rootfs", rootfs, cid,
                 *argv)
        return Container(self, cid, log)

    def __exit__(self, *exc):
        for cid in reversed(self.containers):
            self.ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
            deadline = time.monotonic() + 10
            while self.ctr("task", "rm", cid, check=False).returncode != 0:
                if "not found" in self.ctr("task", "ls", check=False).stdout or \
                        cid not in self.ctr("task", "ls", check=False).stdout or \
                        time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            self.ctr("container", "rm", cid, check=False)
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        for pid in _pids_with_cmdline(f"-address {self.sock}"):  # a shim left behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return False


# ---- tests/fixtures/cri_target in a container ------------------------------------------

def container_rootfs(base: Path) -> Path:
    from tests.support.fixtures import build_fixture
    exe = build_fixture("cri_target", extra_env={"CGO_ENABLED": "0"})  # static: no libc inside
    rootfs = base / "rootfs"
    (rootfs / "app").mkdir(parents=True)
    shutil.copy2(exe, rootfs / "app" / "crisvc")
    return rootfs


@contextlib.contextmanager
def crisvc_container():
    """(Containerd, Container) running cri_target as /app/crisvc, named crisvc the way the CRI
    plugin names containers (label io.kubernetes.container.name); all gone afterwards."""
    require()
    base = Path(tempfile.mkdtemp(prefix="ctd-", dir="/tmp"))  # short: a socket path is <108 bytes
    try:
        with Containerd(base / "c") as ctd:
            c = ctd.run(container_rootfs(base), ["/app/crisvc"],
                        labels=[("io.kubernetes.container.name", "crisvc")])
            c.wait_for_line(r"^tick=")
            yield ctd, c
        assert _pids_with_cmdline(ctd.sock) == []  # no shim, no containerd left
    finally:
        shutil.rmtree(base, ignore_errors=True)


def fields(line: str) -> dict:
    """tick=3 query="row",<nil> slow=0ms ... -> {'tick': '3', 'query': '"row",<nil>', ...}"""
    return dict(m.groups() for m in re.finditer(r"(\w+)=(.*?)(?= \w+=|$)", line))


def next_lines(c, n=3):
    mark = c.mark()
    return [fields(line) for line in c.wait_for_line(r"^tick=", since=mark, count=n)]


def lines_since(c, mark, more=10):
    """Every line since mark, once `more` lines came after this call (the fault is armed while
    create runs: the counted calls can be before create returns)."""
    c.wait_for_line(r"^tick=", since=c.mark(), count=more)
    return [fields(line) for line in c.lines(mark) if line.startswith("tick=")]
