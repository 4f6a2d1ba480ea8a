"""Pure unit tests of result locations (no toolchain): hand-computed cases from abi-internal.md.

The compiler itself is the judge in test_abi_groundtruth.py; amd64 ABI0 (Go < 1.17) cannot be
compiled here, so its cases live only in this file.
"""
import pytest

from blade_go.abi import REG, STACK, Piece, abi_for
from blade_go.abi.abi0 import ABI0_386, ABI0_AMD64
from blade_go.abi.layout import Layout, align_up
from blade_go.abi.regabi_amd64 import REGABI_AMD64, register_needs
from blade_go.abi.regabi_arm64 import REGABI_ARM64
from blade_go.abi.select import parse_go_version, select_abi
from blade_go.errors import BladeError, Code
from blade_go.inspector.gotypes import Param, Signature

L8, L4 = Layout(8), Layout(4)


def sig(params, results):
    return Signature(tuple(Param(f"p{i}", t) for i, t in enumerate(params)),
                     tuple(Param(f"~r{i}", t, True) for i, t in enumerate(results)))


def regs(loc):
    assert all(p.where == REG for p in loc.pieces)
    return [p.reg for p in loc.pieces]


def stack(loc):
    (p,) = loc.pieces
    assert p.where == STACK and p.value_offset == 0 and p.size == loc.type.size
    return p.sp_offset


# --- select_abi -------------------------------------------------------------------------------

@pytest.mark.parametrize("goarch,version,name", [
    ("amd64", "go1.26.8", "abi-internal-amd64"),
    ("amd64", "go1.19.13", "abi-internal-amd64"),
    ("amd64", "go1.17", "abi-internal-amd64"),
    ("amd64", "go1.17beta1", "abi-internal-amd64"),
    ("amd64", "go1.22rc1", "abi-internal-amd64"),
    ("amd64", "go1.16.15", "abi0-amd64"),
    ("amd64", "go1.12", "abi0-amd64"),
    ("amd64", "devel go1.23-4a7f3ac8 Tue Jan 2 2024", "abi-internal-amd64"),
    ("amd64", "devel +b7a85e0003 Tue Jul 20 2021", "abi-internal-amd64"),
    ("386", "go1.26.8", "abi0-386"),
    ("386", "go1.12", "abi0-386"),
])
def test_select_abi(goarch, version, name):
    abi = select_abi(goarch, version)
    assert abi.name == name and abi.goarch == goarch
    assert abi_for(goarch, version) is abi
    assert abi.ptrsize == (4 if goarch == "386" else 8)


def test_select_abi_honours_noregabi_only_where_go_did():
    assert select_abi("amd64", "go1.18.10", goexperiment="noregabi").name == "abi0-amd64"
    assert select_abi("amd64", "go1.18.10", goexperiment="fieldtrack").name == \
        "abi-internal-amd64"
    assert select_abi("amd64", "go1.19.8", goexperiment="noregabi").name == "abi-internal-amd64"


def test_select_abi_arm64_register_abi_only_and_refuses_others():
    """arm64 builds of Go 1.18+ use REGABI_ARM64; a stack-ABI arm64 build (older Go, or
    GOEXPERIMENT=noregabi where 1.18 honoured it) is refused before anything attaches."""
    assert select_abi("arm64", "go1.21.0") is REGABI_ARM64
    assert select_abi("arm64", "devel +abc") is REGABI_ARM64
    for version, exp in (("go1.17.13", ""), ("go1.18.10", "noregabi")):
        with pytest.raises(BladeError) as e:
            select_abi("arm64", version, goexperiment=exp)
        assert e.value.code == Code.ACTION_NOT_SUPPORT and "stack ABI" in e.value.message
    with pytest.raises(BladeError) as e:
        select_abi("riscv64", "go1.21.0")
    assert e.value.code == Code.ACTION_NOT_SUPPORT


def test_parse_go_version():
    assert parse_go_version("go1.19.13") == (1, 19)
    assert parse_go_version("go1.9") == (1, 9)
    assert parse_go_version("devel +abc") is None
    with pytest.raises(BladeError):
        parse_go_version("unknown")


# --- layout -----------------------------------------------------------------------------------

def test_layout_alignment_differs_on_386():
    assert (L8.basic("int64").align, L4.basic("int64").align) == (8, 4)
    assert (L8.basic("complex128").align, L4.basic("complex128").align) == (8, 4)
    assert L8.basic("complex64").align == L4.basic("complex64").align == 4
    s8 = L8.struct("S", [("a", L8.basic("int8")), ("b", L8.basic("int64")), ("c", L8.basic("int8"))])
    s4 = L4.struct("S", [("a", L4.basic("int8")), ("b", L4.basic("int64")), ("c", L4.basic("int8"))])
    assert [f.offset for f in s8.fields] == [0, 8, 16] and s8.size == 24
    assert [f.offset for f in s4.fields] == [0, 4, 12] and s4.size == 16


