"""An arm64 virtual machine for the live tier: Debian's arm64 kernel and packages under
qemu-system-aarch64 (TCG), with this checkout, an arm64 dlv and arm64 test programs inside.

    with ArmVM.boot(fixtures={"e2e_target": build_fixture("e2e_target", goarch="arm64")}) as vm:
        pid = vm.call("start", binary=vm.fixture("e2e_target"))
        vm.call("blade", args=["create", "go", "return", "--pid", pid, ...])  # -> [0, {...}]

The image (kernel + root file system as a cpio initramfs) comes from build/arm64vm/build.sh,
cached under $TOOLS_DIR/arm64vm/<key>; the arm64 dlv from build/delve/build.sh --arm64 (the
same patched delve as the host's). Each boot appends a second cpio (the kernel unpacks
concatenated archives) with the repository's blade_go/, specs/, tests/support/ and
build/toolchains.env at /repo, dlv at /opt/blade-go/bin/dlv, the test programs under
/opt/blade-go/fixtures/ and /job/run, which starts tests/support/arm64vm_guest.py on the serial
console. The host talks to that agent over qemu's stdin/stdout (one line per request and
answer, see arm64vm_guest.py); the VM has no disk and no network device, and powers off when
the agent ends. `close()` (also on errors, and at interpreter exit) leaves no qemu running.
"""
import atexit
import base64
import itertools
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Union

from .toolchains import REPO_ROOT, missing, tools_dir

QEMU = "qemu-system-aarch64"
GUEST_REPO = "/repo"
GUEST_DLV = "/opt/blade-go/bin/dlv"
GUEST_FIXTURES = "/opt/blade-go/fixtures"
# Under TCG a CPU without pointer authentication is much faster to emulate than `-cpu max`;
# Neoverse N1 (ARMv8.2: AWS Graviton2, Ampere Altra) is what most arm64 Go services run on.
CPU = os.environ.get("BLADE_GO_ARM64VM_CPU", "neoverse-n1")
SMP = int(os.environ.get("BLADE_GO_ARM64VM_SMP", "2"))
MEMORY = os.environ.get("BLADE_GO_ARM64VM_MEMORY", "2G")


class VMError(RuntimeError):
    pass


def require_qemu() -> str:
    """qemu-system-aarch64's path; skips the test (fails it under CI=true) when missing."""
    path = shutil.which(QEMU)
    if not path:
        missing(f"{QEMU} not found (Debian's qemu-system-arm)")
    return path


def image_dir() -> Path:
    """The cached VM image (vmlinuz, rootfs.cpio): build/arm64vm/build.sh prints it at once
    when cached, else builds it (root, mmdebstrap, cpio, Debian's mirror). When it can do
    neither the test is skipped (failed under CI=true: .ci/install.sh builds the image)."""
    env = dict(os.environ, BLADE_GO_TOOLS_DIR=str(tools_dir()))
    script = REPO_ROOT / "build" / "arm64vm" / "build.sh"
    p = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=1800,
                       env=env)
    if p.returncode != 0:
        missing(f"no arm64 VM image: build/arm64vm/build.sh failed: {p.stderr[-3000:]}")
    return Path(p.stdout.strip().splitlines()[-1])


def arm64_dlv() -> Path:
    """The patched dlv cross-built for linux/arm64 (build/delve/build.sh --arm64, cached)."""
    env = dict(os.environ, BLADE_GO_TOOLS_DIR=str(tools_dir()))
    p = subprocess.run(["bash", str(REPO_ROOT / "build" / "delve" / "build.sh"), "--arm64"],
                       capture_output=True, text=True, timeout=1800, env=env)
    if p.returncode != 0:
        missing(f"build/delve/build.sh --arm64 failed: {p.stderr[-3000:]}")
    return Path(p.stdout.strip().splitlines()[-1])


# -- the per-boot archive ---------------------------------------------------------------------

def _newc_entry(name: str, mode: int, data: bytes = b"", mtime: int = 0) -> bytes:
    """One entry of a `newc` cpio archive (the format the kernel's initramfs unpacker reads)."""
    name_b = name.encode() + b"\0"
    fields = [0, mode, 0, 0, 1, mtime, len(data), 0, 0, 0, 0, len(name_b), 0]
    head = b"070701" + b"".join(b"%08X" % f for f in fields)
    pad = lambda n: b"\0" * (-n % 4)  # noqa: E731
    return head + name_b + pad(len(head) + len(name_b)) + data + pad(len(data))


