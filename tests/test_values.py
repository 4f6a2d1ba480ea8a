"""The --value grammar: every value kind, type checks and the messages users see."""
import math

import pytest

from blade_go.abi.regabi_amd64 import REGABI_AMD64
from blade_go.errors import BladeError, Code
from blade_go.inspector.gotypes import Field, GoType, Kind, Param, Signature
from tests.support.gotypes import BOOL, C128, C64, ERR, F32, F64, I32, I8, INT, STR, U64, U8
from blade_go.stubs import parse_values
from blade_go.stubs import values as V

READER = GoType("io.Reader", Kind.IFACE, 16, 8)
PTR = GoType("*main.User", Kind.POINTER, 8, 8)
SLICE = GoType("[]uint8", Kind.SLICE, 24, 8)
MAP = GoType("map[string]int", Kind.MAP, 8, 8)
USER = GoType("main.User", Kind.STRUCT, 24, 8,
              fields=(Field("Name", 0, STR), Field("Age", 16, INT)))
ARR = GoType("[4]int", Kind.ARRAY, 32, 8, elem=INT, length=4)


def one(t, text):
    [v] = parse_values(text, [("r", t)])
    return v


def err(types, text):
    with pytest.raises(BladeError) as e:
        parse_values(text, [(f"r{i}", t) for i, t in enumerate(types)], func="main.Get")
    assert e.value.code == Code.PARAMETER_ILLEGAL
    return e.value.message


@pytest.mark.parametrize("text,want", [
    ("42", 42), ("-7", -7), ("0x2a", 42), ("0X2A", 42), ("0o52", 42), ("052", 42),
    ("0b101010", 42), ("1_000", 1000), (" 5 ", 5), ("-0x10", -16), ("0", 0),
    ("9223372036854775807", (1 << 63) - 1), ("-9223372036854775808", -(1 << 63))])
def test_integers(text, want):
    v = one(INT, text)
    assert (v.kind, v.data) == (V.INT, want)


@pytest.mark.parametrize("t,text", [(INT, "9223372036854775808"), (I8, "128"), (I8, "-129"),
                                    (U8, "256"), (U8, "-1"), (U64, "-1"), (I32, "0x80000000")])
def test_integer_range(t, text):
    m = err([t], text)
    assert f"result 0 ({t.name})" in m and f'got "{text}"' in m and "out of range" in m


def test_integer_bounds_accepted():
    assert one(U64, "0xffffffffffffffff").data == (1 << 64) - 1
    assert one(I8, "-128").data == -128 and one(U8, "255").data == 255


@pytest.mark.parametrize("text,want", [("1.5", 1.5), ("-2e3", -2000.0), ("inf", math.inf),
                                       ("+inf", math.inf), ("-inf", -math.inf), ("3", 3.0),
                                       (".5", 0.5), ("0x1p-2", 0.25), ("1e308", 1e308)])
def test_float64(text, want):
    v = one(F64, text)
    assert v.kind == V.FLOAT and v.data == want


def test_nan_and_float32_rounding():
    assert math.isnan(one(F64, "nan").data)
    v = one(F32, "0.1")
    assert v.data != 0.1 and v.data == pytest.approx(0.1, rel=1e-7)
    assert one(F32, "-inf").data == -math.inf
    assert "out of range for float32" in err([F32], "1e39")
    assert "main.Celsius" in err([F32], "warm")


@pytest.mark.parametrize("text,want", [("1+2i", 1 + 2j), ("-0.5-3i", -0.5 - 3j), ("2i", 2j),
                                       ("-i", -1j), ("7", 7 + 0j), ("1e2+1e-1i", 100 + 0.1j)])
def test_complex(text, want):
    assert one(C128, text).data == want


def test_complex64_parts_are_float32():
    assert one(C64, "0.1+0.2i").data.real != 0.1
    assert "complex" in err([C128], "1+2j")


def test_bools():
    assert one(BOOL, "true").data is True and one(BOOL, "false").data is False
    assert "true, false" in err([BOOL], "1")


@pytest.mark.parametrize("text,want", [
    ('"chaos"', b"chaos"), ("bare text", b"bare text"), ('"a, b"', b"a, b"),
    (r'"tab\there\n"', b"tab\there\n"), (r'"q\"uote\\"', b'q"uote\\'),
    (r'"\x41\u00e9\U0001F600"', b"A\xc3\xa9\xf0\x9f\x98\x80"), (r'"\101"', b"A"),
    ('"zero"', b"zero"), ('"nil"', b"nil"), ('""', b""), ("", b""), ("héllo", "héllo".encode()),
    ("error:x", b"error:x"), ("42", b"42")])
def test_strings(text, want):
    v = one(STR, text)
    assert (v.kind, v.data) == (V.STRING, want)


