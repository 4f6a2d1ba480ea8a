"""The wheel: blade-go installed where there is no Go.

The wheel is built from a copy of this checkout (`pip wheel`, through setup.py, which bundles
the dlv build/dlv.sh gives), installed into a fresh virtual environment, and run on a PATH with
neither go nor dlv, with nothing where .ci/install.sh puts its tools: `check` must find the
bundled dlv, and create/destroy must work against a live target. The wheel is cached by the
hash of its sources and of the dlv it carries.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support import fixtures
from tests.support.targets import call, differences_beyond_retained

REPO = Path(__file__).resolve().parents[1]
WHEEL_INPUTS = ("blade_go", "specs", "build", "setup.py", "setup.cfg", "pyproject.toml",
                "MANIFEST.in", "README.md", "chaosblade-exec-go.yaml")


def _sources() -> list:
    """Files of the checkout that go into the wheel (tracked or not, but not git-ignored)."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard",
                              "--", *WHEEL_INPUTS], capture_output=True, text=True, check=True)
        names = out.stdout.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        names = [str(p.relative_to(REPO)) for w in WHEEL_INPUTS for p in
                 ([REPO / w] if (REPO / w).is_file() else (REPO / w).rglob("*"))
                 if p.is_file() and "__pycache__" not in p.parts
                 and not str(p.relative_to(REPO)).startswith(("build/lib", "build/bdist"))]
    return sorted(n for n in names if (REPO / n).is_file())


def _dlv_to_bundle() -> str:
    p = subprocess.run(["bash", str(REPO / "build" / "dlv.sh")], capture_output=True, text=True)
    if p.returncode != 0:
        from tests.support.toolchains import missing
        missing(f"build/dlv.sh failed: {p.stderr[-500:]}")
    return p.stdout.strip()


def _digest(files, dlv: str) -> str:
    h = hashlib.sha256()
    for n in files:
        h.update(n.encode() + b"\0" + (REPO / n).read_bytes() + b"\0")
    h.update(Path(dlv).read_bytes())
    return h.hexdigest()[:20]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    files = _sources()
    dlv = _dlv_to_bundle()
    out = fixtures.cache_dir() / "wheel" / _digest(files, dlv)
    found = sorted(out.glob("blade_go-*.whl"))
    if found:
        return found[0]
    src = tmp_path_factory.mktemp("wheel-src")
    for n in files:
        (src / n).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / n, src / n)
    staged = tmp_path_factory.mktemp("wheel-out")
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "--no-build-isolation", "-w", str(staged), str(src)],
                       capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, PIP_ROOT_USER_ACTION="ignore"))
    assert p.returncode == 0, p.stdout + p.stderr
    built = sorted(staged.glob("blade_go-*.whl"))
    assert len(built) == 1, built
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(built[0], out / (built[0].name + ".tmp"))
    os.replace(out / (built[0].name + ".tmp"), out / built[0].name)
    return out / built[0].name


def test_wheel_is_platform_tagged_and_carries_dlv(wheel):
    name = wheel.name
    assert name.endswith(("-py3-none-linux_x86_64.whl", "-py3-none-manylinux2014_x86_64.whl")), \
        name
    with zipfile.ZipFile(wheel) as z:
        info = z.getinfo("blade_go/_bin/dlv")
        assert info.external_attr >> 16 & 0o111, "dlv must be executable"
        assert info.file_size == Path(_dlv_to_bundle()).stat().st_size
        tags = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/WHEEL"))).decode()
        assert "Root-Is-Purelib: false" in tags
        assert "blade_go-0.1.0.data/data/share/blade-go/specs/go.yaml".replace(
            "0.1.0", name.split("-")[1]) in z.namelist()


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    v = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(v)], check=True, timeout=300)
    p = subprocess.run([str(v / "bin" / "python"), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", str(wheel)],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        from tests.support.toolchains import missing
        missing(f"pip install of the wheel's dependencies failed (PyPI?): {p.stderr[-800:]}")
    return v


def _no_go_env(venv: Path, tmp: Path) -> dict:
    """The environment of a machine without Go: PATH = the venv plus system directories that
    hold neither go nor dlv; no BLADE_GO_DLV; the installer's tools directory empty."""
    dirs = [str(venv / "bin")] + [d for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin",
                                              "/usr/bin", "/sbin", "/bin")
                                  if not any(os.path.exists(os.path.join(d, x))
                                             for x in ("go", "dlv"))]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BLADE_GO_", "GO", "PYTHON"))}
    env.update(PATH=os.pathsep.join(dirs), BLADE_GO_HOME=str(tmp / "home"),
               BLADE_GO_TOOLS_DIR=str(tmp / "no-tools"))
    assert shutil.which("go", path=env["PATH"]) is None
    assert shutil.which("dlv", path=env["PATH"]) is None
    return env


def _blade_go(venv, env, *args, cwd):
    p = subprocess.run([str(venv / "bin" / "blade-go"), *map(str, args)], env=env, cwd=cwd,
                       capture_output=True, text=True, timeout=180)
    try:
        return p.returncode, json.loads(p.stdout)
    except ValueError:
        raise AssertionError(f"not one JSON Response: {p.stdout!r} {p.stderr[-2000:]!r}")


def test_installed_wheel_without_go(venv, e2e_binary, target_factory, tmp_path):
    env = _no_go_env(venv, tmp_path)
    bundled = next((venv / "lib").glob("python3*/site-packages/blade_go/_bin/dlv"))

    code, resp = _blade_go(venv, env, "check", cwd=tmp_path)
    assert code == 0 and resp["success"], resp
    dlv = resp["result"]["environment"]["dlv"]
    assert dlv["path"] == str(bundled) and dlv["chosen_by"] == "bundled with blade-go", dlv

    t = target_factory(e2e_binary)
    assert call(t, "Query") == '"row-1",<nil>'
    code, resp = _blade_go(venv, env, "create", "go", "return", "--pid", t.pid, "--func",
                           "main.Query", "--value", '"from-the-wheel",error:no go here',
                           cwd=tmp_path)
    assert code == 0 and resp["success"], resp
    uid = resp["result"]
    assert call(t, "Query") == '"from-the-wheel",err(no go here|eof=false|nf=false)'
    code, resp = _blade_go(venv, env, "status", uid, cwd=tmp_path)
    assert resp["result"]["live"]["session"] == "alive", resp
    code, resp = _blade_go(venv, env, "destroy", uid, cwd=tmp_path)
    assert code == 0 and resp["success"], resp
    assert call(t, "Query") == '"row-1",<nil>'
    # code byte-exact; a value the program may still hold stays (issue 16)
    assert differences_beyond_retained(env["BLADE_GO_HOME"], t.pid) == []

    # BLADE_GO_DLV still names another dlv over the bundled one
    env["BLADE_GO_DLV"] = str(tmp_path / "another-dlv")
    code, resp = _blade_go(venv, env, "check", cwd=tmp_path)
    assert code == 1 and resp["result"]["environment"]["dlv"] is None, resp
