"""The arm64 VM's per-boot archive and file list (tests/support/arm64vm.py), without booting:
the newc cpio it writes must read back, through GNU cpio, as exactly the files, modes and bytes
given (the kernel's initramfs unpacker reads the same format)."""
import shutil
import subprocess
import sys

from tests.support import arm64vm
from tests.support.toolchains import missing


def unpack(blob: bytes, dest):
    if not shutil.which("cpio"):
        missing("cpio not found")
    p = subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=blob,
                       cwd=dest, capture_output=True)
    assert p.returncode == 0, p.stderr


def test_job_archive_reads_back_exactly(tmp_path):
    host_file = tmp_path / "prog"
    host_file.write_bytes(b"\x7fELF" + bytes(range(256)) * 3)  # not a multiple of 4
    host_file.chmod(0o755)
    files = {"/opt/x/bin/prog": host_file, "/job/run": b"#!/bin/sh\necho hi\n",
             "/repo/a/b/c.py": b"x = 1\n", "/repo/a/empty": b""}
    blob = arm64vm.job_archive(files, executable={"/job/run"})
    assert len(blob) % 512 == 0
    dest = tmp_path / "out"
    dest.mkdir()
    unpack(blob, dest)
    for path, src in files.items():
        got = dest / path.lstrip("/")
        assert got.read_bytes() == (src if isinstance(src, bytes) else src.read_bytes()), path
    assert (dest / "opt/x/bin/prog").stat().st_mode & 0o777 == 0o755  # host file's x bit kept
    assert (dest / "job/run").stat().st_mode & 0o777 == 0o755
    assert (dest / "repo/a/b/c.py").stat().st_mode & 0o777 == 0o644
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=blob, capture_output=True,
                             check=True).stdout.decode().split()
    # every directory precedes what it holds (the kernel does not create parents)
    for i, name in enumerate(listing):
        parent = name.rsplit("/", 1)[0] if "/" in name else None
        assert parent is None or parent in listing[:i], (name, listing)


def test_repo_files_carry_blade_go_and_guest_pycs(tmp_path):
    files = arm64vm.repo_files(tmp_path)
    assert "/repo/blade_go/cli.py" in files and "/repo/specs/go.yaml" in files
    assert "/repo/tests/support/arm64vm_guest.py" in files
    assert "/repo/build/toolchains.env" in files
    assert not [p for p in files if "/__pycache__/" in p and not p.endswith(".cpython-311.pyc")]
    pycs = [p for p in files if p.endswith(".pyc")]
    if sys.version_info[:2] == arm64vm.GUEST_PYTHON:
        assert "/repo/blade_go/__pycache__/cli.cpython-311.pyc" in pycs
        data = files["/repo/blade_go/__pycache__/cli.cpython-311.pyc"]
        assert data[4:8] == (1).to_bytes(4, "little")  # flags: hash-based, unchecked
    else:
        assert pycs == []


def test_missing_qemu_fails_under_ci_and_skips_elsewhere(monkeypatch):
    import pytest
    monkeypatch.setattr(arm64vm.shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="qemu-system-aarch64 not found"):
        arm64vm.require_qemu()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="qemu-system-aarch64 not found"):
        arm64vm.require_qemu()


def test_missing_image_fails_under_ci(monkeypatch, tmp_path):
    """A build script that cannot build (here: a tools dir that cannot be created) fails the
    test under CI=true: the tier never goes green by skipping."""
    import pytest
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("BLADE_GO_TOOLS_DIR", str(blocker / "tools"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no arm64 VM image"):
        arm64vm.image_dir()
