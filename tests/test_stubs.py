"""Encoders checked byte for byte against the GNU assembler, and the stub planner's layout."""
import shutil
import subprocess

import pytest

from blade_go.abi.abi0 import ABI0_386, ABI0_AMD64
from blade_go.abi.regabi_amd64 import REGABI_AMD64
from blade_go.errors import BladeError, Code
from blade_go.inspector.gotypes import Field, GoType, Kind, Param, Signature, basic
from blade_go.patch import CAVE, ROUTE, VALUE
from blade_go.stubs import parse_values, plan_return
from blade_go.stubs import encoder_386 as E32
from blade_go.stubs import encoder_amd64 as E64

needs_as = pytest.mark.skipif(not shutil.which("as") or not shutil.which("objcopy"),
                              reason="GNU as/objcopy not installed")


def gas(lines, bits, tmp_path):
    """Assemble Intel-syntax lines with GNU as; memory operands forced to disp32 like ours."""
    src = [".intel_syntax noprefix"]
    for t in lines:
        src.append(("{disp32} " if "[" in t or t.startswith("jmp") else "") + t)
    s, o, b = tmp_path / "t.s", tmp_path / "t.o", tmp_path / "t.bin"
    s.write_text("\n".join(src) + "\n")
    subprocess.run(["as", f"--{bits}", "-o", str(o), str(s)], check=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(o), str(b)], check=True)
    return b.read_bytes()


def assert_same_as_gas(insns, bits, tmp_path):
    ref = gas([i.text for i in insns], bits, tmp_path)
    pos = 0
    for i in insns:
        want = ref[pos:pos + len(i.code)]
        assert i.code == want, f"{i.text}: ours {i.code.hex(' ')} vs as {ref[pos:pos+12].hex(' ')}"
        pos += len(i.code)
    assert pos == len(ref)


WRITABLE = [n for n in range(16) if E64.GPR64[n] not in E64.FORBIDDEN]
DISPS = [0, 8, 0x7f, 0x80, 0x1234, 0x7ffffff0]
IMMS = [1, 0x7f, 0xffffffff, 0x123456789abcdef0, 0xffffffffffffffff]


@needs_as
def test_amd64_encodings_match_gnu_as(tmp_path):
    insns = []
    for r in WRITABLE:
        insns += [E64.mov_imm64(r, imm) for imm in IMMS]
        insns.append(E64.xor_self32(r))
        insns += [E64.load_r13(r, d, size) for d in (0, 8, 0x1234) for size in (8, 4, 2, 1)]
        insns.append(E64.movq_xmm_gpr(3, r))
        insns.append(E64.movd_xmm_gpr(12, r))
    for x in range(15):
        insns += [E64.movq_xmm_gpr(x, 12), E64.movd_xmm_gpr(x, 12), E64.xorps_self(x),
                  E64.movq_xmm_r13(x, 0x18), E64.movd_xmm_r13(x, 0x7ffffff0)]
    for d in DISPS:
        for size in (8, 4, 2, 1):
            insns += [E64.store_rsp_gpr(d, 12, size), E64.store_rsp_gpr(d, 0, size),
                      E64.store_rsp_gpr(d, 3, size)]
        for size, imm in ((4, 0xdeadbeef), (4, 0), (2, 0xbeef), (1, 0xef), (1, 0)):
            insns.append(E64.store_rsp_imm(d, imm, size))
    insns.append(E64.ret())
    assert_same_as_gas(insns, 64, tmp_path)


@needs_as
@pytest.mark.parametrize("rel", [0x1234, -0x10, 0x7ffffff0, -0x7ffffff0])
def test_amd64_jmp_rel32_matches_gnu_as(tmp_path, rel):
    ours = E64.jmp_rel32(0x400000, 0x400000 + rel)
    sign = "+" if rel >= 0 else "-"
    assert ours.code == gas([f"jmp .{sign}{abs(rel):#x}"], 64, tmp_path)


@needs_as
def test_386_encodings_match_gnu_as(tmp_path):
    insns = []
    for d in DISPS:
        for size, imm in ((4, 0xdeadbeef), (4, 0), (2, 0xbeef), (1, 0x7f)):
            insns.append(E32.store_esp_imm(d, imm, size))
        insns += [E32.store_esp_eax(d, size) for size in (4, 2, 1)]
    for addr in (0x8049000, 0xfffff000, 0x1234):
        insns += [E32.load_eax_abs(addr, size) for size in (4, 2, 1)]
    insns.append(E32.ret())
    assert_same_as_gas(insns, 32, tmp_path)
    for rel in (0x100, -0x20):
        sign = "+" if rel >= 0 else "-"
        assert E32.jmp_rel32(0x8049000, 0x8049000 + rel).code == \
            gas([f"jmp .{sign}{abs(rel):#x}"], 32, tmp_path)


