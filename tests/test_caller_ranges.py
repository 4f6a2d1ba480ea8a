"""--caller name resolution (issue 19): each name's out-of-line body and inlined copies, from
DWARF and, on a binary without it, from the .gopclntab inline trees, which must agree; typos
get the closest names; depth limits per architecture and ABI."""
import pytest

from blade_go.errors import BladeError
from blade_go.inspector import open_binary
from blade_go.inspector.callers import caller_code, check_depth, split_names
from blade_go.inspector.pcline import positions
from tests.support.fixtures import build_fixture, fixture_dir


def _binary(**opts):
    return open_binary(path=str(build_fixture("callers_target", **opts)))


@pytest.mark.parametrize("toolchain", ["go-default", "go1.19"])
def test_inlined_helper_ranges_agree_between_dwarf_and_pclntab(toolchain):
    full = _binary(toolchain=toolchain)
    stripped = _binary(toolchain=toolchain, ldflags="-s -w")
    assert full.has_dwarf and not stripped.has_dwarf
    a, b = caller_code(full, "main.helper"), caller_code(stripped, "main.helper")
    assert a.ranges and a.ranges == b.ranges
    assert a.detail[0]["body"] is None and a.detail[0]["inlined_copies"] >= 1
    assert b.detail[0]["inlined_from"] == ".gopclntab inline trees"
    # the inlined copy lies inside viaInlined's body and holds the call of Work
    body = caller_code(full, "main.viaInlined").ranges[0]
    assert all(body[0] <= lo < hi <= body[1] for lo, hi in a.ranges)
    # the call's line, read from .gopclntab at the copy's last byte
    site = next(i for i, ln in enumerate((fixture_dir("callers_target") / "main.go")
                                         .read_text().splitlines(), 1) if "SITE:inlined" in ln)
    lo, hi = a.ranges[-1]
    fn, file, line = positions(full, [hi - 1])[hi - 1]
    assert (fn, line) == ("main.viaInlined", site) and file.endswith("main.go")


def test_names_typos_and_lists():
    b = _binary()
    assert split_names("main.A, main.Max[int,string] ,main.B") == \
        ["main.A", "main.Max[int,string]", "main.B"]
    code = caller_code(b, "main.viaDirect,main.mid1")
    assert code.names == ("main.viaDirect", "main.mid1") and len(code.ranges) == 2
    with pytest.raises(BladeError) as e:
        caller_code(b, "main.viaDirekt")
    assert "closest: main.viaDirect" in e.value.message


def test_depth_limits():
    check_depth(_binary(), 8)
    with pytest.raises(BladeError, match="between 1 and 8"):
        check_depth(_binary(), 9)
    with pytest.raises(BladeError, match="no frame pointers on 386"):
        check_depth(_binary(goarch="386"), 2)
    check_depth(_binary(goarch="386"), 1)
