"""blade-go as blade's *cplus agent*: `blade-go chaosblade install --via cplus`.

blade 1.8 sends every experiment of yaml/chaosblade-cplus-spec-<version>.yaml, whatever its
target, over HTTP to the agent `blade prepare cplus --port P` started (exec/cplus/executor.go),
so target `go` can travel that way to `blade-go server`:
  - blade prepare cplus --port P: checks lib/cplus/chaosblade-exec-cplus and lib/cplus/script
    exist, runs `/bin/sh -c "lib/cplus/chaosblade-exec-cplus --port P"` and *waits for it*, then
    GETs http://127.0.0.1:P/status. Our launcher therefore starts `blade-go server` detached
    (its command line carries the name chaosblade-exec-cplus and the port, which is how blade
    finds and later kills its agent) and returns once /status answers;
  - blade create go ...: GET /create?target=go&suid=&action=&flags to the port of the first
    Running cplus preparation. Do not pass --port on create: blade 1.8 looks the preparation up
    by `process = <port>` while it stored process = "cplus", so an explicit --port never matches
    (error 47003); without it the lookup takes any running agent;
  - blade revoke <prepare uid>: GET /remove, then kill -9 of the agent's processes.
The os-spec way (install.py) and this one are exclusive: blade cannot have two `go` targets.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ..errors import BladeError, Code
from . import install as osmode

AGENT = "chaosblade-exec-cplus"
MANIFEST = "blade-go.json"
LAUNCHER = """#!/bin/sh
# {mark}: blade's cplus agent launcher, installed by `blade-go chaosblade install --via cplus`;
# undo with `blade-go chaosblade uninstall --home <this release>`.
PYTHONPATH={pythonpath}"${{PYTHONPATH:+:$PYTHONPATH}}" \\
  exec {python} -m blade_go.chaosblade.cplus "$0" "$@"
"""


def _paths(rel):
    cplus = rel.home / "lib" / "cplus"
    return cplus, cplus / AGENT, cplus / "script", cplus / MANIFEST


def installed(rel) -> bool:
    return _paths(rel)[3].exists()


def install(home, version=None) -> dict:
    rel = osmode.Release(home)
    if osmode.is_dispatcher(rel.chaos_os):
        raise BladeError(Code.PARAMETER_INVALID, "blade-go is installed the os-spec way in "
                         f"{rel.home}: uninstall it first (blade cannot have two go targets)")
    version = rel.version(version)
    cplus, launcher, script, manifest = _paths(rel)
    info = json.loads(manifest.read_text()) if manifest.exists() else {}
    if launcher.exists() and not info:
        raise BladeError(Code.PARAMETER_INVALID, f"{launcher} exists (a real cplus agent?): "
                         "not replacing it")
    created = list(info.get("created", []))
    for d in (rel.home / "lib", cplus, script):
        if not d.exists():
            d.mkdir()
            created.append(str(d))
    spec = rel.yaml / f"chaosblade-cplus-spec-{version}.yaml"
    backup = Path(str(spec) + osmode.ORIG)
    items = osmode._our_items()
    if str(spec) in created or not spec.exists():
        text = "version: v1\nkind: plugin\nitems:\n" + items
        if str(spec) not in created:
            created.append(str(spec))
    else:
        if not backup.exists():
            osmode._write_atomic(backup, spec.read_bytes(), spec.stat().st_mode & 0o7777)
        text = osmode.merge_spec(backup.read_text(), items)
    osmode._write_atomic(spec, text.encode(), 0o644)
    pkg_parent = str(Path(__file__).resolve().parents[2])
    body = LAUNCHER.format(mark=osmode.MARK, pythonpath=shlex.quote(pkg_parent),
                           python=shlex.quote(os.path.abspath(sys.executable)))
    osmode._write_atomic(launcher, body.encode(), 0o755)
    if str(launcher) not in created:
        created.append(str(launcher))
    info = {"version": version, "spec": str(spec), "created": created,
            "python": os.path.abspath(sys.executable), "pythonpath": pkg_parent}
    osmode._write_atomic(manifest, (json.dumps(info, indent=1) + "\n").encode(), 0o644)
    return {**info, "home": str(rel.home), "message": f"run `blade prepare cplus --port P`, "
            f"then `blade create go ...` (without --port) reaches blade-go over HTTP"}


def uninstall(rel) -> list:
    cplus, launcher, script, manifest = _paths(rel)
    info = json.loads(manifest.read_text())
    changed = []
    spec = Path(info["spec"])
    backup = Path(str(spec) + osmode.ORIG)
    if backup.exists():
        os.replace(backup, spec)
        changed.append(str(spec))
    manifest.unlink()
    for p in reversed(info.get("created", [])):  # deepest last created first
        p = Path(p)
        if p.is_dir():
            try:
                p.rmdir()
            except OSError:
                continue  # not empty: someone else's files now live there
        elif p.exists():
            p.unlink()
        changed.append(str(p))
    return changed


# ---- the launcher: `chaosblade-exec-cplus --port P [--ip I]` -----------------------------

def _answers(ip, port) -> bool:
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/status", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def launch(argv) -> dict:
    args = dict(zip(argv[::2], argv[1::2]))
    port, ip = args.get("--port"), args.get("--ip") or "127.0.0.1"
    if not port or not port.isdigit():
        raise BladeError(Code.PARAMETER_LESS, "less parameter: --port")
    if _answers(ip, port):
        return {"code": 200, "success": True, "result": f"already serving on {ip}:{port}"}
    from ..state import log_path
    log = open(log_path(), "ab")
    # the agent's command line names it the way blade looks for it: chaosblade-exec-cplus + port
    subprocess.Popen([sys.executable, "-m", "blade_go", "server", "--port", port, "--ip", ip,
                      "--name", AGENT], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                     start_new_session=True, close_fds=True)
    deadline = time.monotonic() + 30
    while not _answers(ip, port):
        if time.monotonic() > deadline:
            raise BladeError(Code.HTTP_EXEC_FAILED, f"blade-go server did not answer on "
                             f"{ip}:{port} within 30s; see {log_path()}")
        time.sleep(0.1)
    return {"code": 200, "success": True, "result": f"blade-go serving on {ip}:{port}"}


def main(argv):
    try:
        resp = launch(argv[1:])
    except BladeError as e:
        resp = {"code": e.code, "success": False, "error": e.message}
    print(json.dumps(resp), flush=True)
    return 0 if resp["success"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