def test_forbidden_registers_are_refused():
    for name in ("rsp", "rbp", "r14", "r15"):
        with pytest.raises(ValueError):
            E64.mov_imm64(E64.gpr(name), 1)
        with pytest.raises(ValueError):
            E64.xor_self32(E64.gpr(name))
    with pytest.raises(ValueError):
        E64.xmm("X15")
    with pytest.raises(ValueError):
        E64.jmp_rel32(0, 1 << 32)


# ------------------------------------------------------------------------------ planner

INT = basic("int", Kind.INT, 8)
STR = basic("string", Kind.STRING, 16, 8)
ERR = GoType("error", Kind.IFACE, 16, 8)
F32 = basic("main.Celsius", Kind.FLOAT32, 4)
ITAB = 0x4E1F28


class Res:
    def __init__(self, itab=ITAB, variables=None):
        self._itab, self.vars = itab, variables or {}

    def itab(self, concrete, iface):
        assert (concrete, iface) == ("*errors.errorString", "error")
        return self._itab

    def variable(self, name):
        return self.vars.get(name)


def locs(abi, *types):
    sig = Signature((), tuple(Param(f"~r{i}", t, True) for i, t in enumerate(types)))
    return abi.result_locations(sig)


def plan(abi, types, text, arch="amd64", resolve=None, cave=0x401000, entry=0x45A000, **kw):
    rs = locs(abi, *types)
    vals = parse_values(text, rs)
    asked = []

    def allocate(n):
        asked.append(n)
        return cave
    p = plan_return(rs, vals, arch, abi.ptrsize, resolve or Res(), allocate, entry,
                    b"\x49\x3b\x66\x10\x76\x2a", **kw)
    return p, asked


def test_worked_example_bytes():
    p, asked = plan(REGABI_AMD64, (STR, ERR), '"chaos",error:db is down')
    cave, value, route = p.patches
    assert (cave.role, value.role, route.role) == (CAVE, VALUE, ROUTE)
    assert p.stub_addr == cave.addr == 0x401000 and p.stub_size == 41
    # the data handed to the program is a patch of its own, right after the code (issue 16)
    assert value.addr == cave.end == 0x401030
    code = cave.replacement + value.replacement
    assert code[:10] == bytes.fromhex("48b8") + (0x401030).to_bytes(8, "little")
    assert code[10:20] == bytes.fromhex("48bb") + (5).to_bytes(8, "little")
    assert code[20:30] == bytes.fromhex("48b9") + ITAB.to_bytes(8, "little")
    assert code[30:40] == bytes.fromhex("48bf") + (0x401040).to_bytes(8, "little")
    assert code[40:48] == b"\xc3" + b"\xcc" * 7
    assert code[48:63] == b"chaosdb is down"
    assert code[64:80] == (0x401035).to_bytes(8, "little") + (10).to_bytes(8, "little")
    assert asked == [len(code)] and p.data_size == len(code) - 48
    assert route.addr == 0x45A000 and route.original == b"\x49\x3b\x66\x10\x76"
    assert route.replacement == b"\xe9" + (0x401000 - 0x45A005).to_bytes(4, "little", signed=True)
    assert "movabs rcx, 0x4e1f28" in p.listing and "entry route" in p.listing


def test_cave_original_comes_from_reader():
    p, _ = plan(REGABI_AMD64, (INT,), "7", read_original=lambda a, n: b"\xcc" * n)
    assert p.patches[0].original == b"\xcc" * len(p.patches[0].replacement)
    assert p.data_size == 0 and len(p.patches[0].replacement) == p.stub_size == 11


def test_zero_values_use_xor_and_xorps():
    p, _ = plan(REGABI_AMD64, (INT, F32, ERR), "0,0,nil")
    texts = [text for _, _, text in p.instructions]
    assert any("xor eax, eax" in t for t in texts)
    assert any("xorps xmm0, xmm0" in t for t in texts)
    assert any("xor ebx, ebx" in t for t in texts) and any("xor ecx, ecx" in t for t in texts)


def test_float32_goes_through_r12_with_movd():
    p, _ = plan(REGABI_AMD64, (F32,), "1.5")
    code = p.patches[0].replacement
    assert code[:10] == bytes.fromhex("49bc") + (0x3FC00000).to_bytes(8, "little")
    assert code[10:15] == bytes.fromhex("66410f6ec4")  # movd xmm0, r12d


