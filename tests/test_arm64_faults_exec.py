"""arm64 delay and panic stubs in a real Go program on an arm64 CPU model (no delve).

tests/fixtures/arm64_faults_target is built with GOARCH=arm64; the planned patches (cave in the
header page's zeros, the `bl H; b H2` route after Work's frame setup, the arm byte) are written
into a copy of the executable at their addresses (non-PIE: file addresses are runtime ones) and
the copy runs under `qemu-aarch64 -cpu neoverse-n1` while another goroutine allocates and forces
GCs. Work(id, "abc", 2.5) = 2*id + 3 + 2: the program must see the delay (or the panic) and
otherwise the same results, i.e. the spilled and reloaded arguments (ints, a string, a float).
"""
import shutil
import subprocess

import pytest
from elftools.elf.elffile import ELFFile

from blade_go.abi.regabi_arm64 import REGABI_ARM64
from blade_go.inspector.caves import header_caves
from blade_go.inspector.elf import ElfImage
from blade_go.inspector.gotypes import Kind, Param, Signature, basic, GoType
from blade_go.stubs.faults import PanicSymbols, parse_panic_value
from blade_go.stubs.faults_arm64 import plan_delay, plan_panic
from blade_go.stubs.placement_arm64 import FunctionCodeARM64
from tests.support.fixtures import build_fixture
from tests.support.toolchains import require_qemu_aarch64


@pytest.fixture(scope="module")
def target():
    return build_fixture("arm64_faults_target", goarch="arm64")


class Binary:
    def __init__(self, path):
        self.path = path
        self.f = open(path, "rb")
        self.elf = ELFFile(self.f)
        self.syms = {s.name: s for s in self.elf.get_section_by_name(".symtab").iter_symbols()}
        self.segs = [s for s in self.elf.iter_segments() if s["p_type"] == "PT_LOAD"]

    def addr(self, name):
        return self.syms[name]["st_value"]

    def offset(self, vaddr):
        for s in self.segs:
            if s["p_vaddr"] <= vaddr < s["p_vaddr"] + s["p_filesz"]:
                return vaddr - s["p_vaddr"] + s["p_offset"]
        raise KeyError(hex(vaddr))

    def read(self, vaddr, n):
        self.f.seek(self.offset(vaddr))
        return self.f.read(n)

    def function(self, name):
        s = self.syms[name]
        return FunctionCodeARM64.decode(self.read(s["st_value"], s["st_size"]), s["st_value"],
                                        name=name)

    def cave(self):
        with open(self.path, "rb") as f:
            caves = header_caves(ElfImage(f, str(self.path)))
        assert caves, "no header cave in the arm64 build"
        c = caves[0]
        return (c.start + 15) // 16 * 16

    def patched(self, tmp_path, patches):
        out = tmp_path / "patched"
        shutil.copy(self.path, out)
        with open(out, "r+b") as f:
            for p in patches:
                assert self.read(p.addr, len(p.original)) == p.original
                f.seek(self.offset(p.addr))
                f.write(p.replacement)
        return out


def _params():
    i = basic("int", Kind.INT, 8)
    sig = Signature((Param("id", i), Param("name", GoType("string", Kind.STRING, 16, 8)),
                     Param("f", basic("float64", Kind.FLOAT64, 8))), (Param("~r0", i, True),))
    params = REGABI_ARM64.param_locations(sig)
    assert [p.pieces[0].reg for p in params] == ["R0", "R1", "F0"]
    return params


def _run(exe, mode):
    proc = subprocess.run([require_qemu_aarch64(), "-cpu", "neoverse-n1", str(exe), mode],
                          capture_output=True, text=True, timeout=120)
    return proc


def test_unpatched_baseline(target):
    out = _run(target, "delay").stdout.split("\n")
    assert [l.split()[1] for l in out if l] == ["5", "7", "9", "11"]


@pytest.mark.parametrize("offset", [0, 100])
def test_delay_sleeps_every_call_and_keeps_the_arguments(target, tmp_path, offset):
    b = Binary(target)
    code = b.function("main.Work")
    assert code.frame is not None
    cave = b.cave()
    p = plan_delay(code, _params(), True, b.addr("time.Sleep"), 300, offset,
                   lambda n: cave, b.read)
    exe = b.patched(tmp_path, p.patches)
    proc = _run(exe, "delay")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [l.split() for l in proc.stdout.splitlines() if l.startswith("result")]
    assert [int(r[1]) for r in rows] == [5, 7, 9, 11]
    for r in rows:
        assert 300 - offset <= int(r[2]) < 300 + offset + 1000, rows


def test_delay_disarmed_runs_untouched(target, tmp_path):
    b = Binary(target)
    cave = b.cave()
    p = plan_delay(b.function("main.Work"), _params(), True, b.addr("time.Sleep"), 300, 0,
                   lambda n: cave, b.read)
    exe = b.patched(tmp_path, [x for x in p.patches if x.role != "arm"])
    proc = _run(exe, "delay")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [l.split() for l in proc.stdout.splitlines() if l.startswith("result")]
    assert [int(r[1]) for r in rows] == [5, 7, 9, 11]
    assert all(int(r[2]) < 200 for r in rows)


@pytest.mark.parametrize("value,expect", [
    ("error:db is down", "recovered *errors.errorString db is down"),
    ("var:main.ErrVar", "recovered *errors.errorString var error"),
])
def test_panic_is_recovered_by_the_caller(target, tmp_path, value, expect):
    b = Binary(target)
    cave = b.cave()
    err_t = GoType("error", Kind.IFACE, 16, 8)
    syms = PanicSymbols(b.addr("runtime.gopanic"), None,
                        b.addr("go:itab.*errors.errorString,error"),
                        (b.addr("main.ErrVar"), err_t))
    p = plan_panic(b.function("main.Work"), _params(), True, parse_panic_value(value), syms,
                   lambda n: cave, b.read)
    exe = b.patched(tmp_path, p.patches)
    proc = _run(exe, "panic")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == [expect] * 3
