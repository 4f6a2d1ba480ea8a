"""The arm64 instance guard: its words (decoded back with capstone), its refusals, and one
generic instance faulted alone in a copy of tests/fixtures/generics_target run under qemu-user
(the other instances of the same shape function keep their results)."""
import pytest

capstone = pytest.importorskip("capstone")

from blade_go.errors import BladeError  # noqa: E402
from blade_go.patch import CAVE, ROUTE, VALUE, Patch  # noqa: E402
from blade_go.stubs import BinaryResolver, parse_values  # noqa: E402
from blade_go.stubs import encoder_arm64 as E  # noqa: E402
from blade_go.stubs.instance_guard_arm64 import guard_len, guard_words, guarded_patches  # noqa: E402
from blade_go.stubs.return_arm64 import plan_return  # noqa: E402
from blade_go.stubs.select import stub_arch  # noqa: E402
from tests.support import arm64_exec  # noqa: E402
from tests.support.fixtures import build_fixture  # noqa: E402

MD = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
ENTRY = 0xA9CA0
STACK_CHECK = bytes.fromhex("900b40f9 ff6330eb".replace(" ", ""))


def _text(code, addr):
    return [f"{i.mnemonic} {i.op_str}".strip() for i in MD.disasm(code, addr)]


def test_worked_example():
    code = b"".join(guard_words(0x10900, 0x10810, ENTRY, STACK_CHECK, 0xE0EA8))
    assert _text(code, 0x10900) == [
        "mov w16, #0xea8", "movk w16, #0xe, lsl #16", "cmp x0, x16", "b.ne #0x10914",
        "b #0x10810", "ldr x16, [x28, #0x10]", f"b #{ENTRY + 4:#x}"]
    assert len(code) == guard_len(ENTRY, STACK_CHECK, 0xE0EA8)
    # a pointer-receiver method's dictionary is the second argument
    code = b"".join(guard_words(0x10900, 0x10810, ENTRY, STACK_CHECK, 0xE0EA8, "rbx"))
    assert _text(code, 0x10900)[2] == "cmp x1, x16"


def test_relocated_entry_and_length_wherever_it_goes():
    tbz = E.tbz(0, 63, ENTRY, ENTRY + 12)   # a leaf whose first instruction branches
    for guard in (0x10000, 0x10900, ENTRY + 0x7000000):
        code = b"".join(guard_words(guard, 0x10810, ENTRY, tbz + E.ret(), 0x123456789))
        assert len(code) == guard_len(ENTRY, tbz + E.ret(), 0x123456789)
        t = _text(code, guard)
        assert t[-3:] == [f"tbnz x0, #0x3f, #{guard + len(code) - 4:#x}",
                          f"b #{ENTRY + 12:#x}", f"b #{ENTRY + 4:#x}"]
    # F's first instruction a `ret` (nothing falls through: no branch back)
    code = b"".join(guard_words(0x10900, 0x10810, ENTRY, E.ret(), 5))
    assert _text(code, 0x10900)[-1] == "ret"


def test_refusals():
    with pytest.raises(BladeError, match="one generic instance cannot be faulted alone"):
        guard_words(0x10900, 0x10810, ENTRY, bytes(4), 5)     # padding, not code
    with pytest.raises(BladeError, match="one generic instance"):
        guard_words(0x10900, 0x10810, ENTRY, E.blr(30), 5)
    with pytest.raises(ValueError, match="rcx"):
        guard_words(0x10900, 0x10810, ENTRY, STACK_CHECK, 5, "rcx")
    plan = [Patch(0x10810, bytes(8), E.ret() + E.brk(0), CAVE),
            Patch(ENTRY, STACK_CHECK[:4], E.b(ENTRY, 0x10810), ROUTE)]
    with pytest.raises(BladeError, match="128 MB"):
        guarded_patches(plan, ENTRY, STACK_CHECK, 5, lambda n: ENTRY + (1 << 28),
                        lambda a, n: bytes(n))
    assert stub_arch("arm64").guarded_patches is guarded_patches


def test_patch_list_shape():
    plan = [Patch(0x10810, bytes(16), E.ret() * 4, CAVE), Patch(0x10820, bytes(5), b"chaos", VALUE),
            Patch(ENTRY, STACK_CHECK[:4], E.b(ENTRY, 0x10810), ROUTE)]
    out = guarded_patches(plan, ENTRY, STACK_CHECK, 0xE0EA8, lambda n: 0x10900,
                          lambda a, n: bytes(n))
    assert [p.role for p in out] == [CAVE, VALUE, CAVE, ROUTE]
    assert out[2].addr == 0x10900 and out[3].replacement == E.b(ENTRY, 0x10900)
    assert out[3].original == STACK_CHECK[:4]


# ---- one instance faulted, under qemu -----------------------------------------------------

HOOK_A = "main.(*Hook[*example.com/gen/core.A]).Trigger"
CALLS = ("HookA", "HookB", "HookIface", "MaxInt", "MaxCelsius", "MaxString")


