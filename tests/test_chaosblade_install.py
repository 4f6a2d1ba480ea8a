"""`blade-go chaosblade install|uninstall` on a copy of the real chaosblade 1.8.0 release:
what changes, idempotence, a reinstall after a blade upgrade, byte-for-byte uninstall."""
import json
import os
import shutil

import pytest

from blade_go.chaosblade.install import MARK, SPEC_MARK, merge_spec
from tests.support import chaosblade as cb


@pytest.fixture
def release(tmp_path):
    return cb.copy_release(tmp_path / "release")


def spec_name():
    return f"yaml/chaosblade-os-spec-{cb.version()}.yaml"


def test_install_then_uninstall_restores_every_byte(release, tmp_path):
    before = cb.snapshot(release, skip_runtime=False)
    real = (release / "bin/chaos_os").read_bytes()
    resp = cb.blade_go("chaosblade", "install", "--home", release)
    assert resp["success"], resp
    assert resp["result"]["version"] == cb.version()
    after = cb.snapshot(release, skip_runtime=False)
    changed = {k for k in before if before[k] != after.get(k)}
    added = set(after) - set(before)
    # exactly the two files blade reads change; the originals are kept beside them
    assert changed == {"bin/chaos_os", spec_name()}
    assert added == {"bin/chaos_os.blade-go-orig", "bin/chaos_os.blade-go.json",
                     spec_name() + ".blade-go-orig"}
    assert (release / "bin/chaos_os.blade-go-orig").read_bytes() == real
    assert after["bin/chaos_os.blade-go-orig"] == before["bin/chaos_os"]
    assert after[spec_name() + ".blade-go-orig"] == before[spec_name()]
    dispatcher = (release / "bin/chaos_os").read_text()
    assert dispatcher.startswith("#!/bin/sh\n") and MARK in dispatcher
    assert os.access(release / "bin/chaos_os", os.X_OK)
    manifest = json.loads((release / "bin/chaos_os.blade-go.json").read_text())
    assert os.path.isabs(manifest["python"]) and manifest["python"] in dispatcher

    # idempotent: a second install changes nothing
    resp = cb.blade_go("chaosblade", "install", "--home", release)
    assert resp["success"] and resp["result"]["changed"] == [], resp
    assert cb.snapshot(release, skip_runtime=False) == after

    resp = cb.blade_go("chaosblade", "uninstall", "--home", release)
    assert resp["success"], resp
    assert cb.snapshot(release, skip_runtime=False) == before
    # and a second uninstall is a harmless no-op
    resp = cb.blade_go("chaosblade", "uninstall", "--home", release)
    assert resp["success"] and "not installed" in resp["result"]["message"], resp
    assert cb.snapshot(release, skip_runtime=False) == before


def test_merged_spec_keeps_the_original_as_a_prefix(release):
    original = (release / spec_name()).read_text()
    cb.blade_go("chaosblade", "install", "--home", release)
    merged = (release / spec_name()).read_text()
    assert merged.startswith(original) and SPEC_MARK in merged
    import yaml
    doc = yaml.safe_load(merged)
    targets = [i["target"] for i in doc["items"]]
    assert targets[:-1] == [i["target"] for i in yaml.safe_load(original)["items"]]
    assert targets[-1] == "go"
    with pytest.raises(Exception) as e:  # never merged over a target someone else defines
        merge_spec(merged, "- target: go\n  actions: []\n")
    assert "already defines" in str(e.value)


def test_reinstall_after_a_blade_upgrade(release, tmp_path):
    pristine = cb.snapshot(release, skip_runtime=False)
    cb.blade_go("chaosblade", "install", "--home", release)
    # an upgrade unpacks a new release over the old one: bin/chaos_os and the spec are real
    # files again (here: the same release's files, which is what the tarball would hold)
    src = cb.release_dir()
    for rel in ("bin/chaos_os", spec_name()):
        shutil.copy2(src / rel, release / rel)
    resp = cb.blade_go("chaosblade", "install", "--home", release)
    assert resp["success"], resp
    assert "#!/bin/sh" in (release / "bin/chaos_os").read_text()
    assert (release / "bin/chaos_os.blade-go-orig").read_bytes() == (src / "bin/chaos_os").read_bytes()
    assert SPEC_MARK in (release / spec_name()).read_text()
    resp = cb.blade_go("chaosblade", "uninstall", "--home", release)
    assert resp["success"], resp
    assert cb.snapshot(release, skip_runtime=False) == pristine


