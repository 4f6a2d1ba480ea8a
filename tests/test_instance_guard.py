"""The amd64 instance guard's patch list (stubs/instance_guard.py), pure logic: the guard is
added once, every patch of the plan is kept exactly once (a value patch listed twice overlaps
itself, and trust.check_against then refuses the record: destroy answers 43000 and the fault
stays), and the guard's bytes decode as the module doc says."""
import iced_x86 as x86

from blade_go.patch import CAVE, DATA, ROUTE, VALUE, Patch, split_values
from blade_go.stubs.instance_guard import GUARD_MAX, guarded_patches

ENTRY = 0x401000
# a Go amd64 prologue: cmp rsp,[r14+0x10]; jbe ...; push rbp; mov rbp,rsp
PROLOGUE = bytes.fromhex("493b6610" "7620" "55" "4889e5") + b"\x90" * 22
STUB, GUARD = 0x400100, 0x400200


def _plan(with_counters=False):
    """A return plan as planner.plan_return gives it for a string value: [code, value, route]
    (+ a data patch for condition counters)."""
    code = b"\x48\x8d\x05\x09\x00\x00\x00" + b"\xc3" + b"\xcc" * 8 + b"chaos" + bytes(11)
    cave = Patch(STUB, bytes(len(code)), code, CAVE)
    parts = split_values(cave, STUB + 16)
    route = Patch(ENTRY, PROLOGUE[:5], b"\xe9" + (STUB - ENTRY - 5).to_bytes(4, "little", signed=True), ROUTE)
    extra = [Patch(0x600000, bytes(24), bytes(24), DATA)] if with_counters else []
    return [*parts, *extra, route]


def _guard(patches):
    return guarded_patches(patches, ENTRY, PROLOGUE, dictionary=0x4c0000,
                           allocate=lambda n: GUARD, read_original=lambda a, n: bytes(n))


def test_every_patch_of_the_plan_is_kept_once_and_the_guard_added_once():
    plan = _plan()
    out = _guard(plan)
    assert [p.role for p in out] == [CAVE, VALUE, CAVE, ROUTE]
    assert len(set(out)) == len(out)  # no patch twice (a value twice overlaps itself)
    spans = sorted((p.addr, p.end) for p in out)
    assert all(hi <= lo for (_, hi), (lo, _) in zip(spans, spans[1:]))
    assert out[:2] == plan[:2] and out[2].addr == GUARD and len(out[2].replacement) == GUARD_MAX
    assert out[-1].addr == ENTRY and out[-1].original == PROLOGUE[:5]


def test_counters_are_kept_once_between_the_caves_and_the_route():
    out = _guard(_plan(with_counters=True))
    assert [p.role for p in out] == [CAVE, VALUE, CAVE, DATA, ROUTE]


def test_the_guard_compares_the_dictionary_and_routes_to_stub_or_back_into_f():
    out = _guard(_plan())
    guard = out[2].replacement
    ins = list(x86.Decoder(64, guard, ip=GUARD))[:6]
    text = [str(i) for i in ins]
    assert text[0] == "mov r12,4C0000h" and text[1] == "cmp rax,r12"
    assert ins[2].mnemonic == x86.Mnemonic.JE and ins[2].near_branch_target == STUB
    # the displaced prologue (cmp + jbe: 6 bytes >= the 5-byte route), then back to F
    assert text[3] == "cmp rsp,[r14+10h]" and ins[4].mnemonic == x86.Mnemonic.JBE
    assert ins[4].near_branch_target == ENTRY + 6 + 0x20  # relocated, same target
    assert ins[5].mnemonic == x86.Mnemonic.JMP and ins[5].near_branch_target == ENTRY + 6
    route = out[-1].replacement
    assert route[0] == 0xE9 and ENTRY + 5 + int.from_bytes(route[1:], "little", signed=True) == GUARD
