"""The lazy `.symtab` index (inspector/symbols.py) answers exactly what decoding every symbol
answers: on real Go binaries (amd64 Elf64_Sym, 386 Elf32_Sym, generics, cgo linked by the
external linker) and on a hand-made table with what Go's own linker never writes (a name stored
as the tail of another, one string shared by two symbols, invalid UTF-8)."""
import bisect
import struct

import pytest

from blade_go.inspector import open_binary
from blade_go.inspector.elf import Section
from blade_go.inspector.symtab import STT_FUNC, STT_OBJECT, SymbolTable, names_containing
from tests.support.fixtures import build_fixture


def _reference(table: SymbolTable):
    """What the former SymbolTable built: every name decoded into two dicts."""
    return table.decoded()


def _reference_function_at(funcs):
    rows = sorted((lo, hi, n) for n, ss in funcs.items() for lo, hi in ss
                  if not n.endswith(".abi0"))
    starts = [r[0] for r in rows]

    def at(pc):
        i = bisect.bisect_right(starts, pc) - 1
        if i >= 0:
            lo, hi, name = rows[i]
            if lo <= pc < max(hi, lo + 1):
                return name
        return None
    return at, rows


def _check_against_decoded(table: SymbolTable, names_sample: int = 400):
    funcs, data = _reference(table)
    assert funcs and data
    lazy = SymbolTable(table._image)  # fresh: nothing decoded yet
    step_f = max(1, len(funcs) // names_sample)
    step_d = max(1, len(data) // names_sample)
    for name in list(funcs)[::step_f]:
        assert lazy.funcs[name] == funcs[name], name
        assert lazy.data.get(name) == data.get(name), name
    for name in list(data)[::step_d]:
        assert lazy.data[name] == data[name], name
        assert lazy.funcs.get(name) == funcs.get(name), name
    assert lazy._all is None, "a lookup by name decoded the whole table"
    for missing in ("main.doesNotExist", "", "main.main\0", "x\ud800", "main"):
        assert lazy.funcs.get(missing) == funcs.get(missing)
        assert (missing in lazy.data) == (missing in data)
    for part in ("[", "go.shape.", "..dict.", "main."):
        assert lazy.funcs.names_with(part) == [n for n in funcs if part in n], part
        assert lazy.data.names_with(part) == [n for n in data if part in n], part
    assert sorted(set(lazy.function_spans())) == sorted({s for ss in funcs.values() for s in ss})
    at, rows = _reference_function_at(funcs)
    pcs = [r[0] for r in rows[::5]] + [r[1] for r in rows[::5]] + [r[0] + 1 for r in rows[::5]]
    pcs += [rows[0][0] - 1, rows[-1][1] + 16]
    for pc in pcs:
        assert lazy.function_at(pc) == at(pc), hex(pc)
    # whole-table views come from the decoded dicts
    assert dict(lazy.funcs.items()) == funcs and list(lazy.data.keys()) == list(data)
    assert len(lazy.funcs) == len(funcs)


@pytest.mark.parametrize("fixture,goarch", [("generics_target", "amd64"),
                                            ("generics_target", "386"),
                                            ("inline_target", "amd64")])
def test_lazy_index_equals_decoded_table(fixture, goarch):
    with open_binary(build_fixture(fixture, goarch=goarch)) as b:
        _check_against_decoded(b.symtab)


def test_lazy_index_equals_decoded_table_external_linker():
    """cgo binaries are linked by the system linker, which may share string tails in .strtab."""
    with open_binary(build_fixture("cgo_target", extra_env={"CGO_ENABLED": "1"})) as b:
        _check_against_decoded(b.symtab)


def test_generic_lookup_uses_names_with_not_a_full_decode():
    with open_binary(build_fixture("generics_target")) as b:
        fn = b.find_function("main.Max[string]")
        assert fn.name == "main.Max[go.shape.string]"
        assert b.symtab._all is None
        assert names_containing({"a[1]": 1, "b": 2}, "[") == ["a[1]"]


# -- a hand-made table ---------------------------------------------------------------------
class _FakeImage:
    """What SymbolTable reads of an ElfImage: .symtab and .strtab bodies."""

    def __init__(self, symbols, strtab: bytes, ptrsize: int):
        self.ptrsize, self.little_endian = ptrsize, True
        if ptrsize == 8:
            raw = b"".join(struct.pack("<IBBHQQ", n, k, 0, 1, v, s) for n, k, v, s in symbols)
        else:
            raw = b"".join(struct.pack("<IIIBBH", n, v, s, k, 0, 1) for n, k, v, s in symbols)
        self._data = {".symtab": raw, ".strtab": strtab}

    def section(self, name):
        return Section(name, 0, 0, len(self._data[name]), "SHT_SYMTAB", 0) \
            if name in self._data else None

    def section_data(self, name):
        return self._data[name]


@pytest.mark.parametrize("ptrsize", [8, 4])
def test_tail_shared_names_duplicates_and_bad_utf8(ptrsize):
    strtab = b"\0xmain.F\0main.G[go.shape.int]\0bad\xff\0main.F.abi0\0"
    off = {"xmain.F": 1, "main.F": 2, "main.G[go.shape.int]": 9, "G[go.shape.int]": 14,
           "bad\ufffd": 30, "main.F.abi0": 35}
    symbols = [
        (0, STT_FUNC, 0x999, 1),                        # no name
        (off["xmain.F"], STT_FUNC, 0x1000, 0x10),
        (off["main.F"], STT_FUNC, 0x1010, 0x20),         # the tail of "xmain.F"
        (off["main.F.abi0"], STT_FUNC, 0x1100, 0x8),
        (off["main.F"], STT_FUNC, 0x1030, 0x4),          # the same string again
        (off["main.G[go.shape.int]"], STT_FUNC, 0x1200, 0x10),
        (off["G[go.shape.int]"], STT_OBJECT, 0x5000, 8),  # a tail inside brackets
        (off["bad\ufffd"], STT_OBJECT, 0x6000, 4),
        (off["main.F"], STT_OBJECT, 0x7000, 2),
        (off["main.F"], STT_OBJECT, 0x7008, 3),          # data: the first one counts
        (off["xmain.F"], 0, 0x8000, 1),                   # neither function nor data
    ]
    table = SymbolTable(_FakeImage(symbols, strtab, ptrsize))
    assert table.funcs["main.F"] == [(0x1010, 0x1030), (0x1030, 0x1034)]
    assert table.funcs["xmain.F"] == [(0x1000, 0x1010)]
    assert table.data["main.F"] == (0x7000, 2)
    assert table.data["bad\ufffd"] == (0x6000, 4)
    assert table.data["G[go.shape.int]"] == (0x5000, 8)
    assert "F" not in table.funcs and "" not in table.funcs
    assert table.funcs.names_with("[") == ["main.G[go.shape.int]"]
    assert table.data.names_with("go.shape") == ["G[go.shape.int]"]
    assert table.function_at(0x1010) == "main.F" and table.function_at(0x1104) is None
    assert table.function_at(0x1035) is None and table.function_at(0x1201) == "main.G[go.shape.int]"
    _check_against_decoded_fake(table)


def _check_against_decoded_fake(table):
    funcs, data = table.decoded()
    fresh = SymbolTable(table._image)
    for name in list(funcs) + list(data):
        assert fresh.funcs.get(name) == funcs.get(name) and fresh.data.get(name) == data.get(name)


# -- .gopclntab (stripped binaries) --------------------------------------------------------
@pytest.mark.parametrize("opts", [dict(), dict(goarch="386"), dict(pie=True),
                                  dict(toolchain="go1.19")],
                         ids=["amd64", "386", "pie", "go1.19"])
def test_lazy_pclntab_equals_decoded_table(opts):
    from blade_go.inspector.pclntab import PclnTable
    with open_binary(build_fixture("generics_target", ldflags="-s -w", **opts)) as b:
        assert not b.has_symtab
        full = PclnTable(b.image)
        funcs, pcsp = dict(full.funcs.items()), full._pcsp
        lazy = PclnTable(b.image)
        for name, spans in funcs.items():
            assert lazy.funcs[name] == spans, name
            for entry, end in spans:
                assert lazy.code_end(entry, end) == full.code_end(entry, end), name
                assert lazy._pcsp_known[entry] == pcsp[entry], name
        assert lazy._all is None, "a lookup by name decoded the whole table"
        for missing in ("main.nope", "main.mai", "ain.main", "", "x\ud800"):
            assert lazy.funcs.get(missing) is None and missing not in lazy.funcs
        assert len(lazy.funcs) == len(funcs)


# -- DWARF sections inflated on first read ---------------------------------------------------
def test_signature_inflates_only_the_sections_it_reads():
    with open_binary(build_fixture("inline_target")) as b:
        fn = b.find_function("main.main")
        b.signature(fn)
        dw = b.dwarf.dwarf
        assert dw.debug_info_sec.stream.inflated and dw.debug_abbrev_sec.stream.inflated
        lazy = [s for s in (dw.debug_line_sec, dw.debug_rnglists_sec, dw.debug_ranges_sec)
                if s is not None]
        assert lazy, "the fixture has no line table or range lists: nothing checked"
        assert not any(s.stream.inflated for s in lazy)
        # a read inflates exactly that section, and reads the same bytes pyelftools would
        line = dw.debug_line_sec
        line.stream.seek(0)
        head = line.stream.read(16)
        assert line.stream.inflated
        name = ".debug_line" if b.image.section(".debug_line") else ".zdebug_line"
        if name == ".debug_line":
            assert b.image.elf.get_section_by_name(name).data()[:16] == head
