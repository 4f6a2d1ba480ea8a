"""The live tier of arm64 (issue 20): blade-go inside an emulated arm64 machine.

One VM per module (tests/support/arm64vm.py: Debian bookworm's arm64 kernel and packages under
qemu-system-aarch64, TCG, Neoverse N1, 2 vCPUs), holding this checkout, the patched dlv
cross-built for arm64 and arm64 builds of the e2e test programs. Inside it the real CLI
(`python3 -m blade_go create|status|destroy`) works on running arm64 processes, as the amd64
e2e tests do on the host: each fault is seen in the target's own output, then its absence after
destroy, the executable text read from /proc/PID/mem equals the file's bytes, and no dlv,
supervisor or guardian is left. The VM reports observations; every assertion is made here.

Besides the e2e subset (return with a string+error, floats, on a PIE build; delay; panic; args;
--effect-count): the VM itself, check, inspect, a refused create, and dlv attach/read/write/detach
through blade-go's own session client.

`pytest -s` prints each test's wall time and the emulation's CPU time; docs/BENCHMARKS.md, "What
does the arm64 live tier cost?", has the figures.
"""
import re
import time

import pytest

from tests.support.arm64vm import ArmVM
from tests.support.fixtures import build_fixture


FIXTURES = ("e2e_target", "faults_target")


@pytest.fixture(scope="module")
def vm():
    programs = {name: build_fixture(name, goarch="arm64") for name in FIXTURES}
    programs["e2e_target_pie"] = build_fixture("e2e_target", goarch="arm64", pie=True)
    machine = ArmVM.boot(programs)
    try:
        yield machine
    finally:
        status = machine.close()
        print(f"\n[arm64 VM] boot {machine.boot_seconds:.1f} s wall, {machine.boot_cpu:.1f} s qemu "
              f"CPU; /job/run exit {status}")
    assert machine.proc.poll() is not None, "qemu still running"
    assert status == 0, "the agent did not end cleanly:\n" + "\n".join(machine.console[-30:])


@pytest.fixture(autouse=True)
def cost(vm, request):
    """Each test's wall time and the emulation's CPU time, printed (pytest -s) for the record."""
    wall, cpu = time.monotonic(), vm.cpu_seconds()
    yield
    print(f"\n[arm64 VM] {request.node.name}: {time.monotonic() - wall:.1f} s wall, "
          f"{vm.cpu_seconds() - cpu:.1f} s qemu CPU")


@pytest.fixture
def target(vm):
    """Start a test program in the VM: target(name, *args) -> pid; stopped at the test's end."""
    started = []

    def start(name, *args):
        pid = vm.call("start", binary=vm.fixture(name), args=list(args))
        started.append(pid)
        return pid
    yield start
    for pid in started:
        vm.call("stop", pid=pid)


def ok(vm, *args):
    """blade-go ARGS in the VM; its result (the command must succeed)."""
    code, resp = vm.call("blade", args=[str(a) for a in args])
    assert code == 0 and resp["success"], f"blade-go {' '.join(map(str, args))}: {resp}"
    return resp.get("result")


def nothing_left(vm, pid):
    """After destroy: code byte-exact, target alive and untraced, no dlv/supervisor left."""
    left = vm.call("blade_go_processes", wait=60)
    assert left == [], f"still running in the VM: {left}"
    assert vm.call("differences_beyond_retained", pid=pid) == []
    assert vm.call("tracer_pid", pid=pid) == 0
    assert vm.call("target_state", pid=pid)["alive"]


def test_vm_is_arm64_debian_with_the_patched_dlv(vm):
    from tests.support.arm64vm import arm64_dlv
    f = vm.call("facts")
    assert f["machine"] == "aarch64" and f["cpus"] == 2
    assert re.fullmatch(r"\d+\.\d+\.\d+-\d+-arm64", f["kernel"]), f["kernel"]  # Debian's
    assert "atomics" in f["cpu_features"]  # Neoverse N1 (ARMv8.2, LSE)
    patch_hash = arm64_dlv().parts[-3].rsplit("-", 1)[1]  # .../delve/<ver>-<go>-<hash>/bin-arm64/dlv
    assert f"Build: blade-go-preload-{patch_hash}" in f["dlv"], f["dlv"]
    assert f["capstone"].startswith("5.") and f["python"].startswith("3.11")


