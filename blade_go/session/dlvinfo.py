"""What a dlv executable is: its version, its build string, and whether it is blade-go's
patched build or a stock one.

    >>> describe("/opt/blade-go-tools/bin/dlv")
    {'path': '/opt/blade-go-tools/bin/dlv', 'version': '1.27.2',
     'build': '$Id: 360e7b2181d3da54115aaee4f569954bca95cfe3 $', 'kind': 'stock', 'preload': False}

Minimal version (issue 21, for `blade-go check`): it parses `dlv version` ("Version: X",
"Build: Y"); a build string starting with "blade-go-" is the patched build. The delve patch
series replaces this module with its own, same interface.
"""
import subprocess

PATCHED_PREFIX = "blade-go-"


def parse_version_output(text: str) -> dict:
    """{"version", "build"} from `dlv version`'s output ("" for a missing line)."""
    out = {"version": "", "build": ""}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("Version", "Build"):
            out[key.strip().lower()] = value.strip()
    return out


def describe(dlv_path: str) -> dict:
    """path, version, build, kind ("patched" | "stock") and preload (whether it reads the
    executable ahead; only the patched build can) of the dlv at dlv_path. Raises OSError or
    subprocess errors when it cannot be run."""
    p = subprocess.run([dlv_path, "version"], capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    info = parse_version_output(p.stdout)
    if p.returncode != 0 or not info["version"]:
        raise OSError(f"{dlv_path} version: exit {p.returncode}: "
                      f"{(p.stdout + p.stderr).strip()[-300:] or 'no output'}")
    patched = info["build"].startswith(PATCHED_PREFIX)
    return {"path": dlv_path, "version": info["version"], "build": info["build"],
            "kind": "patched" if patched else "stock", "preload": patched}
