"""Build the Go programs under tests/fixtures/ with any test toolchain, cached across runs.

The cache key covers the sources, every option and the toolchain's version, so a rebuild
happens only when something that changes the binary changed. Sources are staged into a
content-addressed directory in the cache (a go.mod is written there when the fixture has
none), so building never writes into tests/fixtures/ and the DWARF file paths are stable.
Several pytest processes may build at once: a per-key lock avoids duplicate work and the
result is renamed into place atomically.
"""
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Optional, Union

from .toolchains import REPO_ROOT, require_go

FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures"
GO_MOD_DIRECTIVE = "1.19"  # the oldest toolchain we build with


class BuildError(RuntimeError):
    pass


def cache_dir() -> Path:
    """$BLADE_GO_TEST_CACHE, else ~/.cache/blade-go-tests: outside the checkout on purpose,
    so CI's fresh clone reuses earlier builds (keys are content hashes, safe to share)."""
    home_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    d = Path(os.environ.get("BLADE_GO_TEST_CACHE") or home_cache / "blade-go-tests")
    d.mkdir(parents=True, exist_ok=True)
    return d


def gocache_root() -> Path:
    """Parent of the per-toolchain GOCACHEs (separately settable so throwaway bin caches
    in tests still reuse compiled packages)."""
    return Path(os.environ.get("BLADE_GO_TEST_GOCACHE") or cache_dir() / "gocache")


def fixture_dir(name_or_dir: Union[str, Path]) -> Path:
    p = Path(name_or_dir)
    if not p.is_absolute() and (FIXTURES_DIR / p).is_dir():
        p = FIXTURES_DIR / p
    if not (p / "main.go").exists() and not any(p.glob("*.go")):
        raise FileNotFoundError(f"no Go fixture at {p}")
    return p.resolve()


def _source_files(src: Path):
    """Relative paths of everything that affects the build (Go sources, go.mod, embeds)."""
    return sorted(f.relative_to(src) for f in src.rglob("*")
                  if f.is_file() and not any(part.startswith((".", "_")) for part in
                                             f.relative_to(src).parts))


def _sources_digest(src: Path) -> str:
    h = hashlib.sha256()
    for rel in _source_files(src):
        h.update(str(rel).encode() + b"\0" + (src / rel).read_bytes() + b"\0")
    return h.hexdigest()


def _stage_sources(src: Path, name: str, digest: str) -> Path:
    """Copy the fixture into cache/src/<name>-<digest>/ once; add go.mod when missing."""
    staged = cache_dir() / "src" / f"{name}-{digest[:16]}"
    if staged.exists():
        return staged
    staged.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=staged.parent))
    for rel in _source_files(src):
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, tmp / rel)
    if not (tmp / "go.mod").exists():
        (tmp / "go.mod").write_text(f"module {name}\n\ngo {GO_MOD_DIRECTIVE}\n")
    try:
        os.rename(tmp, staged)
    except OSError:  # another process staged the same content first
        shutil.rmtree(tmp, ignore_errors=True)
    return staged


def go_env(toolchain_version: str, goarch: str, extra_env: Optional[Dict[str, str]] = None):
    """Environment for a hermetic build: no toolchain downloads, no module fetches."""
    env = dict(os.environ)
    for k in ("GOROOT", "GOFLAGS", "GOPATH", "GOBIN", "GOEXPERIMENT", "GOAMD64", "GO386"):
        env.pop(k, None)
    env.update({
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-buildvcs=false",
        "GOPROXY": "off",
        "GOOS": "linux",
        "GOARCH": goarch,
        "CGO_ENABLED": "0",
        "GOCACHE": str(gocache_root() / toolchain_version),
        "GOPATH": str(cache_dir() / "gopath"),
    })
    env.update(extra_env or {})
    return env


def build_fixture(name_or_dir: Union[str, Path], toolchain: str = "go-default",
                  goarch: str = "amd64", pie: bool = False, ldflags: str = "",
                  gcflags: str = "", extra_env: Optional[Dict[str, str]] = None) -> Path:
    """Path of the fixture's executable built with these options (built once, then cached).

    A missing toolchain skips the test (fails it under CI=true).
    """
    tc = require_go(toolchain)
    src = fixture_dir(name_or_dir)
    name = src.name
    digest = _sources_digest(src)
    options = {"toolchain": tc.version, "goroot": str(Path(tc.path).parent.parent),
               "goarch": goarch, "pie": pie, "ldflags": ldflags, "gcflags": gcflags,
               "env": sorted((extra_env or {}).items()), "src": digest}
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:20]
    tag = f"{name}-{toolchain}-{goarch}{'-pie' if pie else ''}-{key}"
    out_dir = cache_dir() / "bin"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / tag
    if out.exists():
        return out

    with open(out_dir / f".{tag}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.exists():  # built by another process while we waited
            return out
        staged = _stage_sources(src, name, digest)
        tmp_out = out_dir / f".{tag}.{os.getpid()}.tmp"
        cmd = [tc.path, "build", "-o", str(tmp_out)]
        if pie:
            cmd.append("-buildmode=pie")
        if ldflags:
            cmd.append("-ldflags=" + ldflags)
        if gcflags:
            cmd.append("-gcflags=" + gcflags)
        cmd.append(".")
        proc = subprocess.run(cmd, cwd=staged, capture_output=True, text=True, timeout=600,
                              env=go_env(tc.version, goarch, extra_env))
        if proc.returncode != 0:
            tmp_out.unlink(missing_ok=True)
            raise BuildError(f"{' '.join(cmd)} (in {staged}, {tc.version}) failed:\n"
                             f"{proc.stdout}{proc.stderr}")
        os.replace(tmp_out, out)
    return out