def test_upgrade_to_another_version_puts_the_old_spec_back(release):
    """blade X.Y reads only chaosblade-os-spec-X.Y.yaml: install for the new version and
    restore the previous version's file (left behind by the upgrade)."""
    pristine = cb.snapshot(release, skip_runtime=False)
    cb.blade_go("chaosblade", "install", "--home", release)
    new_spec = release / "yaml/chaosblade-os-spec-9.9.9.yaml"
    shutil.copy2(cb.release_dir() / spec_name(), new_spec)
    shutil.copy2(cb.release_dir() / "bin/chaos_os", release / "bin/chaos_os")
    resp = cb.blade_go("chaosblade", "install", "--home", release, "--version", "9.9.9")
    assert resp["success"], resp
    assert SPEC_MARK in new_spec.read_text()
    assert (release / spec_name()).read_bytes() == (cb.release_dir() / spec_name()).read_bytes()
    assert not (release / (spec_name() + ".blade-go-orig")).exists()
    cb.blade_go("chaosblade", "uninstall", "--home", release)
    after = cb.snapshot(release, skip_runtime=False)
    assert after.pop("yaml/chaosblade-os-spec-9.9.9.yaml") == pristine[spec_name()]
    assert after == pristine


def test_not_a_release_is_refused(tmp_path):
    resp = cb.blade_go("chaosblade", "install", "--home", tmp_path)
    assert not resp["success"] and resp["code"] == 51000 and "not a chaosblade release" in resp["error"]


def test_dispatcher_hands_other_targets_to_the_real_chaos_os(release, tmp_path):
    """Without blade in between: the dispatcher execs the real chaos_os with the same argv."""
    import subprocess
    cb.blade_go("chaosblade", "install", "--home", release)
    target = tmp_path / "d" / "f.txt"
    target.parent.mkdir()
    out = subprocess.run([str(release / "bin/chaos_os"), "create", "file", "add", "--uid=x1",
                          f"--filepath={target}"], capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout)["success"] is True, out
    assert target.exists()
    out = subprocess.run([str(release / "bin/chaos_os"), "destroy", "file", "add", "--uid=x1",
                          f"--filepath={target}"], capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout)["success"] is True and not target.exists(), out


def test_os_and_cplus_ways_are_exclusive_and_both_undo(release):
    before = cb.snapshot(release, skip_runtime=False)
    assert cb.blade_go("chaosblade", "install", "--home", release)["success"]
    resp = cb.blade_go("chaosblade", "install", "--home", release, "--via", "cplus")
    assert not resp["success"] and "uninstall it first" in resp["error"]
    assert cb.blade_go("chaosblade", "uninstall", "--home", release)["success"]
    resp = cb.blade_go("chaosblade", "install", "--home", release, "--via", "cplus")
    assert resp["success"], resp
    assert (release / "lib/cplus/chaosblade-exec-cplus").is_file()
    assert (release / f"yaml/chaosblade-cplus-spec-{cb.version()}.yaml").is_file()
    resp = cb.blade_go("chaosblade", "install", "--home", release)
    assert not resp["success"] and "cplus agent" in resp["error"]
    assert cb.blade_go("chaosblade", "install", "--home", release, "--via", "cplus")["success"]
    assert cb.blade_go("chaosblade", "uninstall", "--home", release)["success"]
    assert cb.snapshot(release, skip_runtime=False) == before
    assert not (release / "lib/cplus").exists()
    resp = cb.blade_go("chaosblade", "install", "--home", release, "--via", "ssh")
    assert not resp["success"] and resp["code"] == 46000