def test_layout_trailing_zero_sized_field_gets_a_byte():
    empty = L8.struct("E", [])
    assert (empty.size, empty.align) == (0, 1)
    s = L8.struct("T", [("x", L8.basic("int32")), ("z", empty)])
    assert s.size == 8  # 4 + padding byte, rounded to 4
    s = L8.struct("U", [("x", L8.basic("int8")), ("z", empty)])
    assert s.size == 2
    assert align_up(13, 8) == 16 and align_up(0, 8) == 0 and align_up(5, 1) == 5


# --- register ABI -----------------------------------------------------------------------------

def test_abi_internal_doc_example():
    # func f(a1 uint8, a2 [2]uintptr, a3 uint8) (r1 struct{x uintptr; y [2]uintptr}, r2 string)
    u8, up = L8.basic("uint8"), L8.basic("uintptr")
    r1 = L8.struct("r1", [("x", up), ("y", L8.array(up, 2))])
    locs = REGABI_AMD64.result_locations(sig([u8, L8.array(up, 2), u8], [r1, L8.string()]))
    assert stack(locs[0]) == 8 + 16  # after the stack-assigned a2
    assert regs(locs[1]) == ["RAX", "RBX"]
    assert [(p.value_offset, p.size) for p in locs[1].pieces] == [(0, 8), (8, 8)]


def test_ten_ints_and_sixteen_floats_overflow_to_the_stack():
    locs = REGABI_AMD64.result_locations(sig([], [L8.basic("int")] * 10))
    assert [regs(l)[0] for l in locs[:9]] == ["RAX", "RBX", "RCX", "RDI", "RSI",
                                            "R8", "R9", "R10", "R11"]
    assert stack(locs[9]) == 8
    locs = REGABI_AMD64.result_locations(sig([], [L8.basic("float64")] * 16))
    assert [regs(l)[0] for l in locs[:15]] == [f"X{i}" for i in range(15)]
    assert stack(locs[15]) == 8


def test_value_that_does_not_fit_leaves_registers_for_later_values():
    s, sl, i = L8.string(), L8.slice(L8.basic("int")), L8.basic("int")
    locs = REGABI_AMD64.result_locations(sig([], [s, sl, sl, s, i, L8.basic("float64")]))
    assert regs(locs[0]) == ["RAX", "RBX"]
    assert regs(locs[2]) == ["R8", "R9", "R10"]
    assert stack(locs[3]) == 8        # needs 2, only R11 is left
    assert regs(locs[4]) == ["R11"]   # the next int still gets it
    assert regs(locs[5]) == ["X0"]


def test_results_restart_registers_but_follow_stack_args():
    i = L8.basic("int")
    locs = REGABI_AMD64.result_locations(sig([i] * 12, [i] * 10 + [L8.string()]))
    assert regs(locs[0]) == ["RAX"]
    assert stack(locs[9]) == 8 + 3 * 8  # three args spilled past the 9 int registers
    assert stack(locs[10]) == 8 + 4 * 8


def test_struct_array_complex_and_small_ints():
    f32, f64, i8 = L8.basic("float32"), L8.basic("float64"), L8.basic("int8")
    inner = L8.struct("I", [("a", i8), ("b", f32)])
    nested = L8.struct("N", [("in", inner), ("c", L8.array(f64, 1)), ("e", L8.basic("uint16"))])
    (loc,) = REGABI_AMD64.result_locations(sig([], [nested]))
    assert [(p.value_offset, p.size, p.reg) for p in loc.pieces] == [
        (0, 1, "RAX"), (4, 4, "X0"), (8, 8, "X1"), (16, 2, "RBX")]
    c = REGABI_AMD64.result_locations(sig([], [L8.basic("complex128"), L8.basic("complex64")]))
    assert [(p.value_offset, p.size, p.reg) for p in c[0].pieces + c[1].pieces] == [
        (0, 8, "X0"), (8, 8, "X1"), (0, 4, "X2"), (4, 4, "X3")]
    assert register_needs(L8.array(L8.string(), 1)) == (2, 0)
    assert register_needs(L8.array(i8, 2)) is None
    assert register_needs(L8.struct("W", [("v", L8.array(i8, 2))])) is None
    assert register_needs(L8.eface()) == (2, 0)


def test_zero_sized_results_take_nothing_but_align_the_stack():
    i8x3, z64, i32x2 = (L8.array(L8.basic("int8"), 3), L8.array(L8.basic("int64"), 0),
                        L8.array(L8.basic("int32"), 2))
    locs = REGABI_AMD64.result_locations(sig([i8x3], [i8x3, z64, i32x2, L8.struct("E", [])]))
    assert stack(locs[0]) == 8 + 8      # args end at 3, rounded to 8
    assert locs[1].pieces == ()
    assert stack(locs[2]) == 8 + 16     # [0]int64 aligned the offset 11 -> 16
    assert locs[3].pieces == ()
    locs = REGABI_AMD64.result_locations(sig([], [L8.struct("E", []), L8.basic("int")]))
    assert locs[0].pieces == () and regs(locs[1]) == ["RAX"]


