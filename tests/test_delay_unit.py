"""Pure-logic checks of the delay/panic/args stubs and of the drain in Patcher.revert.

The stubs are disassembled again (iced-x86) and read like the docstring of stubs/faults.py
says they are; the drain runs against a fake delve client whose goroutine stays inside the
route for a while (a sleeper), so the order disarm -> drain -> routes -> caves is observable.
"""
import iced_x86 as x86
import pytest

from blade_go.errors import BladeError
from blade_go.inspector import open_binary
from blade_go.patch import ARM, CAVE, ROUTE, Patch
from blade_go.session import patching
from blade_go.stubs import faults as F
from blade_go.stubs.placement import FunctionCode
from tests.support.fixtures import build_fixture


@pytest.fixture(scope="module", params=["go-default", "386"])
def binary(request):
    opts = {"go-default": {}, "386": {"goarch": "386"}}[request.param]
    return open_binary(path=str(build_fixture("faults_target", **opts)))


class Caves:
    def __init__(self, start):
        self.next = start

    def allocate(self, n):
        at, self.next = self.next, self.next + n + 64
        return at


def target(binary, name):
    fn = binary.find_function(name)
    code = FunctionCode.decode(binary.read(fn.entry, fn.end - fn.entry), fn.entry,
                               binary.goarch, fn.name)
    params = binary.abi.param_locations(binary.signature(fn))
    caves = Caves(min(c.start for c in binary.caves(int3=False)) + 16)
    return fn, code, params, caves


def decode(patch, bits):
    return list(x86.Decoder(bits, patch.replacement, ip=patch.addr))


def test_delay_stub_shape(binary):
    fn, code, params, caves = target(binary, "main.Work")
    regabi = binary.abi.name.startswith("abi-internal")
    sleep = binary.symbol("time.Sleep")
    plan = F.plan_delay(code, params, regabi, sleep, 200, 0, caves.allocate,
                        lambda a, n: bytes(n))
    cave, route, arm = plan.patches
    assert (cave.role, route.role, arm.role) == (CAVE, ROUTE, ARM)
    bits = code.arch.bitness
    r = decode(route, bits)
    assert r[0].mnemonic == x86.Mnemonic.CALL and r[0].near_branch_target == plan.stub_addr
    assert r[1].mnemonic == x86.Mnemonic.JMP
    h2 = r[1].near_branch_target
    assert route.addr == code.frame.end and route.original == binary.read(route.addr, len(route.original))
    # the arm byte lives in the cave and equals the cave's own byte there when disarmed
    off = arm.addr - cave.addr
    assert cave.replacement[off:off + 1] == arm.original != arm.replacement
    h = [i for i in decode(cave, bits) if i.ip < h2]
    spills = [i for i in h if i.mnemonic == x86.Mnemonic.MOV and i.op0_kind == x86.OpKind.MEMORY]
    want = sum(1 for p in params if p.spill_offset is not None for _ in p.pieces)
    assert len([s for s in spills if s.memory_base == x86.Register.RSP]) == want
    cmp = next(i for i in h if i.mnemonic == x86.Mnemonic.CMP)
    addr = cmp.ip_rel_memory_address if bits == 64 else cmp.memory_displacement
    assert addr == arm.addr and cmp.immediate(1) == arm.replacement[0]
    jmps = [i for i in h if i.mnemonic == x86.Mnemonic.JMP]
    assert jmps[-1].near_branch_target == sleep  # a tail jump: no cave address on any stack
    assert not [i for i in decode(cave, bits) if i.mnemonic == x86.Mnemonic.CALL]
    # the 200 ms, in ns
    if bits == 64:
        assert any(i.mnemonic == x86.Mnemonic.MOV and i.op1_kind == x86.OpKind.IMMEDIATE64
                   and i.immediate(1) == 200_000_000 for i in h)


def test_delay_refusals(binary):
    fn, code, params, caves = target(binary, "main.makeMultiplier.func1")
    with pytest.raises(BladeError, match="frameless"):
        F.plan_delay(code, params, True, 0x401000, 10, 0, caves.allocate, lambda a, n: bytes(n))
    fn, code, params, caves = target(binary, "main.Work")
    with pytest.raises(BladeError, match="--offset"):
        F.plan_delay(code, params, True, binary.symbol("time.Sleep"), 10, 11, caves.allocate,
                     lambda a, n: bytes(n))


def test_args_stub_runs_the_displaced_entry_and_returns(binary):
    from blade_go.stubs import values as V
    from blade_go.stubs.image import BinaryResolver
    fn, code, params, caves = target(binary, "main.Scale")
    new = {0: V.parse_element(0, params[0].type, "10")}
    from blade_go.stubs.args_stub import plan_args
    plan = plan_args(code, params, new, BinaryResolver(binary), caves.allocate,
                       lambda a, n: bytes(n))
    cave, route = plan.patches
    bits = code.arch.bitness
    assert decode(route, bits)[0].near_branch_target == cave.addr
    insns = decode(cave, bits)
    site = code.entry_site()
    last = [i for i in insns if i.mnemonic == x86.Mnemonic.JMP][-1]
    assert last.near_branch_target == site.end
    cond = [i for i in insns if i.flow_control == x86.FlowControl.CONDITIONAL_BRANCH]
    assert [i.near_branch_target for i in cond] == [i.target for i in site.instructions
                                                   if i.flow == "cond"]