def _plan_guarded(binary, caves, instance, value, guard=True):
    """What actions/return_.py does: the user's name -> check_injectable's InstanceGuard (the
    shape function, the dictionary, its register) -> the arch's plan_return and guard."""
    from blade_go.actions.return_ import _find_out_of_line
    from blade_go.denylist import check_injectable
    impl = stub_arch(binary.goarch)
    fn = _find_out_of_line(binary, instance)
    inst = check_injectable(binary, fn, instance)
    assert inst is not None and inst.register in ("rax", "rbx"), (instance, inst)
    fn = binary.find_function(inst.shape)
    assert fn.entry % 4 == 0 and "go.shape." in fn.name, (instance, fn)
    results = binary.result_locations(fn)
    values = parse_values(value, results, binary, func=instance)
    plan = impl.plan_return(results, values, binary.goarch, binary.ptrsize,
                            BinaryResolver(binary), lambda n: caves.allocate(n, near=fn.entry),
                            fn.entry, binary.read(fn.entry, impl.route_len),
                            lambda a, n: binary.read(a, n))
    if not guard:
        return plan.patches
    return impl.guarded_patches(plan.patches, fn.entry, binary.read(fn.entry, 32),
                                inst.dictionary, lambda n: caves.allocate(n, near=fn.entry),
                                lambda a, n: binary.read(a, n), inst.register)


def _calls(path):
    out = arm64_exec.run(path, input="".join(f"call {c}\n" for c in CALLS))
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    return dict(line.split(" => ") for line in out.stdout.decode().splitlines()[1:])


@pytest.mark.parametrize("faults,changed,guard", [
    ((("main.Max[int]", "9"), ("main.(*Hook[*core.A]).Trigger", "77")),
     {"MaxInt": "9", "HookA": "77", "HookIface": "77"}, True),
    ((("main.Max[Celsius]", "-4"),), {"MaxCelsius": "-4"}, True),
    # control: the same stub without its guard hits every instance of the shape
    ((("main.Max[int]", "9"), (HOOK_A, "77")),
     {"MaxInt": "9", "MaxCelsius": "9", "HookA": "77", "HookIface": "77", "HookB": "77"}, False),
])
def test_only_the_named_instance_returns_the_value(faults, changed, guard, tmp_path):
    from blade_go.inspector import CaveAllocator, open_binary
    path = build_fixture("generics_target", goarch="arm64")
    binary = open_binary(path=str(path))
    before = _calls(path)
    assert before == {"HookA": "5", "HookB": "3", "HookIface": "6", "MaxInt": "2",
                      "MaxCelsius": "4", "MaxString": "b"}
    caves = CaveAllocator(binary.caves(int3=False), taken=[])
    patches = []
    for instance, value in faults:
        patches += [(p.addr, p.original, p.replacement)
                    for p in _plan_guarded(binary, caves, instance, value, guard)]
    after = _calls(arm64_exec.patched_copy(path, tmp_path / "guarded", patches))
    assert after == dict(before, **changed)


def test_guarded_stubs_under_goroutines_and_gc(tmp_path):
    """The fixture's stress mode: 8 goroutines call every instance in a loop with GOGC=1 and a
    GC every 10 ms; it exits 3 ("BAD") if an instance returns anything but its own result or
    the injected one (Max[int] 9, Hook[*core.A] 77). Seconds of that on the emulated CPU, then
    the counters must show the injected values were returned, many times."""
    import subprocess
    import time
    from blade_go.inspector import CaveAllocator, open_binary
    path = build_fixture("generics_target", goarch="arm64")
    binary = open_binary(path=str(path))
    caves = CaveAllocator(binary.caves(int3=False), taken=[])
    patches = []
    for instance, value in (("main.Max[int]", "9"), ("main.(*Hook[*core.A]).Trigger", "77")):
        patches += [(p.addr, p.original, p.replacement)
                    for p in _plan_guarded(binary, caves, instance, value)]
    patched = arm64_exec.patched_copy(path, tmp_path / "stress", patches)
    proc = subprocess.Popen([arm64_exec.qemu(), "-cpu", arm64_exec.QEMU_CPU, str(patched),
                             "stress"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={"GOGC": "1", "PATH": "/usr/bin:/bin"})
    try:
        assert proc.stdout.readline() == b"READY\n"
        time.sleep(4)
        out, err = proc.communicate(b"call Stats\ncall MaxCelsius\ncall HookB\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (out, err[-2000:])
    lines = out.decode().splitlines()
    assert not any(line.startswith("BAD") for line in lines), lines
    seen_int, seen_a, rounds = map(int, lines[0].split(" => ")[1].split())
    # every round saw both injected values (the three counters are read one after the other
    # while the goroutines go on: equal up to the rounds in flight)
    slack = max(1000, rounds // 50)
    assert rounds > 100 and abs(seen_int - rounds) < slack and abs(seen_a - rounds) < slack, \
        lines[0]
    assert lines[1:] == ["MaxCelsius => 4", "HookB => 3"]
