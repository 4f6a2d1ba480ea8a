"""Which dlv is this, and what does its first attach cost the target?

blade-go runs on any dlv >= 1.20 (Debian's, a user's own `go install`), and on the build
blade-go's install makes from the pinned delve source with build/delve/patches, which loads
the executable *before* it stops the process. The two differ in the pause the first create
puts on the target: a stock dlv keeps every thread stopped while it loads the executable (about
1 s per 60 MB of executable on a quiet 2-CPU machine, several times that under load); the
patched one only while it attaches the threads and sets its runtime breakpoints (tens of ms).

    >>> describe("/opt/blade-go-tools/bin/dlv")
    {'path': '/opt/blade-go-tools/bin/dlv', 'version': '1.27.2',
     'build': 'blade-go-preload-4e114787c2f9', 'kind': 'patched', 'preload': True,
     'patch_series': '4e114787c2f9', 'first_attach_pause': 'tens of ms: ...'}

`kind` is "patched" when `dlv version` says `Build: blade-go-preload-<hash>` (set by
build/delve/build.sh), else "stock". `preload` is False for a patched dlv run with
DELVE_ATTACH_PRELOAD=0 in the environment (it then behaves like stock). Standard library only:
`blade-go check`, `inspect` and `status` import it. The answer is cached per file (path, size,
mtime), so asking twice runs `dlv version` once.
"""
import os
import re
import subprocess

PATCHED_BUILD = "blade-go-preload-"
# Measured (docs/BENCHMARKS.md): stock dlv 1.27.2 pauses about 16 ms per MB of executable on
# a quiet 2-CPU VM (976 ms at 68 MB, 1,670 ms at 100 MB); a busy machine multiplies it.
STOCK_MS_PER_MB = 16.0

_cache: dict = {}


def describe(dlv_path: str, exe_size: int | None = None) -> dict:
    """Facts about the dlv at dlv_path (see the module docstring). exe_size, the target's
    executable in bytes, makes the expected pause of a stock dlv a figure."""
    path = os.path.abspath(dlv_path)
    try:
        st = os.stat(path)
        key = (path, st.st_size, st.st_mtime_ns)
    except OSError as e:
        return {"path": path, "version": None, "build": None, "kind": "unknown",
                "preload": False, "error": f"cannot stat {path}: {e.strerror}"}
    info = _cache.get(key)
    if info is None:
        info = _cache[key] = _version(path)
    out = {"path": path, **info}
    out["preload"] = out["kind"] == "patched" and os.environ.get("DELVE_ATTACH_PRELOAD") != "0"
    if out["kind"] == "patched":
        out["patch_series"] = out["build"][len(PATCHED_BUILD):]
    out["first_attach_pause"] = expected_pause(out["preload"], exe_size)
    return out


def expected_pause(preload: bool, exe_size: int | None = None) -> str:
    """What the first attach will cost the target, in words (a measured figure comes back in
    the create's result, `target_paused`)."""
    if preload:
        return ("tens of ms: dlv loads the executable before it stops the process, then "
                "stops every thread only to attach them and set its runtime breakpoints")
    if exe_size:
        mb = exe_size / 1e6
        return (f"about {mb * STOCK_MS_PER_MB / 1000:.1f} s or more: this dlv stops every thread "
                f"while it loads the {mb:.0f} MB executable (about {STOCK_MS_PER_MB:.0f} ms per "
                "MB on a quiet machine, several times that under load)")
    return ("about 16 ms per MB of executable or more: this dlv stops every thread while it "
            "loads the executable")


def _version(path: str) -> dict:
    try:
        out = subprocess.run([path, "version"], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"version": None, "build": None, "kind": "unknown",
                "error": f"`{path} version` failed: {e}"}
    version = re.search(r"^Version:\s*(\S+)", out, re.M)
    build = re.search(r"^Build:\s*(.*?)\s*$", out, re.M)
    build = build.group(1) if build else None
    return {"version": version.group(1) if version else None, "build": build,
            "kind": "patched" if build and build.startswith(PATCHED_BUILD) else "stock"}
