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
from blade_go.stubs.conditions import Conditions, read_counters, read_radius
from blade_go.stubs.conditions_data import data_cave
from blade_go.stubs.conditions_match import parse_match
from blade_go.stubs.faults import PanicSymbols, parse_panic_value
from blade_go.stubs import values as V
from blade_go.stubs.args_stub_arm64 import plan_args
from blade_go.stubs.faults_arm64 import plan_delay, plan_panic
from blade_go.stubs.placement_arm64 import FunctionCodeARM64
from tests.support.fixtures import build_fixture
from tests.support.toolchains import require_qemu_aarch64


@pytest.fixture(scope="module", params=["go-default", "go1.19"])
def target(request):
    """Go 1.26 and Go 1.19 (the first register-ABI releases' prologue and runtime)."""
    return build_fixture("arm64_faults_target", toolchain=request.param, goarch="arm64")


class Binary:
    def __init__(self, path):
        self.path = path
        self.f = open(path, "rb")
        self.elf = ELFFile(self.f)
        self.syms = {s.name: s for s in self.elf.get_section_by_name(".symtab").iter_symbols()}
        self.segs = [s for s in self.elf.iter_segments() if s["p_type"] == "PT_LOAD"]

    def addr(self, name):
        if name not in self.syms and name.startswith("go:itab."):  # Go <= 1.19's spelling
            name = "go.itab." + name[len("go:itab."):]
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
                if p.role == "data":  # writable bss: the program writes it at start (argv)
                    continue
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


def _panic_syms(b):
    err_t = GoType("error", Kind.IFACE, 16, 8)
    return PanicSymbols(b.addr("runtime.gopanic"), None,
                        b.addr("go:itab.*errors.errorString,error"),
                        (b.addr("main.ErrVar"), err_t))