@pytest.mark.parametrize("text", [r'"bad \q"', r'"\x4"', r'"\uD800"', 'mid"quote', '"open'])
def test_bad_strings(text):
    with pytest.raises(BladeError):
        parse_values(text, [("r", STR)])


def test_string_cannot_be_nil():
    assert "string cannot be nil" in err([STR], "nil")


def test_nil_for_nilable_kinds_only():
    for t in (ERR, READER, PTR, SLICE, MAP):
        assert one(t, "nil").kind == V.NIL
    for t in (INT, USER, ARR, BOOL):
        assert "cannot be nil" in err([t], "nil")


def test_zero_for_every_type():
    for t in (INT, F32, C64, BOOL, STR, ERR, PTR, SLICE, USER, ARR):
        assert one(t, "zero").kind == V.ZERO


def test_error_values():
    assert one(ERR, "error:db is down").data == b"db is down"
    assert one(ERR, 'error:"msg, with comma"').data == b"msg, with comma"
    assert one(ERR, "error:").data == b""
    m = err([STR, ERR], '"ok",42')
    assert m == ('--value: result 1 (error) expects nil, zero, error:<msg> or var:<pkg.Name>; '
                 'got "42"')
    assert "error:<msg>" not in err([READER], "error:x").split(";")[0]


def test_error_message_runs_to_next_unquoted_comma():
    vs = parse_values('error:disk full,"x, y",7', [("e", ERR), ("s", STR), ("n", INT)])
    assert [v.data for v in vs] == [b"disk full", b"x, y", 7]


def test_var_values():
    v = one(ERR, "var:io.EOF")
    assert (v.kind, v.data) == (V.VAR, "io.EOF")
    assert one(USER, "var:github.com/acme/db.DefaultUser").data == "github.com/acme/db.DefaultUser"
    assert "var:" in err([ERR], "var:EOF")


def test_structs_and_arrays_take_zero_or_var():
    assert "zero or var:<pkg.Name>" in err([USER], "{1}")
    assert "zero or var:<pkg.Name>" in err([ARR], "1")


def test_count_mismatch_names_function_and_types():
    m = err([STR, ERR], '"a",nil,3')
    assert m == "--value: main.Get returns 2 results (string, error); got 3 values"
    assert "returns 1 result (int); got 2 values" in err([INT], "1,2")


def test_accepts_result_locations():
    sig = Signature((), (Param("~r0", STR, True), Param("err", ERR, True)))
    vs = parse_values('"chaos",error:db is down', REGABI_AMD64.result_locations(sig))
    assert [v.kind for v in vs] == [V.STRING, V.ERROR]
    assert vs[1].type is ERR


def test_binary_lookup_checks_var_types_early():
    class Bin:
        def variable(self, name):
            return type("Var", (), {"type": INT, "addr": 0x1000})()
    with pytest.raises(BladeError, match="has type int, but the result is error"):
        parse_values("var:main.N", [("e", ERR)], Bin())
    assert parse_values("var:main.N", [("n", INT)], Bin())[0].kind == V.VAR


def test_unterminated_quote():
    assert "unterminated quote" in err([STR, STR], '"a,b')


# ---- issue 7.9: non-ASCII digits and non-UTF-8 bytes ------------------------------------
def test_only_ascii_digits_are_numbers():
    from blade_go.errors import BladeError as _BE
    from blade_go.inspector.gotypes import GoType as _T, Kind as _K
    from blade_go.stubs.values import parse_element as _pe
    i64, f64 = _T("int", _K.INT, 8, 8), _T("float64", _K.FLOAT64, 8, 8)
    c128 = _T("complex128", _K.COMPLEX128, 16, 8)
    for t, text in [(i64, "١٢"), (i64, "１２"), (i64, "0x１"), (f64, "１.５"), (f64, "٣e2"),
                    (c128, "1+٢i")]:
        with pytest.raises(_BE) as e:
            _pe(0, t, text)
        assert "only ASCII digits" in e.value.message
    assert _pe(0, i64, "12").data == 12 and _pe(0, f64, "1.5").data == 1.5


def test_non_utf8_bytes_are_kept_as_given():
    from blade_go.errors import BladeError as _BE
    from blade_go.inspector.gotypes import GoType as _T, Kind as _K
    from blade_go.stubs.values import parse_values as _pv
    s = _T("string", _K.STRING, 16, 8)
    err = _T("error", _K.IFACE, 16, 8)
    # what Python makes of argv bytes b'a\xffb' (PEP 383 surrogate escapes)
    vals = _pv('a\udcffb,error:\udcfe', [("r0", s), ("r1", err)])
    assert vals[0].data == b"a\xffb" and vals[1].data == b"\xfe"
    assert _pv('"q\udcff\\n"', [("r0", s)])[0].data == b"q\xff\n"
    with pytest.raises(_BE) as e:  # a lone surrogate no command line can produce
        _pv("\ud800", [("r0", s)])
    assert e.value.code == 46000
