"""blade-go's delve patch series (build/delve): the build, delve's own attach tests on the
patched tree, the exec-race fallback, and what blade-go makes of a dlv (session/dlvinfo.py).

build/delve/build.sh is the interface other scripts use: one absolute path on stdout, nothing
else on success. .ci/install.sh has built everything here already (cached), so these tests
only run what was built: delve's TestAttachDetach and TestWaitForAttach (default and PIE
builds of their fixture) and the series' own TestAttachPreload* (kept, exec race, disabled).
"""
import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from blade_go.session import deadlines, dlvinfo
from tests.support.blade import Blade
from tests.support.targets import call, differences_beyond_retained, text_differences
from tests.support.toolchains import REPO_ROOT, dlv_path, missing, pinned, require_go

BUILD = REPO_ROOT / "build" / "delve" / "build.sh"
PATCHES = sorted((REPO_ROOT / "build" / "delve" / "patches").glob("*.patch"))


def series_hash() -> str:
    h = hashlib.sha256()
    for p in PATCHES:
        h.update(p.name.encode() + b"\n" + p.read_bytes())
    return h.hexdigest()[:12]


def build_sh(*args) -> str:
    go = require_go()
    env = dict(os.environ, BLADE_GO_GO=go.path)
    p = subprocess.run(["bash", str(BUILD), *args], capture_output=True, text=True, env=env,
                       timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    # the interface: one absolute path, nothing else; quiet on success
    assert p.stdout.count("\n") == 1 and os.path.isabs(p.stdout.strip()), p.stdout
    assert p.stderr == "", p.stderr
    return p.stdout.strip()


def test_build_sh_gives_the_patched_dlv_and_says_what_it_is():
    built = build_sh()
    info = dlvinfo.describe(built)
    assert info["kind"] == "patched" and info["preload"] is True
    assert info["build"] == f"blade-go-preload-{series_hash()}"
    assert info["version"] == pinned()["DLV_VERSION"].lstrip("v")
    stock = dlvinfo.describe(build_sh("--stock"))
    assert stock["kind"] == "stock" and stock["version"] == info["version"]


def test_the_suite_runs_on_the_patched_dlv():
    """What tests/support gives every other test (and .ci/install.sh puts in bin/dlv)."""
    path = dlv_path()
    if path is None or dlvinfo.describe(path)["kind"] != "patched":
        missing(f"the dlv the tests use ({path}) is not the patched build")


def _go_path_env():
    go = require_go()
    return dict(os.environ, PATH=os.path.dirname(go.path) + os.pathsep + os.environ["PATH"],
                GOTOOLCHAIN="local", GOFLAGS="-buildvcs=false")


def _run_go_tests(binary: Path, cwd: Path, pattern: str, *extra, timeout=300) -> str:
    p = subprocess.run([str(binary), "-test.run", pattern, "-test.v", "-test.count=1", *extra],
                       cwd=cwd, env=_go_path_env(), capture_output=True, text=True,
                       timeout=timeout)
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "\nPASS" in out, out[-4000:]
    return out


def test_the_preload_is_kept_and_an_exec_in_between_falls_back():
    """TestAttachPreloadExecRace: the target execs another file between the preload and
    PTRACE_ATTACH; the patched Attach must discard the preload and attach to the new image."""
    tree = Path(build_sh("--tests"))
    out = _run_go_tests(tree / "tests" / "native.test", tree / "src" / "pkg" / "proc" / "native",
                        "^TestAttachPreload")
    for name in ("TestAttachPreloadKept", "TestAttachPreloadExecRace",
                 "TestAttachPreloadDisabled"):
        assert f"--- PASS: {name}" in out, out[-3000:]


@pytest.mark.parametrize("mode", ["default", "pie"])
def test_delves_own_attach_tests_pass_on_the_patched_tree(mode):
    tree = Path(build_sh("--tests"))
    extra = ["-test-buildmode=pie"] if mode == "pie" else []
    out = _run_go_tests(tree / "tests" / "proc.test", tree / "src" / "pkg" / "proc",
                        "^(TestAttachDetach|TestWaitForAttach)$", *extra)
    for name in ("TestAttachDetach", "TestWaitForAttach"):
        assert f"--- PASS: {name}" in out, out[-3000:]


def test_create_reports_the_measured_pause_on_the_patched_dlv(tmp_path, e2e_binary,
                                                                target_factory):
    built = build_sh()
    blade = Blade(tmp_path / "home", env={"BLADE_GO_DLV": built})
    t = target_factory(e2e_binary)
    code, resp = blade.run("create", "go", "return", "--pid", t.pid, "--func", "main.Query",
                           "--value", '"p",nil')
    assert code == 0 and resp["success"], resp
    paused = resp["target_paused"]
    assert paused["dlv"] == "patched" and paused["attach_ms"] > 0
    assert 0 < paused["attach_all_stopped_ms"] <= paused["attach_ms"]
    assert paused["halts_ms"] and all(h > 0 for h in paused["halts_ms"])
    assert paused["total_ms"] == pytest.approx(paused["attach_ms"] + sum(paused["halts_ms"]),
                                               abs=0.2)
    assert call(t, "Query") == '"p",<nil>'
    status = blade.ok("status", resp["result"])
    assert status["result"]["target_paused"] == paused  # kept in the record
    assert status["dlv"]["kind"] == "patched" and status["dlv"]["path"] == built
    # a dlv that loads before stopping runs with GOGC=50: a smaller peak RSS, the same pause
    environ = open(f"/proc/{status['live']['dlv_pid']}/environ", "rb").read().split(b"\0")
    assert b"GOGC=50" in environ or "GOGC" in os.environ
    report = blade.ok("inspect", "--pid", t.pid)
    assert report["dlv"]["path"] == built and report["dlv"]["preload"] is True
    blade.ok("destroy", resp["result"])
    assert differences_beyond_retained(blade.home, t.pid) == []


# -- dlvinfo and deadlines: pure logic ------------------------------------------------------------

def _fake_dlv(tmp_path, name, build_line):
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\necho 'Delve Debugger'\necho 'Version: 1.27.2'\necho '{build_line}'\n")
    path.chmod(0o755)
    return str(path)


def test_dlvinfo_tells_patched_from_stock(tmp_path, monkeypatch):
    patched = _fake_dlv(tmp_path, "p", "Build: blade-go-preload-0123456789ab")
    stock = _fake_dlv(tmp_path, "s", "Build: $Id: 360e7b2181d3da54115aaee4f569954bca95cfe3 $")
    info = dlvinfo.describe(patched, 100_000_000)
    assert {k: info[k] for k in ("path", "version", "build", "kind", "preload", "patch_series")} \
        == {"path": patched, "version": "1.27.2", "build": "blade-go-preload-0123456789ab",
            "kind": "patched", "preload": True, "patch_series": "0123456789ab"}
    assert "tens of ms" in info["first_attach_pause"]
    s = dlvinfo.describe(stock, 100_000_000)
    assert s["kind"] == "stock" and s["preload"] is False
    assert "1.6 s" in s["first_attach_pause"] and "100 MB" in s["first_attach_pause"]
    monkeypatch.setenv("DELVE_ATTACH_PRELOAD", "0")  # a patched dlv told not to preload
    assert dlvinfo.describe(patched)["preload"] is False
    broken = tmp_path / "broken"
    broken.write_text("not a program")
    broken.chmod(0o755)
    assert dlvinfo.describe(str(broken))["kind"] == "unknown"


def test_deadlines_grow_with_the_executable():
    assert deadlines.first_answer_timeout(None) == deadlines.ANSWER_BASE
    assert deadlines.first_answer_timeout(100_000_000) == 70.0
    assert deadlines.first_answer_timeout(200_000_000) > deadlines.first_answer_timeout(100_000_000)
    assert deadlines.session_start_timeout(100_000_000) > 70.0 + deadlines.LISTEN_TIMEOUT


FAKE_SLOW_DLV = textwrap.dedent('''\
    #!{python}
    # A dlv that listens and never answers: the attach of a huge binary on a busy host.
    import os, signal, socket, sys, time
    if sys.argv[1:2] == ["version"]:
        print("Delve Debugger\\nVersion: 1.27.2\\nBuild: fake-slow"); sys.exit(0)
    listen = [a for a in sys.argv if a.startswith("--listen=")][0].split("=", 1)[1]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    s = socket.socket(socket.AF_UNIX); s.bind(listen[5:]); s.listen(4)
    print("API server listening at:", listen[5:], flush=True)
    conns = []
    while True:
        conns.append(s.accept()[0])
    ''')


def test_a_slow_attach_says_what_was_slow(tmp_path, e2e_binary, target_factory, monkeypatch):
    fake = tmp_path / "slow-dlv"
    fake.write_text(FAKE_SLOW_DLV.format(python=sys.executable))
    fake.chmod(0o755)
    blade = Blade(tmp_path / "home", env={"BLADE_GO_DLV": str(fake)})
    t = target_factory(e2e_binary)
    mb = os.path.getsize(e2e_binary) / 1e6
    code, resp = blade.run("create", "go", "return", "--pid", t.pid, "--func", "main.Query",
                           "--value", '"p",nil', timeout=180)
    assert code == 1 and not resp["success"]
    err = resp["error"]
    assert "had not finished attaching" in err and "slow, not failed" in err, err
    assert f"{mb:.0f} MB executable" in err and "load average" in err, err
    waited = float(err.split(" executable after ")[1].split(" s")[0])
    assert waited >= deadlines.first_answer_timeout(os.path.getsize(e2e_binary)) - 1
    assert t.alive() and call(t, "Query") != '"p",<nil>'
