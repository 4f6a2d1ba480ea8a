"""A BLADE_GO_HOME blade-go cannot use is a clear 43000 that says what is wrong with the path
and what to do, for every command (issue 16), never `54000 internal error: ...`."""
import os
import shutil
import subprocess

import pytest

from tests.support.blade import Blade

COMMANDS = [
    ("status", "--type", "create"),
    ("status", "someuid"),
    ("status", "--pid", "1"),
    ("create", "go", "return", "--pid", "1", "--func", "main.Query", "--value", "1"),
    ("destroy", "someuid"),
]


def refused(home, *words):
    blade = Blade(home)
    out = []
    for cmd in COMMANDS:
        code, resp = blade.run(*cmd)
        assert code == 1 and resp["code"] == 43000, (cmd, resp)
        assert all(w in resp["error"] for w in words), (cmd, resp["error"])
        assert "internal error" not in resp["error"]
        out.append(resp["error"])
    return out


def test_home_that_is_a_regular_file(tmp_path):
    f = tmp_path / "home"
    f.write_text("not a directory\n")
    refused(f, str(f), "is a regular file, not a directory", "point BLADE_GO_HOME at a directory")
    assert f.read_text() == "not a directory\n"  # untouched
    refused(f / "below", str(f), "is a file, not a directory", "BLADE_GO_HOME")


def _make_unwritable(d):
    """chattr +i (EPERM), else a read-only bind mount (EROFS); the undo, or None."""
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(d)],
                                                 capture_output=True).returncode == 0:
        return ["chattr", "-i", str(d)], "immutable directory"
    if subprocess.run(["mount", "--bind", "-o", "ro", str(d), str(d)],
                      capture_output=True).returncode == 0:
        return ["umount", str(d)], "read-only file system"
    return None, None


def test_home_that_cannot_be_written(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("chattr +i and bind mounts need root")
    d = tmp_path / "home"
    d.mkdir(mode=0o700)
    undo, why = _make_unwritable(d)
    if undo is None:
        if os.environ.get("CI") == "true":
            pytest.fail("neither chattr +i nor a read-only bind mount works here")
        pytest.skip("neither chattr +i nor a read-only bind mount works here")
    try:
        refused(d, str(d), "cannot write its state directory", why,
                "make it writable or point BLADE_GO_HOME at a writable directory")
        assert os.listdir(d) == []
    finally:
        subprocess.run(undo, check=True)
