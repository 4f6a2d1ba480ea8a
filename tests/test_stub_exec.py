"""Planned stubs executed on the real CPU (no Go, no delve).

A small C harness maps a code region at 0x10000000 and a data region at 0x20000000, writes the
plan's patches (route at the "entry", stub + data in the "cave", var: bytes in the data region),
and calls the entry through an assembly trampoline. The trampoline loads sentinels into every
general and XMM register (R14 and X15 included), fills the caller's result area with 0xab, calls,
and dumps all registers, the result area and the cave region. The checks follow pointers into
the dumped memory, so a wrong address or a wrong layout fails here just as it would in Go.
"""
import shutil
import struct
import subprocess

import pytest

from blade_go.abi.abi0 import ABI0_386, ABI0_AMD64
from blade_go.abi.regabi_amd64 import REGABI_AMD64
from blade_go.inspector.gotypes import Field, GoType, Kind, Param, Signature, basic
from tests.support.gotypes import BOOL, C128, ERR, F32, F64, I32, I8, INT, STR, U16
from blade_go.stubs import parse_values, plan_return

CODE, DATA = 0x10000000, 0x20000000
ENTRY, CAVE = CODE, CODE + 0x800
ITAB = 0x4E1F28
STACK_AREA = 264
GPR = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
       "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
GPR32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")

pytestmark = pytest.mark.skipif(not shutil.which("gcc"), reason="gcc not installed")

MAIN_C = r"""
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
extern void run_stub(uintptr_t target);
extern unsigned char dump[];
extern unsigned int dump_size;
static void region(uintptr_t at, size_t n, int prot) {
    void *p = mmap((void *)at, n, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p != (void *)at) { perror("mmap"); exit(2); }
}
static char line[1 << 20];
int main(int argc, char **argv) {
    FILE *f = fopen(argv[1], "r");
    uintptr_t call = 0;
    region(0x10000000, 0x10000, PROT_READ | PROT_WRITE | PROT_EXEC);
    region(0x20000000, 0x1000, PROT_READ | PROT_WRITE);
    memset((void *)0x10000000, 0xcc, 0x10000);
    while (fgets(line, sizeof line, f)) {
        char *hex;
        uintptr_t addr = (uintptr_t)strtoull(line, &hex, 16);
        if (*hex == '\n' || *hex == 0) { call = addr; continue; }
        hex++;
        for (size_t i = 0; hex[2 * i] && hex[2 * i] != '\n'; i++) {
            unsigned v; sscanf(hex + 2 * i, "%2x", &v); ((unsigned char *)addr)[i] = v;
        }
    }
    run_stub(call);
    for (unsigned i = 0; i < dump_size; i++) printf("%02x", dump[i]);
    printf("\n");
    for (unsigned i = 0; i < 0x1000; i++) printf("%02x", ((unsigned char *)0x10000000)[i]);
    printf("\n");
    return 0;
}
"""


def gpr_sentinel(n):
    return 0x5E5E5E5E00000000 + n * 0x11


def xmm_sentinel(i):
    return struct.pack("<QQ", 0x7878787800000000 + i, 0x7979797900000000 + i)


def tramp_amd64():
    s = [".intel_syntax noprefix", ".text", ".globl run_stub", "run_stub:",
         "push rbp", "mov rbp, rsp", "push rbx", "push r12", "push r13", "push r14", "push r15",
         f"sub rsp, {STACK_AREA}", "mov [rip+target], rdi",
         "movabs rax, 0xabababababababab", "mov rdi, rsp", f"mov rcx, {STACK_AREA // 8}",
         "rep stosq"]
    s += [f"movdqu xmm{i}, [rip+xsent+{16 * i}]" for i in range(16)]
    s += [f"movabs {GPR[n]}, {gpr_sentinel(n):#x}" for n in range(16) if n not in (4, 5)]
    s += ["mov [rip+pre_sp], rsp", "mov [rip+pre_bp], rbp", "call QWORD PTR [rip+target]"]
    s += [f"mov [rip+dump+{8 * n}], {GPR[n]}" for n in range(16)]
    s += [f"movdqu [rip+dump+{128 + 16 * i}], xmm{i}" for i in range(16)]
    s += ["mov rsi, rsp", "lea rdi, [rip+dump+384]", f"mov rcx, {STACK_AREA // 8}", "rep movsq",
          "mov rax, [rip+pre_sp]", f"mov [rip+dump+{384 + STACK_AREA}], rax",
          "mov rax, [rip+pre_bp]", f"mov [rip+dump+{392 + STACK_AREA}], rax",
          f"add rsp, {STACK_AREA}", "pop r15", "pop r14", "pop r13", "pop r12", "pop rbx",
          "pop rbp", "ret", ".data", "target: .quad 0", "pre_sp: .quad 0", "pre_bp: .quad 0",
          ".globl dump", "dump: .zero 1024", ".globl dump_size",
          f"dump_size: .long {400 + STACK_AREA}", "xsent:"]
    s += [f".byte {', '.join(str(b) for b in xmm_sentinel(i))}" for i in range(16)]
    return "\n".join(s) + "\n"