def job_archive(files: Dict[str, Union[Path, bytes]], executable=()) -> bytes:
    """A newc cpio holding `files` (guest path -> host file or bytes), their directories first;
    guest paths in `executable` (and host files with an x bit) get mode 0755."""
    dirs, out = set(), []
    for path in sorted(files):
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.add(d)
                out.append(_newc_entry(d, stat.S_IFDIR | 0o755))
        src = files[path]
        if isinstance(src, bytes):
            data, mtime, x = src, 0, path in executable
        else:
            st = src.stat()
            data, mtime = src.read_bytes(), int(st.st_mtime)
            x = path in executable or bool(st.st_mode & 0o111)
        out.append(_newc_entry(path.strip("/"), stat.S_IFREG | (0o755 if x else 0o644), data,
                               mtime))
    out.append(_newc_entry("TRAILER!!!", 0))
    blob = b"".join(out)
    return blob + b"\0" * (-len(blob) % 512)


GUEST_PYTHON = (3, 11)  # bookworm's python3


def _pyc(src: Path, guest_path: str, scratch: Path) -> bytes:
    """src compiled for the guest's Python (same version as ours), as an unchecked-hash .pyc:
    valid whatever the file times in the VM, and compiled here in a fraction of what the
    emulated CPU would take at every boot."""
    import py_compile
    out = scratch / "x.pyc"
    py_compile.compile(str(src), cfile=str(out), dfile=guest_path, doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    return out.read_bytes()


def repo_files(scratch: Optional[Path] = None) -> Dict[str, Union[Path, bytes]]:
    """What blade-go needs at run time from this checkout, and the test helpers the agent uses;
    with `scratch` (a directory to compile in) and a host Python of the guest's version, their
    .pyc files too."""
    import sys
    files: Dict[str, Union[Path, bytes]] = {}
    compile_here = scratch is not None and sys.version_info[:2] == GUEST_PYTHON
    for top in ("blade_go", "specs", "tests/support"):
        for f in sorted((REPO_ROOT / top).rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc":
                guest = f"{GUEST_REPO}/{f.relative_to(REPO_ROOT)}"
                files[guest] = f
                if compile_here and f.suffix == ".py":
                    tag = f"cpython-{GUEST_PYTHON[0]}{GUEST_PYTHON[1]}"
                    pyc = f"{guest.rsplit('/', 1)[0]}/__pycache__/{f.stem}.{tag}.pyc"
                    files[pyc] = _pyc(f, guest, scratch)
    for single in ("build/toolchains.env", "chaosblade-exec-go.yaml"):
        if (REPO_ROOT / single).is_file():
            files[f"{GUEST_REPO}/{single}"] = REPO_ROOT / single
    return files


JOB_RUN = f"""#!/bin/sh
# The run's job (tests/support/arm64vm.py): the agent, on the serial console.
export PYTHONPATH={GUEST_REPO} BLADE_GO_DLV={GUEST_DLV} PYTHONUNBUFFERED=1
cd {GUEST_REPO}
exec python3 {GUEST_REPO}/tests/support/arm64vm_guest.py
""".encode()


# -- the machine ------------------------------------------------------------------------------

SCRATCH_PREFIX = "blade-go-arm64vm-"


def _remove_stale_scratch():
    """Scratch directories (a 180 MB initrd each) of test processes that died without cleanup."""
    for d in Path(tempfile.gettempdir()).glob(SCRATCH_PREFIX + "*"):
        try:
            os.kill(int(d.name[len(SCRATCH_PREFIX):].split("-")[0]), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (ValueError, PermissionError):
            pass


def _die_with_parent():
    """In the child before exec: SIGKILL when the test process dies, however it dies (a
    SIGKILLed pytest runs no atexit and no finalizer)."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

_live: "set[ArmVM]" = set()


@atexit.register
def _kill_leftovers():  # an interrupted run must not leave qemu behind
    for vm in list(_live):
        vm.kill()


class ArmVM:
    """A booted VM with the agent ready; `call` runs one agent function, `close` powers off."""

    def __init__(self, image: Path, dlv: Path, fixtures: Dict[str, Path],
                 boot_timeout: float = 600.0):
        self.image = Path(image)
        _remove_stale_scratch()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
        self.console: List[str] = []  # every line the serial console printed, in order
        self.results: Dict[int, dict] = {}
        self.ready: Optional[dict] = None
        self.exit_status: Optional[int] = None
        self.broken: Optional[str] = None  # why no request can be answered any more
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self.fixtures = dict(fixtures)
        files: Dict[str, Union[Path, bytes]] = dict(repo_files(self.tmp))
        files[GUEST_DLV] = Path(dlv)
        for name, path in self.fixtures.items():
            files[f"{GUEST_FIXTURES}/{name}"] = Path(path)
        files["/job/run"] = JOB_RUN
        initrd = self.tmp / "initrd.cpio"
        with open(initrd, "wb") as out:
            with open(self.image / "rootfs.cpio", "rb") as base:
                shutil.copyfileobj(base, out, 1 << 20)
            out.write(job_archive(files, executable={"/job/run", GUEST_DLV}))
        self.argv = [require_qemu(), "-machine", "virt", "-cpu", CPU, "-smp", str(SMP),
                     "-m", MEMORY, "-accel", "tcg,thread=multi", "-nodefaults", "-no-reboot",
                     "-display", "none", "-monitor", "none", "-serial", "stdio",
                     "-kernel", str(self.image / "vmlinuz"), "-initrd", str(initrd),
                     "-append", "console=ttyAMA0 rdinit=/init panic=-1 loglevel=3"]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        _live.add(self)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self.ready = self._wait(lambda: self.ready, boot_timeout, "the agent's READY line")
        except BaseException:
            self.kill()
            raise
        self.boot_seconds = time.monotonic() - self.started
        self.boot_cpu = self.cpu_seconds()

    @classmethod
    def boot(cls, fixtures: Dict[str, Path], **kw) -> "ArmVM":
        """Boot with the cached image and arm64 dlv (each skipped/failed as `missing` says)."""
        require_qemu()
        return cls(image_dir(), arm64_dlv(), fixtures, **kw)

    def fixture(self, name: str) -> str:
        """The guest path of a test program given in `fixtures`."""
        assert name in self.fixtures, name
        return f"{GUEST_FIXTURES}/{name}"

    # -- the console ------------------------------------------------------------------------
    def _read(self):
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode(errors="replace").strip("\r\n").strip("\r")
            with self._cond:
                self.console.append(line)
                word, _, rest = line.partition(" ")
                try:
                    if word == "ARM64VM-READY":
                        self.ready = json.loads(base64.b64decode(rest))
                    elif word == "RESULT":
                        rid, data = rest.split(" ", 1)
                        self.results[int(rid)] = json.loads(base64.b64decode(data))
                    elif word == "ARM64VM-EXIT":
                        self.exit_status = int(rest)
                except ValueError:
                    pass  # a console line that merely starts like ours (kernel output mixed in)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _wait(self, have, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = have()
                if got is not None:
                    return got
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    break
                self._cond.wait(min(left, 1.0))
        state = ("running" if self.proc.poll() is None else f"exited with {self.proc.returncode}")
        raise VMError(f"no {what} within {timeout:.0f}s; qemu {state}; console tail:\n"
                      + "\n".join(self.console[-40:]))

    def call(self, fn: str, timeout: float = 600.0, **kw):
        """Run the agent's function `fn(**kw)` in the VM; its value (VMError with the guest's
        traceback when it raised)."""
        if self.broken:
            raise VMError(f"the VM's agent is still busy with an earlier request: {self.broken}")
        rid = next(self._ids)
        data = base64.b64encode(json.dumps({"fn": fn, "kw": kw}).encode()).decode()
        if self.proc.poll() is not None:
            raise VMError(f"the VM is not running (qemu exited with {self.proc.returncode})")
        self.proc.stdin.write(f"CALL {rid} {data}\n".encode())
        self.proc.stdin.flush()
        try:
            res = self._wait(lambda: self.results.get(rid), timeout, f"answer to {fn}{kw}")
        except VMError as e:
            # The agent answers in order: later requests would queue behind this one, each
            # waiting its full timeout. Fail them at once instead.
            self.broken = str(e).splitlines()[0]
            raise
        if not res["ok"]:
            raise VMError(f"{fn}{kw} raised in the VM:\n{res['error']}")
        return res["value"]

    def cpu_seconds(self) -> float:
        """CPU time qemu has used so far (user + system, every vCPU thread): the emulation's
        cost, which a loaded host stretches in wall time but barely changes."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def last_seconds(self) -> float:
        """How long the agent took for the latest answered request."""
        with self._cond:
            return self.results[max(self.results)]["seconds"] if self.results else 0.0

    # -- the end ----------------------------------------------------------------------------
    def close(self, timeout: float = 120.0) -> Optional[int]:
        """Ask the agent to stop (it ends its targets), wait for power-off; kill qemu if it
        does not come. Returns /job/run's exit status as the VM printed it (None if killed)."""
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write(b"QUIT\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()
        return self.exit_status

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(30)
        for s in (self.proc.stdin, self.proc.stdout):
            try:
                s.close()
            except OSError:
                pass
        _live.discard(self)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
