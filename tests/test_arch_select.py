"""The per-architecture interface (stubs/arch.py, stubs/select.py): one place maps a GOARCH
to its code, the core never imports an architecture's file, and the arm64 hooks that need no
arm64 machine (reading a route back, padding) are checked against capstone's decoder."""
import ast
from pathlib import Path

import capstone
import pytest

from blade_go.errors import BladeError, Code
from blade_go.stubs import route_arm64, route_x86
from blade_go.stubs.arch import PARTS
from blade_go.stubs.select import ARCHES, stub_arch

STUBS = Path(__file__).resolve().parent.parent / "blade_go" / "stubs"
ARCH_SUFFIXES = ("_amd64", "_386", "_arm64", "_x86")
# the x86 family (iced-x86 based, shared by amd64 and 386) and the one selecting module
X86_FAMILY = {"asm", "faults", "args_stub", "conditions_return", "instance_guard"}
SELECT = "select"


def _imports(path: Path):
    """Module names (within blade_go.stubs) imported by `path`, at any depth."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
    return out


def _is_arch(name: str) -> bool:
    return name.endswith(ARCH_SUFFIXES)


def test_core_never_imports_an_architecture_and_arch_files_never_import_select():
    for path in STUBS.glob("*.py"):
        name = path.stem
        imported = _imports(path)
        if name == SELECT:
            continue
        if _is_arch(name) or name in X86_FAMILY:
            # an arch file depends on the core (and its own family), never on the chooser
            assert SELECT not in imported, f"{name} imports select"
            if name.endswith("_arm64"):
                assert not any(m.endswith(("_x86", "_amd64", "_386")) for m in imported), name
            continue
        arch_imports = {m for m in imported if _is_arch(m)} | (imported & X86_FAMILY)
        assert not arch_imports, f"core module {name} imports {arch_imports}"


def test_every_arch_is_chosen_in_select_and_unknown_ones_are_refused():
    assert set(ARCHES) == {"amd64", "386", "arm64"}
    for impl in ARCHES.values():
        assert set(impl.parts) <= set(PARTS)
        for part, where in impl.parts.items():
            module, attr = where.split(":")
            assert (STUBS / f"{module}.py").exists(), where
    with pytest.raises(BladeError) as e:
        stub_arch("riscv64")
    assert e.value.code == Code.ACTION_NOT_SUPPORT and "riscv64" in e.value.message


def test_a_missing_part_is_a_clear_action_not_support():
    impl = stub_arch("arm64")
    missing = [p for p in PARTS if not impl.supports(p)]
    assert missing, "nothing left to refuse on arm64: drop this test"
    with pytest.raises(BladeError) as e:
        getattr(impl, missing[0])
    assert e.value.code == Code.ACTION_NOT_SUPPORT
    assert "arm64" in e.value.message and PARTS[missing[0]] in e.value.message
    with pytest.raises(AttributeError):
        impl.no_such_part


def test_x86_parts_resolve_to_the_x86_family():
    from blade_go.stubs import args_stub, conditions_return, faults, planner
    from blade_go.stubs.placement_amd64 import AMD64
    from blade_go.stubs.placement_386 import I386
    amd64, i386 = stub_arch("amd64"), stub_arch("386")
    assert amd64.code is AMD64 and i386.code is I386
    assert amd64.plan_return is planner.plan_return is i386.plan_return
    assert amd64.plan_delay is faults.plan_delay and amd64.plan_args is args_stub.plan_args
    assert amd64.plan_conditional_return is conditions_return.plan_conditional_return
    assert (amd64.route_len, amd64.pad_byte, i386.route_len) == (5, 0xCC, 5)


# ------------------------------------------------------------------ reading a route back

def test_x86_route_is_rel32_branches_then_fill():
    assert route_x86.parse_route(bytes.fromhex("e9fb0f0000"), 0x401000) == [0x402000]
    # delay's `call H; jmp H2` then int3 padding over the rest of the displaced bytes
    code = bytes.fromhex("e8fb0f0000") + bytes.fromhex("e800000000")[:1] + \
        (0x1000).to_bytes(4, "little") + b"\xcc\xcc"
    assert route_x86.parse_route(code, 0x401000) == [0x402000, 0x401000 + 10 + 0x1000]
    assert route_x86.parse_route(bytes.fromhex("31c0c3cccc"), 0x401000) is None
    assert route_x86.parse_route(bytes.fromhex("e9000000003100"), 0x401000) is None


_CS = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)


def _cs_target(word: bytes, addr: int):
    (ins,) = list(_CS.disasm(word, addr))
    assert ins.mnemonic in ("b", "bl")
    return int(ins.op_str.lstrip("#"), 16)


@pytest.mark.parametrize("src,dst", [(0x400000, 0x401000), (0x401000, 0x400000),
                                     (0x10000, 0x10000 + (1 << 27) - 4),
                                     (0x8000000, 0x8000000 - (1 << 27)),
                                     (0xaaaab0000000, 0xaaaab0012340)])
def test_arm64_b_and_bl_encode_and_decode_as_capstone_reads_them(src, dst):
    for link in (False, True):
        word = route_arm64.encode_b(src, dst, link=link)
        assert _cs_target(word, src) == dst
        assert list(_CS.disasm(word, src))[0].mnemonic == ("bl" if link else "b")
        assert route_arm64.branch_target(int.from_bytes(word, "little"), src) == dst


def test_arm64_branch_reach_is_refused_outside_128_mb_and_unaligned():
    with pytest.raises(ValueError):
        route_arm64.encode_b(0x10000, 0x10000 + (1 << 27))
    with pytest.raises(ValueError):
        route_arm64.encode_b(0x8000000, 0x8000000 - (1 << 27) - 4)
    with pytest.raises(ValueError):
        route_arm64.encode_b(0x10000, 0x10002)


def test_arm64_route_parse():
    b = route_arm64.encode_b(0x400000, 0x401000)
    assert route_arm64.parse_route(b, 0x400000) == [0x401000]
    # `BL H; B H2` then BRK/NOP fill
    route = route_arm64.encode_b(0x400000, 0x401000, link=True) + \
        route_arm64.encode_b(0x400004, 0x401040) + (0xD4200000).to_bytes(4, "little") + \
        (0xD503201F).to_bytes(4, "little")
    assert route_arm64.parse_route(route, 0x400000) == [0x401000, 0x401040]
    assert [i.mnemonic for i in _CS.disasm(route, 0x400000)] == ["bl", "b", "brk", "nop"]
    ret = bytes.fromhex("c0035fd6")  # ret
    assert route_arm64.parse_route(ret, 0x400000) is None
    assert route_arm64.parse_route(b + ret, 0x400000) is None  # trailing code, not fill
    assert route_arm64.parse_route(b[:3], 0x400000) is None
    assert route_arm64.parse_route(b, 0x400002) is None       # misaligned address
    # B.cond and CBZ are not routes (their opcodes differ from B/BL)
    assert route_arm64.branch_target(0x54000040, 0x400000) is None  # b.eq +8
    assert route_arm64.branch_target(0xB4000040, 0x400000) is None  # cbz x0, +8


def test_arm64_padding_is_zero_words_inside_function_symbols():
    """Go's arm64 linker pads functions to 16 bytes with zero words (`udf #0`) counted in the
    function's symbol size: no padding runs between symbols to use as caves, and the pad byte
    is 0 (the route check's "runs past the function" then sees zeros)."""
    from tests.support.fixtures import build_fixture
    from blade_go.inspector import open_binary
    b = open_binary(path=str(build_fixture("e2e_target", goarch="arm64")))
    assert b.goarch == "arm64" and stub_arch("arm64").pad_byte == 0
    spans = sorted(set(b.symtab.function_spans()))
    assert all(e % 16 == 0 for e, _ in spans)
    tails = 0
    for e, end in spans[:400]:
        code = b.read(e, end - e)
        if code.endswith(b"\0\0\0\0"):
            tails += 1
            (ins,) = list(_CS.disasm(code[-4:], end - 4))
            assert ins.mnemonic == "udf"
    assert tails > 100
    from blade_go.inspector.caves import int3_caves
    assert int3_caves(b.image, spans, 0) == []  # nothing between symbols


def test_dlv_register_names_on_arm64_are_scanned():
    """session/references.register_referenced reads every register dlv lists, by name: the
    same parse covers arm64's X0..X30, SP, PC and V registers (names from delve's
    pkg/proc/linutil arm64 register set)."""
    from blade_go.session import references as R

    class Client:
        def list_threads(self):
            return [{"id": 7}]

        def call(self, method, args):
            assert method == "ListRegisters"
            return {"Registers": "    X0 = 0x0000000000000001\n   X30 = 0x0000aaaab0001234\n"
                                 "    SP = 0x0000ffffd0000000\n    PC = 0x0000aaaab0002000\n"
                                 "    V0 = 0x00000000000000010000aaaab0003000\n"}
    found = R.register_referenced(Client(), [(0xaaaab0001000, 0xaaaab0001300),
                                             (0xaaaab0002000, 0xaaaab0002004),
                                             (0xaaaab0003000, 0xaaaab0003010)])
    assert found[0] == "thread 7 X30 = 0xaaaab0001234"
    assert found[1] == "thread 7 PC = 0xaaaab0002000"
    assert 2 in found and found[2].startswith("thread 7 V0")
