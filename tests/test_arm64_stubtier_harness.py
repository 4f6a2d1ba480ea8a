"""The stub tier's harness (tests/support/arm64_stubtier.py) proven on its own, before and
apart from blade-go's arm64 planners:

- arm64, hand-assembled: a route `B` at a function's entry into a text-end cave holding
  `movz x0,#42; ret` changes what the program prints; a cave that loads its result from the
  .noptrbss page tail (`adrp; ldr; ret`) prints the value the harness wrote there through
  qemu's gdbstub (a `data` patch), so writable bytes that are not in the file work too.
- amd64 under qemu-x86_64, with blade-go's own planners (the offline Planner): a return with a
  condition (counters: a data patch) behaves as planned, which proves the planning seam.
- the harness refuses a patch whose `original` is not what the file holds.
Every arm64 instruction assembled here is checked by decoding it back with capstone.
"""
import pytest

from blade_go.inspector import open_binary
from blade_go.patch import CAVE, DATA, ROUTE, Patch
from tests.support import arm64_stubtier as tier
from tests.support.fixtures import build_fixture


@pytest.fixture(scope="module")
def arm64_results():
    tier.require_qemu("aarch64")
    return build_fixture(tier.results_program(), goarch="arm64")


def _disasm(code: bytes, addr: int):
    import capstone
    md = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    return [(i.mnemonic, i.op_str) for i in md.disasm(code, addr)]


def _u32(*words) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in words)


def b_to(src: int, dst: int) -> int:
    return 0x14000000 | (((dst - src) >> 2) & 0x3FFFFFF)


def movz_x(rd: int, imm16: int) -> int:
    return 0xD2800000 | (imm16 << 5) | rd


def adrp(rd: int, pc: int, target: int) -> int:
    imm = ((target >> 12) - (pc >> 12)) & 0x1FFFFF
    return 0x90000000 | ((imm & 3) << 29) | ((imm >> 2) << 5) | rd