def tramp_386():
    s = [".intel_syntax noprefix", ".text", ".globl run_stub", "run_stub:",
         "push ebp", "mov ebp, esp", "push ebx", "push esi", "push edi",
         "mov eax, [ebp+8]", "mov [target], eax", f"sub esp, {STACK_AREA}",
         "mov eax, 0xabababab", "mov edi, esp", f"mov ecx, {STACK_AREA // 4}", "rep stosd"]
    s += [f"mov {GPR32[n]}, {0x5E5E0000 + n * 0x11:#x}" for n in range(8) if n not in (4, 5)]
    s += ["mov [pre_sp], esp", "mov [pre_bp], ebp", "call DWORD PTR [target]"]
    s += [f"mov [dump+{4 * n}], {GPR32[n]}" for n in range(8)]
    s += ["mov esi, esp", "lea edi, [dump+32]", f"mov ecx, {STACK_AREA // 4}", "rep movsd",
          "mov eax, [pre_sp]", f"mov [dump+{32 + STACK_AREA}], eax",
          "mov eax, [pre_bp]", f"mov [dump+{36 + STACK_AREA}], eax",
          f"add esp, {STACK_AREA}", "pop edi", "pop esi", "pop ebx", "pop ebp", "ret",
          ".data", "target: .long 0", "pre_sp: .long 0", "pre_bp: .long 0",
          ".globl dump", "dump: .zero 1024", ".globl dump_size",
          f"dump_size: .long {40 + STACK_AREA}"]
    return "\n".join(s) + "\n"


def build(tmp, name, asm, flags):
    (tmp / "main.c").write_text(MAIN_C)
    (tmp / f"{name}.s").write_text(asm)
    exe = tmp / name
    r = subprocess.run(["gcc", *flags, "-O1", "-no-pie", "-o", str(exe), str(tmp / "main.c"),
                        str(tmp / f"{name}.s")], capture_output=True, text=True)
    if r.returncode:
        return None, r.stderr
    return exe, ""


@pytest.fixture(scope="module")
def harness64(tmp_path_factory):
    exe, why = build(tmp_path_factory.mktemp("h64"), "h64", tramp_amd64(), ["-m64"])
    assert exe, why
    return exe


@pytest.fixture(scope="module")
def harness32(tmp_path_factory):
    exe, why = build(tmp_path_factory.mktemp("h32"), "h32", tramp_386(), ["-m32"])
    if not exe:
        from tests.support.toolchains import missing
        missing(f"gcc -m32 unavailable (install gcc-multilib): {why.strip()[:200]}")
    return exe


class Machine:
    """What the trampoline dumped after the stub returned."""

    def __init__(self, regs_and_stack: bytes, code_page: bytes, ptrsize: int):
        self.raw, self.page, self.ptrsize = regs_and_stack, code_page, ptrsize

    def gpr(self, n):
        w = self.ptrsize
        return int.from_bytes(self.raw[n * w:(n + 1) * w], "little")

    def xmm(self, i):
        return self.raw[128 + 16 * i:144 + 16 * i]

    @property
    def stack(self):  # stack[k] is [SP_at_stub_entry + ptrsize + k]
        base = 384 if self.ptrsize == 8 else 32
        return self.raw[base:base + STACK_AREA]

    def at_sp(self, sp_offset, n):
        k = sp_offset - self.ptrsize
        return self.stack[k:k + n]

    def mem(self, addr, n):
        assert CODE <= addr and addr + n <= CODE + len(self.page), hex(addr)
        return self.page[addr - CODE:addr - CODE + n]

    def string(self, ptr, n):
        return self.mem(ptr, n) if n else b""


class Res:
    def __init__(self, variables=None):
        self.vars = variables or {}

    def itab(self, concrete, iface):
        return ITAB

    def variable(self, name):
        return self.vars.get(name)


