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
    """386 has no dictionary guard (ABI0: the dictionary is on the stack)."""
    impl = stub_arch("386")
    assert not impl.supports("guarded_patches")
    with pytest.raises(BladeError) as e:
        impl.guarded_patches
    assert e.value.code == Code.ACTION_NOT_SUPPORT
    assert "386" in e.value.message and PARTS["guarded_patches"] in e.value.message
    with pytest.raises(AttributeError):
        impl.no_such_part
    # every action has its arm64 stub; only the x86 return planner's encoder is not arm64's
    assert [p for p in PARTS if not stub_arch("arm64").supports(p)] == ["encoder"]


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


def test_arm64_code_references_match_capstone_on_a_real_build():
    """route_arm64.code_references (B/BL to F from outside F, ADRP+ADD of F's address) counts
    what capstone's linear disassembly of .text finds, for every main.* function of an arm64
    build."""
    import re as _re
    from tests.support.fixtures import build_fixture
    from blade_go.inspector import open_binary
    b = open_binary(path=str(build_fixture("e2e_target", goarch="arm64")))
    text = b.image.section(".text")
    data = b.image.read_file(text.offset, text.size)
    md = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    md.skipdata = True
    branches, adrp = {}, {}
    prev = None
    for ins in md.disasm(data, text.addr):
        if ins.mnemonic in ("b", "bl"):
            t = int(ins.op_str.lstrip("#"), 16)
            branches.setdefault(t, []).append(ins.address)
        if prev is not None and prev.mnemonic == "adrp" and ins.mnemonic == "add":
            reg, page = prev.op_str.split(", ")
            m = _re.fullmatch(rf"{reg}, {reg}, #(0x[0-9a-f]+|\d+)", ins.op_str)
            if m:
                t = int(page.lstrip("#"), 16) + int(m.group(1), 0)
                adrp[t] = adrp.get(t, 0) + 1
        prev = ins
    checked = 0
    for name in sorted(b._function_table()):
        if not name.startswith("main."):
            continue
        fn = b.find_function(name)
        want = sum(1 for a in branches.get(fn.entry, []) if not fn.entry <= a < fn.end) + \
            adrp.get(fn.entry, 0)
        got = route_arm64.code_references(data, text.addr, fn.entry, fn.entry, fn.end)
        assert got == want, name
        checked += want > 0
    assert checked >= 10


def test_breakpoint_instruction_per_arch():
    """A killed dlv leaves its breakpoint instruction in the text (session/text.repair_int3):
    int3 on x86, BRK #0 on arm64 (delve's arm64BreakInstruction), chosen by e_machine."""
    import os
    from blade_go.session.text import breakpoint_instruction
    from blade_go.stubs.select import for_elf_machine
    assert for_elf_machine(62).goarch == "amd64" and for_elf_machine(3).goarch == "386"
    arm = for_elf_machine(183)
    assert arm.goarch == "arm64" and for_elf_machine(40) is None
    (ins,) = list(_CS.disasm(arm.breakpoint, 0x400000))
    assert (ins.mnemonic, ins.op_str) == ("brk", "#0")
    assert route_arm64.BRK0.to_bytes(4, "little") == arm.breakpoint
    with open("/proc/self/exe", "rb") as f:
        machine = int.from_bytes(f.read(20)[18:20], "little")
    assert breakpoint_instruction(os.getpid()) == for_elf_machine(machine).breakpoint


def test_code_end_without_a_pcsp_table_strips_the_arch_padding():
    """pclntab.code_end's fallback: x86 strips INT3 bytes; arm64 strips zero words and keeps
    whole instructions (a word ending in zero bytes stays)."""
    from blade_go.inspector.pclntab import PclnTable

    class Img:
        def __init__(self, goarch, code):
            self.goarch, self.code = goarch, code

        def read(self, addr, n):
            return self.code[:n]

    class NoTable(PclnTable):
        _pcsp = {}  # no pc/sp table for this function: the fallback runs

        def __init__(self, image):
            self.image, self._pcsp_known, self.data = image, {}, b""

    def end(goarch, code):
        return NoTable(Img(goarch, code)).code_end(0x1000, 0x1000 + len(code)) - 0x1000

    assert end("amd64", b"\x90\xc3\xcc\xcc\xcc") == 2
    ret, mov_w0_0 = bytes.fromhex("c0035fd6"), bytes.fromhex("00008052")  # ret; mov w0,#0
    assert end("arm64", ret + bytes(8)) == 4
    assert end("arm64", ret + bytes.fromhex("00000000") + ret + bytes(4)) == 12
    # an instruction whose high bytes are zero is never cut: the end is a whole word
    assert end("arm64", mov_w0_0 + bytes.fromhex("00010000")) == 6 + 2


