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