# --------------------------------------------------------------------------- drain

class FakeDelve:
    """Memory + one goroutine whose stack holds `pc` for `sleeps` snapshots (a sleeper)."""

    def __init__(self, mem, pc, sleeps):
        self.mem, self.pc, self.sleeps, self.log = dict(mem), pc, sleeps, []

    def halt(self, timeout=None):
        self.log.append("halt")
        return {}

    def continue_async(self):
        self.log.append("continue")

    def list_goroutines(self):
        return [{"id": 7, "currentLoc": {"pc": 0x1, "function": {"name": "runtime.gopark"}}}]

    def stacktrace(self, gid, depth):
        if self.sleeps > 0:
            self.sleeps -= 1
            return [{"pc": 0x1}, {"pc": self.pc}]
        return [{"pc": 0x1}]

    in_cave = 0  # snapshots for which a thread runs inside the cave (inside H)

    def list_threads(self):
        if self.in_cave > 0:
            self.in_cave -= 1
            return [{"id": 3, "pc": 0x9004, "function": None}]
        return []

    def read_memory(self, addr, n):
        return bytes(self.mem.get(addr + i, 0) for i in range(n))

    def set(self, expr, value):
        import re
        ctype, addr = re.match(r"\*\(\*(\w+)\)\((0x[0-9a-f]+)\)", expr).groups()
        width = {"uint8": 1, "uint64": 8}[ctype]
        addr = int(addr, 16)
        self.log.append(("write", addr))
        for i, b in enumerate(int(value).to_bytes(width, "little")):
            self.mem[addr + i] = b


def _patched(route_at=0x5000, cave_at=0x9000):
    cave = Patch(cave_at, bytes(32), bytes(range(1, 33)), CAVE)
    arm = Patch(cave_at + 16, bytes([17]), bytes([99]), ARM)  # cave byte 16 is 17
    route = Patch(route_at, b"\x90" * 10, b"\xe8" + bytes(9), ROUTE)
    mem = {}
    for p in (cave, route, arm):
        for i, b in enumerate(p.replacement):
            mem[p.addr + i] = b
    return [cave, route, arm], mem


def test_revert_disarms_then_drains_then_restores(monkeypatch):
    monkeypatch.setattr(patching.Patcher, "SETTLE", 0)
    monkeypatch.setattr(patching, "DRAIN_POLL", 0.001)
    patches, mem = _patched()
    fake = FakeDelve(mem, pc=0x5005, sleeps=3)  # a return address inside the route
    out = patching.Patcher(fake, log=lambda *_: None).revert(patches)
    writes = [e[1] for e in fake.log if isinstance(e, tuple)]
    assert writes[0] == 0x9010  # the arm byte first: disarmed while the sleeper still sleeps
    first_route = writes.index(next(w for w in writes if 0x5000 <= w < 0x500a))
    assert fake.sleeps == 0 and first_route > 0  # routes only after the sleeper left
    assert out["drain_waited_for"] == 1 and out["drain_ms"] >= 0
    assert fake.read_memory(0x5000, 10) == b"\x90" * 10
    assert fake.read_memory(0x9000, 32) == bytes(32)
    assert fake.log[-1] == "continue"


def test_a_drain_that_runs_out_leaves_it_disarmed_and_in_place(monkeypatch):
    monkeypatch.setattr(patching, "DRAIN_POLL", 0.001)
    patches, mem = _patched()
    fake = FakeDelve(mem, pc=0x5005, sleeps=10 ** 9)
    with pytest.raises(BladeError, match="still inside the fault"):
        patching.Patcher(fake, log=lambda *_: None).revert(patches, guard={"drain": 0.05})
    assert fake.read_memory(0x9010, 1) == bytes([17])        # disarmed
    assert fake.read_memory(0x5000, 1) == b"\xe8"             # route still there
    assert fake.log[-1] == "continue"                         # never left halted


def test_routes_wait_for_threads_inside_the_stub(monkeypatch):
    # A thread inside H (called from the route) returns into the route's bytes; delve cannot
    # unwind a cave PC, so only the thread's own PC shows it. The route must not be restored
    # while it is there (this crashed a hot delay 0 in bench/call_overhead.py).
    monkeypatch.setattr(patching.Patcher, "SETTLE", 0)
    monkeypatch.setattr(patching, "DRAIN_POLL", 0.001)
    patches, mem = _patched()
    fake = FakeDelve(mem, pc=0x5005, sleeps=0)
    real_restore = patching.Patcher._restore

    def restore(self, group):
        if any(p.role == ROUTE for p in group):
            assert fake.in_cave == 0, "route restored while a thread is inside the stub"
        return real_restore(self, group)

    monkeypatch.setattr(patching.Patcher, "_restore", restore)
    fake.in_cave = 10 ** 6  # during the drain too: make the drain see it first
    original_drain = patching.Patcher.drain

    def drain(self, *a, **kw):
        fake.in_cave = 0
        out = original_drain(self, *a, **kw)
        fake.in_cave = 5  # a new (disarmed) call enters H right after the drain
        return out

    monkeypatch.setattr(patching.Patcher, "drain", drain)
    patching.Patcher(fake, log=lambda *_: None).revert(patches)
    assert fake.read_memory(0x5000, 10) == b"\x90" * 10