def test_check_sees_an_arm64_go_program(vm, target):
    pid = target("e2e_target")
    code, resp = vm.call("blade", args=["check", "--pid", str(pid)])
    proc = resp["result"]["process"]
    assert (proc["goarch"], proc["abi"], proc["pie"]) == ("arm64", "abi-internal-arm64", False)
    assert proc["has_dwarf"] and proc["go_version"].startswith("go1.")
    checks = {c["name"]: c for c in resp["result"]["checks"]}
    for name in ("kernel", "go_program", "dlv", "ptrace", "state_home", "dwarf", "tracer"):
        assert checks[name]["status"] == "ok", checks[name]
    assert "patched" in checks["dlv"]["detail"]
    assert code == 0 and resp["success"], resp


def test_inspect_a_running_arm64_program(vm, target):
    """What blade-go sees without touching the process: arm64's result registers, caves."""
    pid = target("e2e_target")
    info = ok(vm, "inspect", "--pid", pid, "--func", "main.Query")
    assert (info["binary"]["goarch"], info["binary"]["abi"]) == ("arm64", "abi-internal-arm64")
    fn = info["function"]
    assert fn["refused"] is None and fn["has_out_of_line_copy"]
    regs = [p["reg"] for loc in fn["result_locations"] for p in loc["pieces"]]
    assert regs == ["R0", "R1", "R2", "R3"]  # (string, error): two words each
    assert info["caves"] and all(int(c["end"], 16) > int(c["start"], 16) for c in info["caves"])
    assert vm.call("tracer_pid", pid=pid) == 0 and vm.call("text_differences", pid=pid) == []


def test_dlv_attaches_reads_writes_and_detaches_an_arm64_target(vm, target):
    """What the session layer needs from dlv on arm64, with blade-go's own client and writer."""
    pid = target("e2e_target")
    before = vm.call("call", pid=pid, name="Query")
    p = vm.call("dlv_probe", pid=pid, func="main.Query")
    assert p["traced_by_dlv"] and p["threads"]
    assert all(t["pc"] for t in p["threads"]), p["threads"]
    names = set(p["register_names"])  # as session/references.py parses dlv's text
    assert names == {f"X{i}" for i in range(31)} | {f"V{i}" for i in range(32)} | {"SP", "PC"}, \
        sorted(names)
    assert p["before"] == p["file"]                       # dlv reads the code as the file has it
    assert p["while_written"] == "1f2003d5" * 4           # blade-go's writer, seen by the kernel
    assert p["after"] == p["file"]                        # and written back exactly
    assert p["dlv_exit"] == 0 and p["tracer_after"] == 0
    assert vm.call("call", pid=pid, name="Query") == before  # the target runs on unharmed
    assert vm.call("text_differences", pid=pid) == []
    print(f"\ndlv attach under TCG: {p['attach_seconds']} s; registers: {sorted(names)[:8]}...")


def test_refused_create_leaves_nothing(vm, target):
    """A create blade-go refuses after its standby supervisor started (the function is not in
    the binary) answers with the reason and leaves no process and no changed byte behind."""
    pid = target("e2e_target")
    code, resp = vm.call("blade", args=["create", "go", "return", "--pid", str(pid),
                                        "--func", "main.Qery", "--value", '"x",nil'])
    assert code == 1 and not resp["success"], resp
    assert "main.Qery" in resp["error"] and "main.Query" in resp["error"], resp  # closest names
    nothing_left(vm, pid)
    assert vm.call("text_differences", pid=pid) == []


# -- the e2e subset -----------------------------------------------------------------------------

def _timed(vm, name, *args):
    """ok(vm, *args), its wall time printed (pytest -s) under `name`."""
    t = time.monotonic()
    result = ok(vm, *args)
    print(f"\n{name}: {time.monotonic() - t:.1f} s")
    return result