def test_pieces_follow_the_model():
    (loc,) = REGABI_AMD64.result_locations(sig([], [L8.iface("error")]))
    assert loc.pieces == (Piece(0, 8, REG, reg="RAX"), Piece(8, 8, REG, reg="RBX"))
    assert loc.to_json()["pieces"][1] == {"offset": 8, "size": 8, "where": "reg", "reg": "RBX"}
    assert loc.name == "~r0" and loc.index == 0


# --- ABI0 -------------------------------------------------------------------------------------

def test_abi0_amd64_args_then_results():
    # func(int8, int64) (int8, string, [0]int64, int16)
    i8, i64 = L8.basic("int8"), L8.basic("int64")
    locs = ABI0_AMD64.result_locations(sig([i8, i64], [i8, L8.string(), L8.array(i64, 0),
                                                       L8.basic("int16")]))
    assert [stack(l) for l in locs[:2]] == [8 + 16, 8 + 24]
    assert locs[2].pieces == ()
    assert stack(locs[3]) == 8 + 40


def test_abi0_amd64_method_receiver_first_and_odd_sized_args():
    u8 = L8.basic("uint8")
    recv = L8.pointer(L8.struct("T", [("a", L8.basic("int"))]))
    locs = ABI0_AMD64.result_locations(sig([recv, u8, u8, u8], [L8.basic("float64"),
                                                                L8.basic("bool")]))
    assert stack(locs[0]) == 8 + 16  # receiver 8 + 3 bytes -> 11, rounded to 16
    assert stack(locs[1]) == 8 + 24


def test_abi0_386_uses_4_byte_slots_and_alignment():
    i8, i64 = L4.basic("int8"), L4.basic("int64")
    locs = ABI0_386.result_locations(sig([i8, i64], [i64, i8, L4.basic("complex128"),
                                                     L4.string()]))
    # int8 at 0, int64 at 4..12; results start at 12
    assert [stack(l) for l in locs] == [4 + 12, 4 + 20, 4 + 24, 4 + 40]
    assert ABI0_386.result_locations(sig([], [L4.basic("int")]))[0].pieces == (
        Piece(0, 4, STACK, sp_offset=4),)


# --- arm64 register ABI (the same rules, R0-R15 and F0-F15) -----------------------------------

def test_arm64_sixteen_ints_and_floats_then_the_stack():
    locs = REGABI_ARM64.result_locations(sig([], [L8.basic("int")] * 17))
    assert [regs(l)[0] for l in locs[:16]] == [f"R{i}" for i in range(16)]
    assert stack(locs[16]) == 8  # SP+0 holds the caller's saved LR
    locs = REGABI_ARM64.result_locations(sig([], [L8.basic("float32")] * 17))
    assert [regs(l)[0] for l in locs[:16]] == [f"F{i}" for i in range(16)]
    assert stack(locs[16]) == 8


def test_arm64_string_error_and_a_value_that_does_not_fit():
    i, s = L8.basic("int64"), L8.string()
    locs = REGABI_ARM64.result_locations(sig([i], [s, L8.iface()]))
    assert regs(locs[0]) == ["R0", "R1"] and regs(locs[1]) == ["R2", "R3"]
    # 15 ints leave R15 alone: a string needs two, so it goes to the stack, and the int after
    # it still gets R15 (the counters go back, as on amd64).
    locs = REGABI_ARM64.result_locations(sig([], [i] * 15 + [s, i]))
    assert stack(locs[15]) == 8 and regs(locs[16]) == ["R15"]


def test_arm64_spill_slots_follow_stack_results():
    i = L8.basic("int")
    locs = REGABI_ARM64.param_locations(sig([i, L8.string()], [i] * 17))
    assert regs(locs[0]) == ["R0"] and regs(locs[1]) == ["R1", "R2"]
    # one stack-assigned result (8 bytes at SP+8), then the spill area: the int, the string
    assert (locs[0].spill_offset, locs[1].spill_offset) == (16, 24)


def test_amd64_and_arm64_share_one_assignment_but_not_registers():
    i = L8.basic("int")
    amd = REGABI_AMD64.result_locations(sig([], [i] * 10))
    arm = REGABI_ARM64.result_locations(sig([], [i] * 10))
    assert stack(amd[9]) == 8 and regs(arm[9]) == ["R9"]
    assert (REGABI_ARM64.name, REGABI_ARM64.goarch, REGABI_ARM64.ptrsize) == \
        ("abi-internal-arm64", "arm64", 8)