def test_error_without_itab_is_refused_with_advice():
    with pytest.raises(BladeError) as e:
        plan(REGABI_AMD64, (ERR,), "error:boom", resolve=Res(itab=None))
    assert e.value.code == Code.PARAMETER_ILLEGAL
    assert "errors.New" in e.value.message and "var:" in e.value.message


def test_var_must_exist_and_match_type():
    with pytest.raises(BladeError, match=r"result 0 \(error\): var:io.EOF: no package-level"):
        plan(REGABI_AMD64, (ERR,), "var:io.EOF")
    with pytest.raises(BladeError, match=r"result 0 \(error\): var:main.N has type int, but"):
        plan(REGABI_AMD64, (ERR,), "var:main.N", resolve=Res(variables={"main.N": (0x5000, INT)}))


def test_var_copies_through_r13():
    p, _ = plan(REGABI_AMD64, (ERR,), "var:io.EOF",
                resolve=Res(variables={"io.EOF": (0x5A1230, ERR)}))
    code = p.patches[0].replacement
    assert code[:10] == bytes.fromhex("49bd") + (0x5A1230).to_bytes(8, "little")
    assert code[10:17] == bytes.fromhex("498b8500000000")  # mov rax, [r13+0]
    assert code[17:24] == bytes.fromhex("498b9d08000000")  # mov rbx, [r13+8]
    assert p.data_size == 0


def test_stack_results_on_amd64_abi0():
    p, _ = plan(ABI0_AMD64, (INT, basic("int32", Kind.INT, 4), basic("bool", Kind.BOOL, 1)),
                "-1,7,true")
    lines = [text for _, _, text in p.instructions]
    assert "movabs r12, 0xffffffffffffffff" in lines[0]
    assert "mov QWORD PTR [rsp+0x8], r12" in lines[1]
    assert "mov DWORD PTR [rsp+0x10], 0x7" in lines[2]
    assert "mov BYTE PTR [rsp+0x14], 0x1" in lines[3]
    assert lines[4].endswith("ret")


def test_386_stub_stores_dwords_and_copies_vars_via_eax():
    u16 = basic("uint16", Kind.UINT, 2)
    rs_types = (GoType("string", Kind.STRING, 8, 4), u16, GoType("error", Kind.IFACE, 8, 4))
    p, _ = plan(ABI0_386, rs_types, 'hi,65535,var:io.EOF', arch="386", cave=0x8049000,
                entry=0x8050000, resolve=Res(variables={
                    "io.EOF": (0x80F0000, GoType("error", Kind.IFACE, 8, 4))}))
    lines = [text for _, _, text in p.instructions]
    data = 0x8049000 + ((p.stub_size + 15) // 16) * 16
    assert lines[0] == f"mov DWORD PTR [esp+0x4], {data:#x}"
    assert lines[1] == "mov DWORD PTR [esp+0x8], 0x2"
    assert lines[2] == "mov WORD PTR [esp+0xc], 0xffff"
    assert lines[3:7] == ["mov eax, DWORD PTR ds:0x80f0000", "mov DWORD PTR [esp+0x10], eax",
                          "mov eax, DWORD PTR ds:0x80f0004", "mov DWORD PTR [esp+0x14], eax"]
    assert lines[7] == "ret"


def test_struct_spanning_int_and_float_registers():
    pt = GoType("main.Point", Kind.STRUCT, 16, 8, fields=(
        Field("X", 0, basic("float64", Kind.FLOAT64, 8)), Field("N", 8, INT)))
    p, _ = plan(REGABI_AMD64, (pt,), "zero")
    assert "xorps xmm0, xmm0" in p.listing and "xor eax, eax" in p.listing


def test_unreachable_cave_is_no_room():
    with pytest.raises(BladeError, match="no room for the stub"):
        plan(REGABI_AMD64, (INT,), "1", cave=0x7F0000000000)


def test_more_results_than_registers_mixes_regs_and_stack():
    types = (STR,) * 5  # 10 int registers needed, 9 exist: the fifth string goes to the stack
    p, _ = plan(REGABI_AMD64, types, "a,b,c,d,e")
    assert "movabs r10, 0x1" in p.listing and "r11" not in p.listing  # d's length
    assert "mov QWORD PTR [rsp+0x8], r12" in p.listing
    assert "mov QWORD PTR [rsp+0x10], r12" in p.listing