@pytest.mark.parametrize("func,name,value,injected", [
    ("main.Query", "Query", '"chaos",error:injected db error',
     '"chaos",err(injected db error|eof=false|nf=false)'),
    ("main.Floats", "Floats", "inf,-0.1,nan", "+Inf,-0.1,NaN"),
], ids=["string+error", "floats"])
def test_return(vm, target, func, name, value, injected):
    pid = target("e2e_target")
    original = vm.call("call", pid=pid, name=name)
    uid = _timed(vm, "create return", "create", "go", "return", "--pid", pid, "--func", func,
                 "--value", value)
    assert vm.call("call", pid=pid, name=name) == injected
    assert vm.call("call", pid=pid, name=name) == injected
    assert vm.call("text_differences", pid=pid)  # the patches are really there
    assert ok(vm, "status", uid)["status"] == "Success"
    _timed(vm, "destroy", "destroy", uid)
    assert vm.call("call", pid=pid, name=name) == original
    nothing_left(vm, pid)


def test_return_pie(vm, target):
    """A position-independent build: the kernel loads it at a random address (ASLR), so every
    address blade-go plans with is a runtime one, as on a real arm64 node."""
    pid = target("e2e_target_pie")
    original = vm.call("call", pid=pid, name="Query")
    uid = ok(vm, "create", "go", "return", "--pid", pid, "--func", "main.Query",
             "--value", '"pie",error:relocated')
    assert vm.call("call", pid=pid, name="Query") == '"pie",err(relocated|eof=false|nf=false)'
    assert ok(vm, "status", uid)["status"] == "Success"
    ok(vm, "destroy", uid)
    assert vm.call("call", pid=pid, name="Query") == original
    nothing_left(vm, pid)


def _faults_call(vm, pid, name):
    """(result, ms) of faults_target's `call NAME`."""
    line = vm.call("send", pid=pid, line=f"call {name}", reply=rf"^{re.escape(name)} => ")
    got, ms = re.match(r".* => (.*) ms=([\d.]+)$", line).groups()
    return got, float(ms)


def test_delay(vm, target):
    pid = target("faults_target")
    original, fast = _faults_call(vm, pid, "Work")
    uid = ok(vm, "create", "go", "delay", "--pid", pid, "--func", "main.Work", "--time", "800")
    for _ in range(2):
        got, ms = _faults_call(vm, pid, "Work")
        assert got == original and ms >= 799.0, (got, ms)
    assert ok(vm, "status", uid)["status"] == "Success"
    ok(vm, "destroy", uid)
    got, ms = _faults_call(vm, pid, "Work")
    assert got == original and ms < 700, (got, ms, fast)
    nothing_left(vm, pid)


def _recovered(vm, pid, name):
    line = vm.call("send", pid=pid, line=f"recover {name}",
                   reply=rf"^{re.escape(name)} (recovered|returned) ")
    return line.split(" ", 1)[1]


def test_panic(vm, target):
    pid = target("faults_target")
    original = _recovered(vm, pid, "Work")
    assert original.startswith("returned")
    uid = ok(vm, "create", "go", "panic", "--pid", pid, "--func", "main.Work",
             "--value", "error:store unavailable")
    want = 'recovered error *errors.errorString "store unavailable" denied=false eof=false'
    assert _recovered(vm, pid, "Work") == want
    assert _recovered(vm, pid, "Work") == want
    assert ok(vm, "status", uid)["status"] == "Success"
    ok(vm, "destroy", uid)
    assert _recovered(vm, pid, "Work") == original
    nothing_left(vm, pid)


def test_args(vm, target):
    pid = target("faults_target")
    original, _ = _faults_call(vm, pid, "Scale")
    uid = ok(vm, "create", "go", "args", "--pid", pid, "--func", "main.Scale", "--set", "x=10")
    assert _faults_call(vm, pid, "Scale")[0] == "x:20"
    assert _faults_call(vm, pid, "Scale")[0] == "x:20"
    assert ok(vm, "status", uid)["status"] == "Success"
    ok(vm, "destroy", uid)
    assert _faults_call(vm, pid, "Scale")[0] == original
    nothing_left(vm, pid)


def test_effect_count(vm, target):
    pid = target("e2e_target")
    original = vm.call("call", pid=pid, name="Query")
    uid = ok(vm, "create", "go", "return", "--pid", pid, "--func", "main.Query",
             "--value", '"chaos",nil', "--effect-count", "2")
    got = [vm.call("call", pid=pid, name="Query") for _ in range(4)]
    assert got == ['"chaos",<nil>', '"chaos",<nil>', original, original], got
    assert ok(vm, "status", uid)["live"]["calls_faulted"] == 2
    ok(vm, "destroy", uid)
    assert vm.call("call", pid=pid, name="Query") == original
    nothing_left(vm, pid)
