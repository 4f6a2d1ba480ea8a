"""Inlined call sites from every compile unit (issue 7.8a), and a create that says plainly
when direct calls no longer reach the replaced copy."""
from pathlib import Path

import pytest

from blade_go.inspector import open_binary
from blade_go.inspector.references import references_to
from tests.support.fixtures import build_fixture
from tests.support.targets import call

SCALE = "example.com/inl/lib.Scale"
SRC = Path(__file__).parent / "fixtures" / "inline_target" / "main.go"


def _line(text):
    return next(i for i, ln in enumerate(SRC.read_text().splitlines(), 1) if text in ln)


@pytest.fixture(scope="module")
def inl():
    return build_fixture("inline_target")


def test_a_site_in_another_compile_unit_is_found_without_walking_any(inl):
    with open_binary(inl) as b:
        sites = b.inlined_sites(SCALE)
        assert [(s.caller, Path(s.file).name, s.line) for s in sites] == [
            ("main.main", "main.go", _line("lib.Scale(four)"))]
        d = b.dwarf
        cu_of = {d.dwarf.get_CU_containing(o).get_top_DIE().attributes["DW_AT_name"].value
                 for o in d.parsed_dies}
        assert b"main" in cu_of  # the site's DIE lives in main's CU ...
        assert d.walked_cus == set()  # ... no CU was walked with pyelftools ...
        # ... and only the CU holding the hit was skimmed to check it is a real DIE
        assert [cu.get_top_DIE().attributes["DW_AT_name"].value for cu in d.dwarf.iter_CUs()
                if cu.cu_offset in d._inlined_dies] == [b"main"]


def _objdump_refs(path, name):
    """Ground truth from binutils: DW_TAG_inlined_subroutine DIEs naming name's abstract entry."""
    import subprocess
    out = subprocess.run(["objdump", "--dwarf=info", str(path)], capture_output=True,
                         text=True).stdout.splitlines()
    offs = {ln.split("<")[2].split(">")[0] for i, ln in enumerate(out)
            if ln.strip().endswith(f"DW_AT_name        : {name}") and "DW_AT_inline" in out[i + 1]
            for ln in [out[i - 1]]}
    return sum(1 for i, ln in enumerate(out) if "DW_AT_abstract_origin" in ln and
               any(f"<0x{o}>" in ln for o in offs) and "inlined_subroutine" in out[i - 1])


@pytest.mark.parametrize("toolchain", ["go-default", "go1.19"])
@pytest.mark.parametrize("name", ["sync.(*Mutex).Lock", "runtime.add", "unicode/utf8.RuneLen"])
def test_every_reference_is_found(toolchain, name):
    import shutil
    if not shutil.which("objdump"):
        pytest.skip("objdump not installed")
    path = build_fixture("e2e_target", toolchain=toolchain)
    with open_binary(path) as b:
        d = b.dwarf
        origins = [x.offset for x in d._named("DW_TAG_subprogram", name)
                   if "DW_AT_inline" in x.attributes]
        found = sum(1 for o in origins for _ in d._references_to(o))
        assert found == _objdump_refs(path, name) > 0
        assert len(b.inlined_sites(name)) >= 1


def test_references_to_the_out_of_line_copy(inl, e2e_binary):
    with open_binary(inl) as b:
        r = references_to(b, b.find_function(SCALE))
        assert r.branches == 0 and r.total >= 1  # only the function value ScaleRef
        assert references_to(b, b.find_function("example.com/inl/lib.Local")).branches == 1
    with open_binary(e2e_binary) as b:
        assert references_to(b, b.find_function("main.makeAdder.func1")).branches >= 1  # lea


def test_create_warns_when_every_direct_call_was_inlined(blade, inl, target_factory):
    target = target_factory(inl)
    assert call(target, "Scale") == "12,13,12"
    result = blade.create_response(target.pid, SCALE, "100")
    assert result.get("warnings"), "a create with inlined sites is never a bare success"
    result["uid"] = result["result"]
    warning = " ".join(result["warnings"])
    assert "every direct call" in warning and "main.main" in warning, warning
    res = blade.ok("status", result["uid"])["result"]
    assert res["inlined_sites_count"] == 1 and res["out_of_line_references"]["branches"] == 0
    assert res["not_covered_inlined_sites"][0].startswith("main.main at ")
    assert call(target, "Scale") == "12,13,100"  # only the call through the function value
    blade.ok("destroy", result["uid"])
    assert call(target, "Scale") == "12,13,12"
