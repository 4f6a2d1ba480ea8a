"""The real chaosblade CLI for tests: built once by ../shared/chaosblade/build-blade.sh into
$TOOLS_DIR/blade-<CHAOSBLADE_VERSION> (.ci/install.sh does the same), then copied per test
module so that installing blade-go into it, and blade's own sqlite file (chaosblade.dat, kept
next to blade), never leak between modules."""
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import toolchains

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO.parent / "shared" / "chaosblade" / "build-blade.sh"
PATCHED_BUILD_SCRIPT = REPO / "build" / "chaosblade" / "build-patched.sh"
RUNTIME = ("chaosblade.dat", "logs")  # what blade itself writes next to itself when it runs
BUILD_ONLY = ("operator", ".patched")  # what build-patched.sh adds beside the release


def version() -> str:
    return toolchains.pinned()["CHAOSBLADE_VERSION"]


def release_dir() -> Path:
    """The built release (building it when missing, as .ci/install.sh would)."""
    out = toolchains.tools_dir() / f"blade-{version()}"
    spec = out / "yaml" / f"chaosblade-os-spec-{version()}.yaml"
    if (out / "blade").is_file() and (out / "bin" / "chaos_os").is_file() and spec.is_file():
        return out
    if not BUILD_SCRIPT.is_file():
        toolchains.missing(f"chaosblade {version()} not built and {BUILD_SCRIPT} not found")
    p = subprocess.run(["bash", str(BUILD_SCRIPT), str(out)], capture_output=True, text=True,
                       timeout=1800, env={**os.environ, "PATH": os.environ["PATH"] +
                                          ":/usr/local/go/bin"})
    if p.returncode != 0:
        toolchains.missing(f"build-blade.sh failed: {p.stderr[-2000:]}")
    return out


def patched_release_dir() -> Path:
    """blade built against the patched chaosblade-exec-cri, with the cri and k8s spec files
    and the patched operator's test binary (build/chaosblade/build-patched.sh, cached by the
    patches' hash; .ci/install.sh builds it into $TOOLS_DIR/blade-<version>-patched)."""
    out = toolchains.tools_dir() / f"blade-{version()}-patched"
    p = subprocess.run(["bash", str(PATCHED_BUILD_SCRIPT), str(out), str(release_dir())],
                       capture_output=True, text=True, timeout=1800,
                       env={**os.environ, "PATH": os.environ["PATH"] + ":/usr/local/go/bin"})
    if p.returncode != 0:  # returns at once when the cached build matches the patches
        toolchains.missing(f"build-patched.sh failed: {p.stdout[-1000:]} {p.stderr[-2000:]}")
    return out


def copy_release(dest: Path, source: Path = None) -> Path:
    """A private copy of the release, without blade's runtime files (fresh sqlite db)."""
    source = Path(source or release_dir())
    shutil.copytree(source, dest, symlinks=True,
                    ignore=lambda d, names: [n for n in names if Path(d) == source
                                             and n in RUNTIME + BUILD_ONLY])
    return dest


def snapshot(root: Path, skip_runtime=True) -> dict:
    """relative path -> (mode, sha256 or symlink target) of every file under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if skip_runtime and rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d not in RUNTIME]
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            rel = rel_dir / name
            if skip_runtime and str(rel) in RUNTIME:
                continue
            p = root / rel
            st = p.lstat()
            if p.is_symlink():
                out[str(rel)] = (st.st_mode, "-> " + os.readlink(p))
            else:
                out[str(rel)] = (st.st_mode, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


class BladeCLI:
    """`blade` of one release copy, with blade-go's state in its own home."""

    def __init__(self, home: Path, state_home: Path, extra_env=None):
        self.home = Path(home)
        self.state_home = Path(state_home)
        self.env = {**os.environ, "BLADE_GO_HOME": str(state_home), **(extra_env or {})}
        self.env.pop("BLADE_GO_UNDER_BLADE", None)

    def run(self, *args, timeout=180):
        """(exit status, stdout text, stderr text) of `blade args...`."""
        p = subprocess.run([str(self.home / "blade"), *map(str, args)], capture_output=True,
                           text=True, env=self.env, timeout=timeout, cwd=self.home)
        return p.returncode, p.stdout, p.stderr

    def response(self, *args, **kw) -> dict:
        """blade's printed Response (on stdout on success, stderr on failure)."""
        code, out, err = self.run(*args, **kw)
        for text in (out, err):
            for line in text.splitlines():
                line = line.strip()
                if line.startswith("{"):
                    resp = json.loads(line)
                    resp["_exit"] = code
                    return resp
        raise AssertionError(f"blade {' '.join(map(str, args))}: no JSON Response; exit {code}, "
                             f"stdout {out!r}, stderr {err!r}")

    def ok(self, *args, **kw):
        resp = self.response(*args, **kw)
        assert resp["success"] is True and resp["code"] == 200, resp
        return resp.get("result")

    def record(self, uid) -> dict:
        return self.ok("status", uid)


def blade_go(*args, env=None, timeout=120) -> dict:
    """Run blade-go itself (install/uninstall, status of its own records)."""
    p = subprocess.run([sys.executable, "-m", "blade_go", *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    try:
        return json.loads(p.stdout)
    except ValueError:
        raise AssertionError(f"blade-go {args}: stdout {p.stdout!r} stderr {p.stderr[-2000:]!r}")


@contextlib.contextmanager
def installed_release(dest: Path, *install_args, source: Path = None):
    """A copy of the real release (`source`, default the stock one) with blade-go installed
    into it (`install_args`, e.g. "--via", "cplus"); on exit, uninstalled and checked to be as
    it was (blade's own runtime files, chaosblade.dat and logs/, aside)."""
    rel = copy_release(dest, source)
    pristine = snapshot(rel)
    resp = blade_go("chaosblade", "install", "--home", rel, *install_args)
    assert resp["success"], resp
    yield rel
    resp = blade_go("chaosblade", "uninstall", "--home", rel)
    assert resp["success"], resp
    assert snapshot(rel) == pristine
