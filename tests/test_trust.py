"""Patches read back from the state file are checked against the executable before destroy
writes anything (issue 7.7a): forged originals, routes leading elsewhere, caves outside caves."""
import json

import pytest

from blade_go import trust
from blade_go.errors import BladeError, Code
from blade_go.inspector import open_binary
from blade_go.patch import CAVE, ROUTE, Patch
from tests.support.targets import call, text_differences


def _plan(b, func="main.Query"):
    """Patches shaped as blade-go plans them: a stub in the header cave, a jmp at the entry."""
    fn = b.find_function(func)
    cave = next(c for c in b.caves(int3=False) if c.kind == "header")
    stub = (cave.start + 15) // 16 * 16
    code = b"\x31\xc0\xc3"  # xor eax,eax; ret
    rel = stub - (fn.entry + 5)
    route = Patch(fn.entry, b.read(fn.entry, 5), b"\xe9" + rel.to_bytes(4, "little", signed=True),
                  ROUTE)
    return [Patch(stub, b.read(stub, len(code)), code, CAVE), route]


def _refused(b, patches, function="main.Query"):
    with pytest.raises(BladeError) as e:
        trust.check_against(b, patches, function, "u1")
    assert e.value.code == Code.FORBIDDEN and "nothing was written" in e.value.message
    return e.value.message


def test_what_blade_go_plans_is_accepted_and_forgeries_are_refused(e2e_binary):
    with open_binary(e2e_binary) as b:
        cave, route = _plan(b)
        trust.check_against(b, [cave, route], "main.Query", "u1")
        trust.check_against(b, [cave, route], None, "u1")  # any function, when none is named
        # the attack of issue 7: an original that is not the file's bytes
        forged = Patch(route.addr, b"\xb8\x07\x00\x00\x00", route.replacement, ROUTE)
        assert "original bytes" in _refused(b, [cave, forged])
        # a route that jumps anywhere but into the experiment's own caves
        bad = Patch(route.addr, route.original, b"\xe9\x00\x00\x00\x00", ROUTE)
        assert "outside the experiment's own caves" in _refused(b, [cave, bad])
        not_jump = Patch(route.addr, route.original, b"\x31\xc0\xc3\xcc\xcc", ROUTE)
        assert "not a rel32 jump" in _refused(b, [cave, not_jump])
        # a route inside another function than the record's
        assert "not inside function main.Flag" in _refused(b, [cave, route], "main.Flag")
        # a cave patch outside every cave (here: over the function's own code)
        fn = b.find_function("main.Query")
        code_patch = Patch(fn.entry + 8, b.read(fn.entry + 8, 3), b"\x90" * 3, CAVE)
        assert "not inside a cave" in _refused(b, [cave, route, code_patch])
        # overlapping, length mismatch, unmapped
        assert "overlap" in _refused(b, [cave, Patch(cave.addr + 1, cave.original[:2],
                                                     b"\x90\x90", CAVE), route])
        assert "replacement bytes" in _refused(b, [Patch(cave.addr, b"\0", b"\0\0", CAVE)])
        assert "not mapped" in _refused(b, [Patch(1 << 60, b"\0", b"\x90", CAVE)])


def test_malformed_patches_are_a_clear_error_not_a_key_error():
    for bad in ({"patches": [{"addr": 1}]}, {"patches": [{"addr": "x", "original": "",
                                                          "replacement": "", "role": "cave"}]},
                {"patches": [{"addr": 1, "original": "zz", "replacement": "00"}]},
                {"patches": "nope"}, {"patches": [{"addr": 1, "original": "00",
                                                   "replacement": "00", "role": "evil"}]}):
        with pytest.raises(BladeError) as e:
            trust.parse_patches(bad, "u1")
        assert e.value.code == Code.DATABASE_ERROR and "u1" in e.value.message


def test_destroy_refuses_a_forged_state_and_writes_nothing(blade, e2e_binary, target_factory):
    target = target_factory(e2e_binary)
    original = call(target, "Ints")
    uid = blade.create_return(target.pid, "main.Ints", "7,7,7,7,7")
    state_file = f"{blade.home}/state.json"
    with open(state_file) as f:
        state = json.load(f)
    rec = state["experiments"][uid]["record"]
    good = json.dumps(state)
    route = next(p for p in rec["patches"] if p["role"] == "route")
    route["original"] = "b807000000"  # mov eax,7: what an attacker wants root to write
    with open(state_file, "w") as f:
        json.dump(state, f)
    before = text_differences(target.pid)
    resp = blade.fail("destroy", uid)
    assert resp["code"] == Code.FORBIDDEN and "tampered" in resp["error"]
    assert text_differences(target.pid) == before  # not one byte written
    assert call(target, "Ints") == "7,7,7,7,7"
    with open(state_file, "w") as f:  # the genuine record restores
        f.write(good)
    blade.ok("destroy", uid)
    assert call(target, "Ints") == original
    assert text_differences(target.pid) == []


@pytest.mark.parametrize("planted,refused", [("log", True), ("dlv.log", True), ("life", True),
                                             ("lock", True), ("dlv.pid", False), ("err", False)])
def test_planted_session_symlinks_are_never_written_through(blade, e2e_binary, target_factory,
                                                            tmp_path, planted, refused):
    """Files appended to are refused (43000) before dlv starts; whole files (the dlv pid, the
    error record) are replaced by rename, which replaces the link itself."""
    import os
    target = target_factory(e2e_binary)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    sessions = os.path.join(blade.home, "sessions")
    os.makedirs(sessions, mode=0o700)
    os.chmod(blade.home, 0o700)
    link = os.path.join(sessions, f"{target.pid}.{planted}")
    os.symlink(victim, link)
    code, resp = blade.run("create", "go", "return", "--pid", target.pid, "--func", "main.Flag",
                           "--value", "false")
    if refused:
        assert resp["code"] == Code.FORBIDDEN and "symbolic link" in resp["error"], resp
    else:
        assert resp["success"], resp
        blade.ok("destroy", resp["result"])
        assert not os.path.islink(link) or planted == "err"  # err is written only on failure
    assert victim.read_text() == "precious"
    assert text_differences(target.pid) == []
    assert call(target, "Flag") == "true"
