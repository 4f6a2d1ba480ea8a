"""Caves past p_memsz (the text-end page slack) on live processes: a cgo program, an externally
linked one, and a stub too large for the header cave. Each is injected with `return`, observed
from the target's own output, destroyed, and its executable mappings compared byte for byte
with the file (text_differences)."""
import pytest

from blade_go.inspector import open_binary
from tests.support.fixtures import build_fixture
from tests.support.targets import call, text_differences, differences_beyond_retained

CGO = {"CGO_ENABLED": "1"}


def _stub_in_text_end(binary_path, pid, stub_addr):
    with open_binary(pid=pid) as b:
        caves = {c.kind: c for c in b.caves(int3=False)}
        te = caves["text-end"]
        seg = next(s for s in b.image.segments if s.executable and
                   s.vaddr <= te.start <= s.vaddr + s.memsz)
        assert te.start >= seg.vaddr + seg.memsz  # the slack really is past p_memsz
        return te.start + b.load_bias <= stub_addr < te.end + b.load_bias


def test_cgo_binary_is_injected_and_restored(blade, target_factory):
    path = build_fixture("cgo_target", extra_env=CGO)
    with open_binary(path) as b:  # externally linked by gcc: no executable header page
        assert [c.kind for c in b.caves(int3=False)] == ["text-end"]
        assert b.image.section(".plt") is not None
    target = target_factory(path)
    assert call(target, "Hot") == "9"
    uid = blade.create_return(target.pid, "main.Hot", "7")
    assert call(target, "Hot") == "7"
    uid2 = blade.create_return(target.pid, "main.Greet", '"chaos",error:boom')
    assert call(target, "Greet") == "chaos boom"
    res = blade.ok("status", uid2)
    assert res["live"]["patch_in_place"] is True
    assert _stub_in_text_end(path, target.pid, int(res["result"]["stub"], 16))
    assert text_differences(target.pid)
    blade.ok("destroy", uid)
    blade.ok("destroy", uid2)
    assert call(target, "Hot") == "9" and call(target, "Greet") == "hello x <nil>"
    assert differences_beyond_retained(blade.home, target.pid) == []
    assert target.alive()


@pytest.mark.parametrize("ldflags", ["-linkmode=external", ""], ids=["external", "internal"])
def test_stub_larger_than_the_header_cave_uses_the_text_end_slack(blade, target_factory,
                                                                  ldflags):
    path = build_fixture("e2e_target", ldflags=ldflags, extra_env=CGO if ldflags else None)
    with open_binary(path) as b:
        header = sum(c.size for c in b.caves(int3=False) if c.kind == "header")
    target = target_factory(path)
    original = call(target, "Query")
    text = "s" * (header + 200)  # cannot fit in the header cave (absent when external)
    uid = blade.create_return(target.pid, "main.Query", f'"{text}",nil')
    assert call(target, "Query") == f'"{text}",<nil>'
    stub = int(blade.ok("status", uid)["result"]["stub"], 16)
    assert _stub_in_text_end(path, target.pid, stub)
    blade.ok("destroy", uid)
    assert call(target, "Query") == original
    assert differences_beyond_retained(blade.home, target.pid) == []