def execute(harness, abi, types, text, variables=None, var_bytes=b"", arch="amd64"):
    sig = Signature((), tuple(Param(f"~r{i}", t, True) for i, t in enumerate(types)))
    locs = abi.result_locations(sig)
    values = parse_values(text, locs)
    plan = plan_return(locs, values, arch, abi.ptrsize, Res(variables), lambda n: CAVE, ENTRY,
                       b"\xcc" * 5, read_original=lambda a, n: b"\xcc" * n)
    lines = [f"{p.addr:x} {p.replacement.hex()}" for p in plan.patches]
    if var_bytes:
        lines.append(f"{DATA:x} {var_bytes.hex()}")
    lines.append(f"{ENTRY:x}")
    inp = harness.parent / "patches.txt"
    inp.write_text("\n".join(lines) + "\n")
    out = subprocess.run([str(harness), str(inp)], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    regs, page = out.stdout.split()
    m = Machine(bytes.fromhex(regs), bytes.fromhex(page), abi.ptrsize)
    return m, locs, plan


def check_untouched(m, written_regs, written_stack):
    """Every register the stub had no business writing still holds its sentinel; R14 and X15
    included. Stack bytes outside result slots keep the 0xab fill; SP and BP are unchanged."""
    w = m.ptrsize
    n_gpr = 16 if w == 8 else 8
    for n in range(n_gpr):
        name = (GPR if w == 8 else GPR32)[n]
        if n in (4, 5) or name in written_regs:
            continue
        if w == 8 and name in ("r12", "r13"):
            continue  # scratch
        if w == 4 and name == "eax":
            continue  # scratch on 386
        want = gpr_sentinel(n) if w == 8 else 0x5E5E0000 + n * 0x11
        assert m.gpr(n) == want, f"{name} clobbered: {m.gpr(n):#x}"
    if w == 8:
        for i in range(16):
            if f"X{i}" not in written_regs:
                assert m.xmm(i) == xmm_sentinel(i), f"X{i} clobbered"
        assert m.gpr(14) == gpr_sentinel(14) and m.gpr(15) == gpr_sentinel(15)
    base = 384 + STACK_AREA if w == 8 else 32 + STACK_AREA
    pre_sp, pre_bp = (int.from_bytes(m.raw[base + k * w:base + (k + 1) * w], "little")
                      for k in (0, 1))
    assert m.gpr(4) == pre_sp and m.gpr(5) == pre_bp
    for k, b in enumerate(m.stack):
        if not any(lo <= k + w < hi for lo, hi in written_stack):
            assert b == 0xAB, f"stack byte [sp+{k + w:#x}] written"


def reg_pieces(locs):
    return {p.reg.lower() if not p.reg.startswith("X") else p.reg
            for loc in locs for p in loc.pieces if p.where == "reg"}


def stack_ranges(locs):
    return [(p.sp_offset, p.sp_offset + p.size) for loc in locs for p in loc.pieces
            if p.where == "stack"]




def test_integers_in_registers(harness64):
    m, locs, _ = execute(harness64, REGABI_AMD64, (INT, I8, U16, BOOL, I32), "-1,-2,65535,true,7")
    assert [m.gpr(GPR.index(r)) for r in ("rax", "rbx", "rcx", "rdi", "rsi")] == \
        [(1 << 64) - 1, 0xFE, 0xFFFF, 1, 7]
    check_untouched(m, reg_pieces(locs), [])


def test_string_and_error(harness64):
    m, locs, _ = execute(harness64, REGABI_AMD64, (STR, ERR), '"chaos",error:db is down')
    rax, rbx, rcx, rdi = (m.gpr(GPR.index(r)) for r in ("rax", "rbx", "rcx", "rdi"))
    assert m.string(rax, rbx) == b"chaos"
    assert rcx == ITAB
    s_ptr, s_len = struct.unpack("<QQ", m.mem(rdi, 16))  # errors.errorString{s string}
    assert rdi % 8 == 0 and m.string(s_ptr, s_len) == b"db is down"
    check_untouched(m, reg_pieces(locs), [])


def test_floats_and_complex(harness64):
    m, locs, _ = execute(harness64, REGABI_AMD64, (F64, F32, F64, C128), "1.5,0.1,zero,1+2i")
    assert m.xmm(0) == struct.pack("<d", 1.5) + bytes(8)
    assert m.xmm(1) == struct.pack("<f", 0.1) + bytes(12)
    assert m.xmm(2) == bytes(16)
    assert m.xmm(3)[:8] == struct.pack("<d", 1.0) and m.xmm(4)[:8] == struct.pack("<d", 2.0)
    check_untouched(m, reg_pieces(locs), [])


def test_var_struct_spanning_int_and_float_registers(harness64):
    rec = GoType("main.Rec", Kind.STRUCT, 40, 8, fields=(
        Field("Name", 0, STR), Field("Score", 16, F64), Field("A", 24, I8),
        Field("B", 26, U16), Field("T", 28, F32), Field("N", 32, I32)))
    var = (struct.pack("<QQ", CODE + 0x40, 3) + struct.pack("<d", 2.5)
           + struct.pack("<bxHfi", -3, 0xBEEF, 0.5, -9) + bytes(4))
    m, locs, _ = execute(harness64, REGABI_AMD64, (rec, ERR), "var:main.Rec0,var:io.EOF",
                         variables={"main.Rec0": (DATA, rec), "io.EOF": (DATA + 0x40, ERR)},
                         var_bytes=var + bytes(0x40 - len(var)) + struct.pack("<QQ", 0x111, 0x222))
    g = {r: m.gpr(GPR.index(r)) for r in ("rax", "rbx", "rcx", "rdi", "rsi", "r8")}
    assert (g["rax"], g["rbx"]) == (CODE + 0x40, 3)
    assert m.xmm(0)[:8] == struct.pack("<d", 2.5) and m.xmm(0)[8:] == bytes(8)
    assert (g["rcx"], g["rdi"]) == (0xFD, 0xBEEF)  # zero-extended
    assert m.xmm(1) == struct.pack("<f", 0.5) + bytes(12)
    assert g["rsi"] == 0xFFFFFFF7  # int32 -9, upper half zero
    assert g["r8"] == 0x111 and m.gpr(GPR.index("r9")) == 0x222
    check_untouched(m, reg_pieces(locs), [])


def test_stack_assigned_results_beside_registers(harness64):
    arr = GoType("[3]int16", Kind.ARRAY, 6, 2, elem=basic("int16", Kind.INT, 2), length=3)
    types = (STR,) * 5 + (INT, arr, BOOL)
    m, locs, _ = execute(harness64, REGABI_AMD64, types, "a,bb,ccc,dddd,eeeee,42,var:main.A,true",
                         variables={"main.A": (DATA, arr)}, var_bytes=struct.pack("<hhh", 1, -2, 3))
    assert [p.where for p in locs[4].pieces] == ["stack"] and locs[6].pieces[0].where == "stack"
    regs = [m.gpr(GPR.index(r)) for r in ("rax", "rbx", "rcx", "rdi", "rsi", "r8", "r9", "r10")]
    for k, want in enumerate((b"a", b"bb", b"ccc", b"dddd")):
        assert m.string(regs[2 * k], regs[2 * k + 1]) == want
    p = locs[4].pieces[0]
    ptr, n = struct.unpack("<QQ", m.at_sp(p.sp_offset, 16))
    assert m.string(ptr, n) == b"eeeee"
    assert m.gpr(GPR.index("r11")) == 42
    assert m.at_sp(locs[6].pieces[0].sp_offset, 6) == struct.pack("<hhh", 1, -2, 3)
    check_untouched(m, reg_pieces(locs), stack_ranges(locs))


def test_amd64_abi0_all_on_stack(harness64):
    types = (INT, I32, BOOL, STR, ERR, F32)
    m, locs, _ = execute(harness64, ABI0_AMD64, types, '-5,7,true,"x, y",error:e,2.5')
    at = {i: loc.pieces[0].sp_offset for i, loc in enumerate(locs)}
    assert struct.unpack("<q", m.at_sp(at[0], 8))[0] == -5
    assert m.at_sp(at[1], 4) == struct.pack("<i", 7) and m.at_sp(at[2], 1) == b"\x01"
    ptr, n = struct.unpack("<QQ", m.at_sp(at[3], 16))
    assert m.string(ptr, n) == b"x, y"
    tab, obj = struct.unpack("<QQ", m.at_sp(at[4], 16))
    assert tab == ITAB and m.string(*struct.unpack("<QQ", m.mem(obj, 16))) == b"e"
    assert m.at_sp(at[5], 4) == struct.pack("<f", 2.5)
    check_untouched(m, set(), stack_ranges(locs))


def test_386_stack_stub(harness32):
    s32 = GoType("string", Kind.STRING, 8, 4)
    e32 = GoType("error", Kind.IFACE, 8, 4)
    i64 = basic("int64", Kind.INT, 8, 4)
    types = (s32, e32, i64, U16, BOOL, e32, F64)
    m, locs, _ = execute(harness32, ABI0_386, types, '"chaos",error:db is down,-2,65535,true,'
                         'var:io.EOF,-inf', variables={"io.EOF": (DATA + 4, e32)},
                         var_bytes=struct.pack("<III", 0, 0xCAFE, 0xF00D), arch="386")
    at = {i: loc.pieces[0].sp_offset for i, loc in enumerate(locs)}
    ptr, n = struct.unpack("<II", m.at_sp(at[0], 8))
    assert m.string(ptr, n) == b"chaos"
    tab, obj = struct.unpack("<II", m.at_sp(at[1], 8))
    assert tab == ITAB and obj % 4 == 0
    assert m.string(*struct.unpack("<II", m.mem(obj, 8))) == b"db is down"
    assert struct.unpack("<q", m.at_sp(at[2], 8))[0] == -2
    assert m.at_sp(at[3], 2) == b"\xff\xff" and m.at_sp(at[4], 1) == b"\x01"
    assert struct.unpack("<II", m.at_sp(at[5], 8)) == (0xCAFE, 0xF00D)
    assert m.at_sp(at[6], 8) == struct.pack("<d", float("-inf"))
    check_untouched(m, set(), stack_ranges(locs))
