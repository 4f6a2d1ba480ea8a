"""The --match grammar and its refusals (pure logic; the generated code runs in
tests/test_conditions_exec.py)."""
import pytest

from blade_go.abi.abi0 import ABI0_386
from blade_go.abi.regabi_amd64 import REGABI_AMD64
from blade_go.errors import BladeError
from blade_go.inspector.gotypes import GoType, Kind, Param, Signature, basic
from blade_go.stubs.conditions import INT, STRING, Conditions, Mem, Reg, Stack, chunks, \
    percent_threshold
from blade_go.stubs.conditions_data import DataAllocator, conditions_from_flags
from blade_go.stubs.conditions_match import parse_match, split_terms
from tests.test_conditions_exec import MANY, sig_of


def params(ptrsize=8, names=MANY, extra=()):
    sig = sig_of(ptrsize, names)
    if extra:
        sig = Signature(sig.params + tuple(extra), sig.results)
    abi = REGABI_AMD64 if ptrsize == 8 else ABI0_386
    return abi.param_locations(sig)


def refuse(text, ps=None, ptrsize=8):
    with pytest.raises(BladeError) as e:
        parse_match(text, ps if ps is not None else params(ptrsize), ptrsize, "main.F")
    return e.value.message


def test_terms_operands_and_types():
    ms = parse_match('id==42 && name^="a&&b" && small<-1 && p.region!="eu" && #2==true',
                     params(), 8, "main.F")
    assert [(m.kind, m.op, m.value) for m in ms] == [
        (INT, "==", 42), (STRING, "^=", b"a&&b"), (INT, "<", -1), (STRING, "!=", b"eu"),
        (INT, "==", 1)]
    assert ms[0].operands == (Reg("RAX"),) and ms[0].signed and ms[0].size == 8
    assert ms[1].operands == (Reg("RBX"), Reg("RCX"))
    assert ms[2].size == 1 and ms[2].signed
    p = Reg("R10")  # the 7th int register: p
    assert ms[3].operands == (Mem(p, 0), Mem(p, 8))
    assert ms[4].operands == (Reg("RDI"),) and not ms[4].signed
    # 386: everything on the stack; an int64 is one 8-byte operand
    ms = parse_match("neg<0 && big>=4294967296", params(4), 4, "main.F")
    assert all(isinstance(m.operands[0], Stack) and m.size == 8 for m in ms)


def test_split_keeps_quoted_ampersands_and_escapes():
    assert split_terms('a=="x&&\\"y" && b==1') == ['a=="x&&\\"y" ', " b==1"]


@pytest.mark.parametrize("text,needle", [
    ("user==1", "main.F has no parameter 'user'; its parameters: id (int), name (string), "
                "flag (bool), small (int8), u (uint16), big (uint64), p (*main.Rec), neg (int64)"),
    ("#9==1", "main.F has 8 parameter(s), so #9 does not exist"),
    ("name==42", "name is string; 'name==42' needs a quoted Go string"),
    ("name<\"a\"", "name is string: strings take ==, != and ^= (prefix), not <"),
    ("id==\"x\"", "id is int; 'id==\"x\"' needs an integer"),
    ("id^=\"x\"", "id is int: ^= (prefix) applies to strings only"),
    ("flag>true", "flag is bool: bools take == and != only"),
    ("flag==1", "flag is bool; 'flag==1' needs true or false"),
    ("small==300", "small is int8: 300 is out of its range [-128, 127]"),
    ("u<-1", "u is uint16: -1 is out of its range [0, 65535]"),
    ("p==1", "p is *main.Rec: it can only be compared with nil"),
    ("p.zone==1", "p (main.Rec) has no field 'zone'; its fields: region (string), n (int32)"),
    ("id.x==1", "id is int, not a struct: it has no field .x"),
    ("id", "'id' is not `name op value`"),
    ("id==", "'id==' is not `name op value`"),
    ('name=="' + "x" * 300 + '"', "strings longer than 256 bytes cannot be matched"),
    ('name=="a', "unterminated quote"),
])
def test_refusals(text, needle):
    assert needle in refuse(text)


def test_refuses_floats_and_unknown_pointee_layouts():
    f64 = basic("float64", Kind.FLOAT64, 8)
    opaque = GoType("*main.T", Kind.POINTER, 8, 8, elem=None)
    ps = params(extra=(Param("ratio", f64), Param("t", opaque)))
    assert "ratio is float64: only integers, bools, strings and pointers" in refuse("ratio>1", ps)
    assert "the layout of what it points to is unknown" in refuse("t.x==1", ps)


def test_flags_to_conditions():
    ps = params()
    assert conditions_from_flags({}, ps, 8, "F") is None
    c = conditions_from_flags({"effect-count": 3, "effect-percent": 10, "match": "id==1"},
                              ps, 8, "F")
    assert (c.count, c.percent, len(c.matches)) == (3, 10, 1)
    assert c.describe() == {"effect_count": 3, "effect_percent": 10, "match": "id==1"}
    after = conditions_from_flags({"after": True}, ps, 8, "F")
    assert after is not None and not after.active  # counters only
    img = Conditions(seed=0x1122334455667788).counters_image(4)
    assert img[:24] == bytes(24) and img[24:] == bytes.fromhex("8877665500000000")


def test_helpers():
    assert chunks(13, 8) == [(0, 8), (5, 8)]
    assert chunks(7, 8) == [(0, 4), (4, 2), (6, 1)]
    assert chunks(16, 4) == [(0, 4), (4, 4), (8, 4), (12, 4)]
    assert percent_threshold(100, 32) == 1 << 32 and percent_threshold(0, 64) == 0
    assert percent_threshold(50, 64) == 1 << 63


def test_data_allocator_reserves_and_refuses():
    a = DataAllocator((0x5b9280, 0x5ba000), taken=[(0x5b92a0, 0x5b92c0)])
    assert a.allocate(32, 32, near=0x401000) == 0x5b9280  # before the taken range
    assert a.allocate(32, 32, near=0x401000) == 0x5b92c0  # after it
    assert a.allocate(8, 32, near=0x401000) == 0x5b92e0
    with pytest.raises(BladeError, match="no room for the 32 bytes of condition counters"):
        DataAllocator(None).allocate(32, 32, near=0)
    with pytest.raises(BladeError, match="no room"):
        DataAllocator((0x5b9ff0, 0x5ba000)).allocate(32, 32, near=0x401000)