def ldr_x(rt: int, rn: int, off: int) -> int:
    assert off % 8 == 0
    return 0xF9400000 | ((off // 8) << 10) | (rn << 5) | rt


RET = 0xD65F03C0


def _site(exe, name):
    b = open_binary(path=str(exe))
    fn = b.find_function(name)
    cave = next(c for c in b.caves(int3=False) if c.kind == "text-end")
    return b, fn, (cave.start + 15) & ~15


def _line(run, i):
    return next(l for l in run.stdout.splitlines() if l.startswith(f"R{i} "))


def test_hand_assembled_route_and_cave(arm64_results):
    b, fn, cave = _site(arm64_results, "main.OneInt")
    code = _u32(movz_x(0, 42), RET)
    route = _u32(b_to(fn.entry, cave))
    assert _disasm(code, cave) == [("movz", "x0, #0x2a"), ("ret", "")] or \
        _disasm(code, cave) == [("mov", "x0, #0x2a"), ("ret", "")]
    assert _disasm(route, fn.entry) == [("b", f"#{cave:#x}")]
    patches = [Patch(cave, b.read(cave, len(code)), code, CAVE),
               Patch(fn.entry, b.read(fn.entry, 4), route, ROUTE)]
    plain = tier.run(arm64_results)
    faulted = tier.run_patched(arm64_results, patches)
    assert plain.returncode == faulted.returncode == 0, faulted.stderr
    assert _line(plain, 0) == "R0 | int :: -436207617 zero=false"
    assert _line(faulted, 0) == "R0 | int :: 42 zero=false"
    # nothing else changed
    assert plain.stdout.splitlines()[1:] == faulted.stdout.splitlines()[1:]


def test_hand_assembled_data_patch_through_gdbstub(arm64_results):
    from blade_go.stubs.conditions_data import data_cave
    b, fn, cave = _site(arm64_results, "main.OneInt")
    lo, hi = data_cave(b.image)
    slot = (lo + 7) & ~7
    assert slot + 8 <= hi
    code = _u32(adrp(1, cave, slot), ldr_x(0, 1, slot & 0xFFF), RET)
    assert _disasm(code, cave) == [("adrp", f"x1, #{slot & ~0xFFF:#x}"),
                                   ("ldr", f"x0, [x1, #{slot & 0xFFF:#x}]"), ("ret", "")]
    patches = [Patch(cave, b.read(cave, len(code)), code, CAVE),
               Patch(slot, bytes(8), (1234567).to_bytes(8, "little"), DATA),
               Patch(fn.entry, b.read(fn.entry, 4), _u32(b_to(fn.entry, cave)), ROUTE)]
    run = tier.run_patched(arm64_results, patches)
    assert run.returncode == 0, run.stderr
    assert run.data_written == 1
    assert _line(run, 0) == "R0 | int :: 1234567 zero=false"


def test_original_mismatch_is_refused(arm64_results, tmp_path):
    b, fn, cave = _site(arm64_results, "main.OneInt")
    wrong = Patch(fn.entry, b"\0\0\0\0", _u32(RET), ROUTE)
    with pytest.raises(tier.PatchError, match="original 00000000 but the file holds"):
        tier.write_copy(arm64_results, [wrong], tmp_path / "copy")
    # a data patch on file-backed bytes is a planning error too
    with pytest.raises(tier.PatchError, match="lies on file-backed bytes"):
        tier.write_copy(arm64_results, [Patch(fn.entry, b.read(fn.entry, 4), bytes(4), DATA)],
                        tmp_path / "copy")


def test_amd64_planner_seam_with_condition_counters():
    """blade-go's amd64 planners through the offline Planner: --effect-count 2 on a function
    called once per run faults that call (counters written through the gdbstub); a plain
    return beside it; the two share no cave byte."""
    tier.require_qemu("x86_64")
    exe = build_fixture(tier.results_program(), goarch="amd64")
    with tier.Planner(exe) as p:
        a = p.plan("return", func="main.OneInt", value="42")
        c = p.plan("return", func="main.JustError", value="error:db is down", effect_count=2)
    assert c.result["conditions"] == {"effect_count": 2}
    assert DATA in c.roles()
    spans = sorted((q.addr, q.end) for q in tier.all_patches([a, c]) if q.role != ROUTE)
    assert all(e <= s for (_, e), (s, _) in zip(spans, spans[1:])), spans
    run = tier.run_patched(exe, tier.all_patches([a, c]))
    assert run.returncode == 0, run.stderr
    assert run.data_written >= 1
    assert _line(run, 0) == "R0 | int :: 42 zero=false"
    assert _line(run, 3) == "R3 | *errors.errorString :: error:db is down"


def test_armv80_cpu_model_rejects_lse(arm64_results):
    """The control for the ARMv8.0 runs (test_arm64_stubtier_faults.test_armv80_cpu): a stub
    using an LSE atomic (ldaddal, ARMv8.1) works on neoverse-n1 and dies with SIGILL on
    qemu's cortex-a72, so a stub that needed LSE would fail there."""
    b, fn, cave = _site(arm64_results, "main.OneInt")
    code = _u32(0xD10043FF, 0xF90003FF, movz_x(0, 5), 0xF8E003E1, 0xF94003E0, 0x910043FF, RET)
    assert [m for m, _ in _disasm(code, cave)] == ["sub", "str", "mov", "ldaddal", "ldr", "add",
                                                   "ret"]
    patches = [Patch(cave, b.read(cave, len(code)), code, CAVE),
               Patch(fn.entry, b.read(fn.entry, 4), _u32(b_to(fn.entry, cave)), ROUTE)]
    n1 = tier.run_patched(arm64_results, patches)
    assert n1.returncode == 0 and _line(n1, 0) == "R0 | int :: 5 zero=false"
    a72 = tier.run_patched(arm64_results, patches, cpu="cortex-a72")
    assert a72.returncode != 0 and "SIGILL" in a72.stderr, (a72.returncode, a72.stderr[-500:])
    # the unpatched program itself runs there (Go checks for LSE before using it)
    assert tier.run(arm64_results, cpu="cortex-a72").returncode == 0
