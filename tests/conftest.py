"""Shared pytest setup: repo root on sys.path and fixtures for builds, targets and delve.

Every test runs in CI (no opt-in slow marker); a missing toolchain skips locally and fails
under CI=true (see tests/support/toolchains.py).
"""
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support import fixtures as _fixtures  # noqa: E402
from tests.support import targets as _targets  # noqa: E402
from tests.support import toolchains as _toolchains  # noqa: E402


@pytest.fixture
def target_factory():
    """start(binary, args=(), env=None, ready_line="READY", ...) -> RunningTarget.

    Every target started through it is stopped when the test ends, pass or fail.
    """
    started = []

    def start(binary, args=(), env=None, ready_line="READY", **kw):
        t = _targets.start_target(binary, args=args, env=env, ready_line=ready_line, **kw)
        started.append(t)
        return t

    yield start
    for t in reversed(started):
        t.stop()


@pytest.fixture
def build():
    """build(name_or_dir, toolchain="go-default", goarch="amd64", pie=False, ...) -> Path."""
    return _fixtures.build_fixture


@pytest.fixture
def dlv():
    """Path of the pinned amd64 dlv (skips, or fails under CI=true, when missing)."""
    return _toolchains.require_dlv()


@pytest.fixture
def dlv386():
    """Path of the 32-bit dlv for GOARCH=386 targets."""
    return _toolchains.require_dlv386()


@pytest.fixture(scope="session")
def e2e_binary():
    """tests/fixtures/e2e_target built with the default Go (the end-to-end target)."""
    return _fixtures.build_fixture("e2e_target")


@pytest.fixture
def blade(tmp_path):
    """The blade-go CLI with a state directory of this test's own."""
    from tests.support.blade import Blade
    return Blade(tmp_path / "home")


# -- nothing left running ---------------------------------------------------------------------
def _ours(pid: int, roots: tuple) -> str | None:
    """A description of pid when it is a blade-go supervisor, fork server or dlv started by this
    run: its command line names a directory under this run's temporary directories, or its
    environment has BLADE_GO_HOME / BLADE_GO_SESSION_DIR there (dlv), or this pytest process is
    its parent. Other helpers' test runs on the same machine use other directories and are not
    looked at."""
    import os
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if stat[0] in ("Z", "X"):
        return None
    words = [w.decode(errors="replace") for w in cmd if w]
    text = " ".join(words)
    kind = ("supervisor" if "blade_go.session.supervisor" in text else
            "fork server" if "blade_go.session.forkserver" in text else
            "dlv guardian" if any(w.endswith("session/guard.py") for w in words) else
            "dlv" if words and os.path.basename(words[0]) == "dlv" else None)
    if kind is None:
        return None
    try:
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        env = []
    places = [text] + [e.decode(errors="replace").split("=", 1)[1] for e in env
                       if e.startswith((b"BLADE_GO_HOME=", b"BLADE_GO_SESSION_DIR="))]
    if int(stat[1]) == os.getpid() or any(r in p for p in places for r in roots):
        return f"{kind} pid {pid}: {text[:200]}"
    return None


def leftover_processes(roots) -> list:
    import os
    roots = tuple(str(r) for r in roots)
    return [d for d in (_ours(int(p), roots) for p in os.listdir("/proc") if p.isdigit()) if d]


@pytest.fixture(scope="session", autouse=True)
def no_blade_go_process_left(tmp_path_factory):
    """Fails the run when a supervisor or dlv started by it still runs at its end (after a
    grace period for supervisors that are detaching), and ends those (SIGTERM only)."""
    import os
    import signal
    import tempfile
    import time
    roots = (tmp_path_factory.getbasetemp(),)
    yield
    deadline = time.monotonic() + 20
    left = leftover_processes(roots)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = leftover_processes(roots)
    for d in left:
        try:
            os.kill(int(d.split(" pid ", 1)[1].split(":")[0]), signal.SIGTERM)
        except (OSError, ValueError):
            pass
    assert not left, ("blade-go processes started by this test run are still running:\n"
                      + "\n".join(left))
