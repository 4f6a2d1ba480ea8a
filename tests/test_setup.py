"""build/setup.sh, the demo's set-up: one line per step and nothing else on success, a step's own
output only when it fails. Run into a fresh virtual environment (PYTHON=), with the dlv the
installer built (build/dlv.sh finds it, nothing is rebuilt)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^\[setup\] (python|blade-go|dlv) +\S.* \(\d+\.\d s\)$")


@pytest.fixture
def venv(tmp_path):
    """A fresh virtual environment for each test: nothing installed yet."""
    v = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(v)], check=True, timeout=300)
    return v


def _setup(venv, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    full.update(PYTHON=str(venv / "bin" / "python"), **env)
    return subprocess.run(["bash", str(REPO / "build" / "setup.sh")], env=full, cwd="/",
                          capture_output=True, text=True, timeout=900)


def test_a_failing_step_shows_its_output(venv):
    """No index reachable: pip fails, and its own error is shown, then which step failed."""
    p = _setup(venv, PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_RETRIES="0",
               PIP_TIMEOUT="2", PIP_NO_CACHE_DIR="1")
    assert p.returncode != 0
    assert "[setup] python failed: " in p.stderr and "pip install" in p.stderr, p.stderr
    assert "Could not find a version that satisfies" in p.stderr  # pip's own words, kept
    assert not p.stdout.strip() or all(LINE.match(x) for x in p.stdout.splitlines()), p.stdout


def test_quiet_on_success_cold_then_warm(venv):
    dlv = subprocess.run(["bash", str(REPO / "build" / "dlv.sh")], capture_output=True,
                         text=True)
    if dlv.returncode != 0:
        from tests.support.toolchains import missing
        missing("build/dlv.sh: " + dlv.stderr[-300:])
    p = _setup(venv)
    if p.returncode != 0 and "[setup] python failed" in p.stderr:
        from tests.support.toolchains import missing
        missing("pip could not install blade-go's dependencies (PyPI?): " + p.stderr[-500:])
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 3 and all(LINE.match(x) for x in lines), p.stdout
    assert p.stderr == "", p.stderr  # no pip root warning, no `go: downloading`
    assert "dependencies installed" in lines[0] and f"pip install -e {REPO}" in lines[1]
    assert lines[2].startswith(f"[setup] dlv        {dlv.stdout.strip()} (")
    blade_go = venv / "bin" / "blade-go"
    assert blade_go.exists()
    v = subprocess.run([str(blade_go), "version"], capture_output=True, text=True, cwd="/")
    assert '"success": true' in v.stdout, v

    p = _setup(venv)  # warm: every step finds its work done
    assert p.returncode == 0 and p.stderr == "", p.stderr
    lines = p.stdout.splitlines()
    assert [x.split()[1] for x in lines] == ["python", "blade-go", "dlv"], lines
    assert "dependencies present" in lines[0] and "installed from" in lines[1]