def test_arm64_plans_through_select_pass_the_trust_check():
    """What an arm64 create plans (through stub_arch, as the actions do: return, conditional
    return, delay, panic, args) is what trust.check_against accepts on destroy: B/BL routes into the
    experiment's own caves (header/text-end caves of an arm64 build), originals the file's
    bytes; a route turned into anything else is refused."""
    from blade_go import trust
    from blade_go.inspector import CaveAllocator, open_binary
    from blade_go.patch import ROUTE, Patch
    from blade_go.stubs import BinaryResolver, parse_values
    from blade_go.stubs.conditions import Conditions
    from blade_go.stubs.conditions_data import DataAllocator, data_cave
    from blade_go.stubs.placement import FunctionCode
    from blade_go.stubs.plans import PanicSymbols, parse_panic_value
    from tests.support.fixtures import build_fixture
    b = open_binary(path=str(build_fixture("faults_target", goarch="arm64")))
    impl = stub_arch(b.goarch)
    assert b.abi.name == "abi-internal-arm64"
    fn = b.find_function("main.Work")
    results = b.result_locations(fn)
    params = b.abi.param_locations(b.signature(fn))
    code = FunctionCode.decode(b.read(fn.entry, fn.end - fn.entry), fn.entry, b.goarch, fn.name)
    read = lambda a, n: b.read(a, n)
    plans = {}

    def alloc():
        caves = CaveAllocator(b.caves(int3=False))
        return lambda n: caves.allocate(n, near=fn.entry)
    values = parse_values(",".join("0" for _ in results), results, b, func=fn.name)
    plans["return"] = impl.plan_return(results, values, b.goarch, 8, BinaryResolver(b), alloc(),
                                       fn.entry, b.read(fn.entry, impl.route_len), read)
    data = DataAllocator(data_cave(b.image), [])
    plans["conditional"] = impl.plan_conditional_return(
        results, values, Conditions(count=2, seed=1), b.goarch, 8, BinaryResolver(b), alloc(),
        lambda n, a: data.allocate(n, a, near=fn.entry), code, read)
    plans["delay"] = impl.plan_delay(code, params, True, b.symbol("time.Sleep"), 100, 0,
                                     alloc(), read)
    syms = PanicSymbols(b.symbol("runtime.gopanic"), b.symbol("reflect.stringType"),
                        b.itab("*errors.errorString", "error"))
    plans["panic"] = impl.plan_panic(code, params, True, parse_panic_value("error:boom"), syms,
                                     alloc(), read)
    from blade_go.stubs import values as V
    new = {0: V.parse_element(0, params[0].type, "7")}
    plans["args"] = impl.plan_args(code, params, new, BinaryResolver(b), alloc(), read)
    for kind, plan in plans.items():
        trust.check_against(b, plan.patches, fn.name, kind)
        routes = [p for p in plan.patches if p.role == ROUTE]
        assert routes and all(len(r.replacement) % 4 == 0 for r in routes), kind
        for r in routes:
            assert impl.parse_route(r.replacement, r.addr), kind
    route = next(p for p in plans["return"].patches if p.role == ROUTE)
    forged = Patch(route.addr, route.original, bytes.fromhex("c0035fd6"), ROUTE)  # ret
    with pytest.raises(BladeError) as e:
        trust.check_against(b, [p if p is not route else forged
                                for p in plans["return"].patches], fn.name, "u1")
    assert e.value.code == Code.FORBIDDEN and "B (imm26) branch" in e.value.message


def test_cave_allocator_keeps_to_the_arch_branch_reach():
    """arm64's route is one B (+-128 MB): the allocator passes over a cave beyond it that a
    rel32 route (x86, +-2 GB) could use, and says so when nothing is in reach."""
    from blade_go.actions.return_ import _reach
    from blade_go.inspector.caves import HEADER, TEXT_END, Cave, CaveAllocator

    class B:
        def __init__(self, goarch):
            self.goarch = goarch
    near = 0x10000000
    far = Cave(near + (1 << 28), near + (1 << 28) + 256, HEADER)      # 256 MB away
    close = Cave(near + (1 << 20), near + (1 << 20) + 256, TEXT_END)  # 1 MB away
    assert CaveAllocator([far, close], **_reach(B("amd64"))).allocate(64, near) == far.start
    assert CaveAllocator([far, close], **_reach(B("arm64"))).allocate(64, near) == close.start
    with pytest.raises(BladeError) as e:
        CaveAllocator([far], **_reach(B("arm64"))).allocate(64, near)
    assert "within B (imm26) reach" in e.value.message
    assert _reach(B("386")) == {"reach": 1 << 31, "reach_name": "rel32"}