def _run(exe, mode, *args):
    proc = subprocess.run([require_qemu_aarch64(), "-cpu", "neoverse-n1", str(exe), mode, *args],
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
    ("error:db is down", "recovered *errors.errorString db is down true"),
    ("var:main.ErrVar", "recovered *errors.errorString var error true"),
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


# --------------------------------------------------------------------------- with conditions

def _counters_at(b) -> int:
    with open(b.path, "rb") as f:
        cave = data_cave(ElfImage(f, str(b.path)))
    assert cave, "no writable page tail in the arm64 build"
    return (cave[0] + 31) // 32 * 32


def _range(b, name):
    s = b.syms[name]
    return (s["st_value"], s["st_value"] + s["st_size"])


def _run_conds(b, tmp_path, plan, conds, mode):
    exe = b.patched(tmp_path, plan.patches)
    at = _counters_at(b)
    proc = _run(exe, mode, f"{at:x}", conds.counters_image(8).hex())
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    raw = bytes.fromhex(lines[-1].split()[1])
    assert lines[-1].startswith("counters") and len(raw) == conds.counters_size
    return "\n".join(lines[:-1]), read_counters(raw, conds.layout("arm64")), raw


@pytest.mark.parametrize("kw,match,slept", [
    ({"count": 2}, None, [True, True, False, False]),
    ({}, "id==2", [False, False, True, False]),
    ({"percent": 100}, 'name^="ab" && id>=1', [False, True, True, True]),
])
def test_delay_under_conditions(target, tmp_path, kw, match, slept):
    b = Binary(target)
    params = _params()
    conds = Conditions(matches=parse_match(match, params, 8, "main.Work"), **kw)
    cave = b.cave()
    p = plan_delay(b.function("main.Work"), params, True, b.addr("time.Sleep"), 300, 0,
                   lambda n: cave, b.read, conds=conds, counters=_counters_at(b))
    out, counts, _ = _run_conds(b, tmp_path, p, conds, "delay")
    rows = [l.split() for l in out.splitlines() if l.startswith("result")]
    assert [int(r[1]) for r in rows] == [5, 7, 9, 11]
    assert [int(r[2]) >= 300 for r in rows] == slept, rows
    assert all(int(r[2]) < 200 for r, s in zip(rows, slept) if not s), rows
    assert counts == {"calls_seen": 4, "calls_faulted": sum(slept)}


def test_delay_caller_depth_1_reads_the_saved_lr_and_fills_the_blast_radius(target, tmp_path):
    """In H, LR points back into F: the direct caller's return address is F's saved LR."""
    b = Binary(target)
    main = _range(b, "main.main")
    conds = Conditions(callers=(main,), caller_names=("main.main",), radius=True)
    cave = b.cave()
    p = plan_delay(b.function("main.Work"), _params(), True, b.addr("time.Sleep"), 300, 0,
                   lambda n: cave, b.read, conds=conds, counters=_counters_at(b))
    out, counts, raw = _run_conds(b, tmp_path, p, conds, "delay")
    rows = [l.split() for l in out.splitlines() if l.startswith("result")]
    assert all(int(r[2]) >= 300 for r in rows) and len(rows) == 4
    sites, overflow = read_radius(raw, conds.layout("arm64"))
    assert len(sites) == 1 and overflow is None
    assert main[0] < sites[0]["return_address"] < main[1]
    assert (sites[0]["calls"], sites[0]["faulted"]) == (4, 4)
    assert counts == {"calls_seen": 4, "calls_faulted": 4}


@pytest.mark.parametrize("depth,panics", [(1, False), (2, True)])
def test_panic_caller_depth_through_the_frame_pointer_chain(target, tmp_path, depth, panics):
    """In panic mode Work's direct caller is a closure in main.main: depth 1 with main.main
    never matches, depth 2 (R29 chain: [R29] is the closure's fp, [fp+8] its return
    address into main.main) always does."""
    b = Binary(target)
    conds = Conditions(callers=(_range(b, "main.main"),), caller_names=("main.main",),
                       caller_depth=depth)
    cave = b.cave()
    p = plan_panic(b.function("main.Work"), _params(), True,
                   parse_panic_value("error:db is down"), _panic_syms(b), lambda n: cave, b.read,
                   conds=conds, counters=_counters_at(b))
    out, counts, _ = _run_conds(b, tmp_path, p, conds, "panic")
    if panics:
        assert out.splitlines() == ["recovered *errors.errorString db is down true"] * 3
    else:
        assert out.splitlines() == ["result 5", "result 7", "result 9"]
    assert counts == {"calls_seen": 3, "calls_faulted": 3 if panics else 0}


def test_panic_with_match_and_count(target, tmp_path):
    b = Binary(target)
    params = _params()
    conds = Conditions(count=1, matches=parse_match("id>=1", params, 8, "main.Work"))
    cave = b.cave()
    p = plan_panic(b.function("main.Work"), params, True,
                   parse_panic_value("error:db is down"), _panic_syms(b), lambda n: cave,
                   b.read, conds=conds, counters=_counters_at(b))
    out, counts, _ = _run_conds(b, tmp_path, p, conds, "panic")
    assert out.splitlines() == ["result 5", "recovered *errors.errorString db is down true",
                                "result 9"]
    assert counts == {"calls_seen": 3, "calls_faulted": 1}


# --------------------------------------------------------------------------- args

class _Resolve:
    """image.Resolver over the test's symbol table (string variables only)."""

    def __init__(self, b):
        self.b = b

    def itab(self, concrete, iface):
        return self.b.addr(f"go:itab.{concrete},{iface}")

    def variable(self, name):
        return (self.b.addr(name), GoType("string", Kind.STRING, 16, 8))


def _args_plan(b, sets, conds=None):
    from dataclasses import replace
    params = _params()
    new = {}
    for name, text in sets.items():
        loc = next(p for p in params if p.name == name)
        new[loc.index] = replace(V.parse_element(loc.index, loc.type, text), index=loc.index)
    cave = b.cave()
    return plan_args(b.function("main.Work"), params, new, _Resolve(b), lambda n: cave, b.read,
                     conds=conds, counters=_counters_at(b) if conds else None)


@pytest.mark.parametrize("sets,results", [
    ({"id": "10", "name": '"hello"', "f": "0.5"}, [25, 25, 25, 25]),
    ({"name": '"hello"'}, [7, 9, 11, 13]),
    ({"f": "-7.5"}, [-4, -2, 0, 2]),
    ({"name": "var:main.NameVar", "id": "-1"}, [10, 10, 10, 10]),
])
def test_args_replace_register_arguments(target, tmp_path, sets, results):
    b = Binary(target)
    p = _args_plan(b, sets)
    proc = _run(b.patched(tmp_path, p.patches), "delay")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [l.split() for l in proc.stdout.splitlines() if l.startswith("result")]
    assert [int(r[1]) for r in rows] == results


@pytest.mark.parametrize("kw,match,results,faulted", [
    ({}, "id==1", [5, 205, 9, 11], 1),
    ({"count": 2}, None, [205, 205, 9, 11], 2),
])
def test_args_under_conditions(target, tmp_path, kw, match, results, faulted):
    b = Binary(target)
    conds = Conditions(matches=parse_match(match, _params(), 8, "main.Work"), **kw)
    p = _args_plan(b, {"id": "100"}, conds)
    out, counts, _ = _run_conds(b, tmp_path, p, conds, "delay")
    rows = [l.split() for l in out.splitlines() if l.startswith("result")]
    assert [int(r[1]) for r in rows] == results
    assert counts == {"calls_seen": 4, "calls_faulted": faulted}


# --------------------------------------------------------------------------- conditional return

def _return_plan(b, func, sig, value_text, conds, after=False):
    from blade_go.stubs import parse_values
    from blade_go.stubs.conditions_return_arm64 import plan_conditional_return
    results = REGABI_ARM64.result_locations(sig)
    values = parse_values(value_text, results)
    cave = b.cave()

    return plan_conditional_return(results, values, conds, "arm64", 8, _Resolve(b),
                                   lambda n: cave, lambda n, a: _counters_at(b),
                                   b.function(func), b.read, after=after)


def _lookup_sig():
    s = GoType("string", Kind.STRING, 16, 8)
    e = GoType("error", Kind.IFACE, 16, 8)
    return Signature((Param("id", basic("int", Kind.INT, 8)),),
                     (Param("~r0", s, True), Param("~r1", e, True)))


@pytest.mark.parametrize("after", [False, True])
def test_conditional_return_of_a_string_and_an_error(target, tmp_path, after):
    b = Binary(target)
    conds = Conditions(count=2)
    p = _return_plan(b, "main.Lookup", _lookup_sig(), '"chaos",error:db is down', conds, after)
    out, counts, _ = _run_conds(b, tmp_path, p, conds, "return")
    got = [l.split(" ", 3)[1:3] for l in out.splitlines() if l.startswith("lookup")]
    assert got == [['"chaos"', "db"], ['"chaos"', "db"], ['"4"', "<nil>"], ['"6"', "<nil>"]]
    assert "db is down" in out
    assert counts == {"calls_seen": 4, "calls_faulted": 2}


def test_conditional_return_of_a_var_under_a_match(target, tmp_path):
    b = Binary(target)
    conds = Conditions(matches=parse_match("id>=2", _lookup_params(), 8, "main.Lookup"))
    p = _return_plan(b, "main.Lookup", _lookup_sig(), "var:main.NameVar,nil", conds)
    out, counts, _ = _run_conds(b, tmp_path, p, conds, "return")
    got = [l.split(" ")[1:] for l in out.splitlines() if l.startswith("lookup")]
    assert [g[0] for g in got[:2]] == ['"0"', '"2"']
    assert all(" ".join(g[:3]) == '"from a var" <nil>' or " ".join(g[:4]).startswith(
        '"from a var" <nil>') for g in got[2:]), got
    assert counts == {"calls_seen": 4, "calls_faulted": 2}


def test_conditional_return_of_a_float(target, tmp_path):
    b = Binary(target)
    f64 = basic("float64", Kind.FLOAT64, 8)
    conds = Conditions(count=1)
    p = _return_plan(b, "main.Scale", Signature((Param("x", f64),), (Param("~r0", f64, True),)),
                     "-2.75", conds)
    out, counts, _ = _run_conds(b, tmp_path, p, conds, "return")
    got = [l.split()[-1] for l in out.splitlines() if l.startswith("lookup")]
    assert got == ["-2.75", "6", "10", "14"]
    assert counts == {"calls_seen": 4, "calls_faulted": 1}


def _lookup_params():
    return REGABI_ARM64.param_locations(_lookup_sig())


def test_delay_under_gc_and_stack_growth_stress(target, tmp_path):
    """16 goroutines (stacks grown, then shrunk by forced GCs, GOGC=1) call the delayed Work
    6 times each with heap strings: every result is right, each goroutine took >= 6 delays,
    and a 5 ms ticker elsewhere never stalls for anything like a delay."""
    b = Binary(target)
    cave = b.cave()
    p = plan_delay(b.function("main.Work"), _params(), True, b.addr("time.Sleep"), 50, 0,
                   lambda n: cave, b.read)
    exe = b.patched(tmp_path, p.patches)
    import os
    proc = subprocess.run([require_qemu_aarch64(), "-cpu", "neoverse-n1", str(exe), "stress"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "GOGC": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("stress"))
    f = dict(kv.split("=") for kv in line.split()[1:])
    assert f["bad"] == "0", line
    assert int(f["elapsed"]) >= 6 * 50, line
    # the ticker is not delayed by the stub (a loaded emulator may still jitter it)
    assert int(f["worstgap"]) < 1000, line
