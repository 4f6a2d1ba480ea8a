"""Values the program keeps after destroy (issue 16): never overwritten, accounted, reclaimed
only once a scan proves them unreferenced.

The target (tests/fixtures/kept_values) stores the first odd value each of Fetch (return),
Greet (args --set) and Risky (a recovered panic) handed it, prints what it holds every 200 ms
(`HOLD last=... name=... arg=... panic=...`) and exits 3 printing CHANGED if a kept value's
bytes ever change. stdin `drop` makes it forget them.
"""
import os
import re
import time

import pytest
from elftools.elf.elffile import ELFFile

from blade_go.patch import CAVE, ROUTE, VALUE, Patch
from blade_go.session import patching
from tests.support.fixtures import build_fixture
from tests.support.targets import load_bias, text_differences
from tests.test_delay_unit import FakeDelve

KEEP_FOR = 10.0  # seconds the kept values are watched after destroy


@pytest.fixture(scope="module")
def kept_binary():
    return build_fixture("kept_values")


def text_section_differs(pid) -> bool:
    """Whether the live `.text` differs from the executable file's, anywhere."""
    exe = os.readlink(f"/proc/{pid}/exe")
    with open(exe, "rb") as f:
        sec = ELFFile(f).get_section_by_name(".text")
        addr, data = sec["sh_addr"] + load_bias(pid), sec.data()
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        mem.seek(addr)
        return mem.read(len(data)) != data


def holds(target, timeout=10):
    return target.wait_for_line(r"^HOLD ", since=target.mark(), timeout=timeout)


def watch(target, want: str, seconds: float):
    """Every HOLD line for `seconds` contains `want`; the target never says CHANGED."""
    mark = target.mark()
    time.sleep(seconds)
    lines = target.lines_since(mark)
    held = [ln for ln in lines if ln.startswith("HOLD ")]
    assert target.alive(), target.describe()
    assert not [ln for ln in lines if ln.startswith("CHANGED")], lines
    assert len(held) >= seconds * 2, lines  # printing every 200 ms, even on a loaded machine
    assert all(want in ln for ln in held), [ln for ln in held if want not in ln][:3]


def in_ranges(diffs, retained):
    spans = [(int(r["addr"], 16), int(r["addr"], 16) + r["size"]) for r in retained]
    return all(any(lo <= a and b <= hi for lo, hi in spans) for a, b in diffs)


CASES = [
    # (action, flags, what the program then holds)
    ("return", ["--func", "main.Fetch", "--value", '"chaos-name",error:db is down'],
     'last="db is down" name="chaos-name"'),
    ("args", ["--func", "main.Greet", "--set", 'name="chaos-arg"'], 'arg="chaos-arg"'),
    ("panic", ["--func", "main.Risky", "--value", '"chaos-panic"'], 'panic="chaos-panic"'),
]


@pytest.mark.parametrize("action,flags,want", CASES, ids=[c[0] for c in CASES])
def test_kept_values_survive_destroy_until_dropped(blade, kept_binary, target_factory, action,
                                                   flags, want):
    t = target_factory(kept_binary)
    uid = blade.ok("create", "go", action, "--pid", t.pid, *flags)
    t.wait_for_line(r"^HOLD .*" + re.escape(want), timeout=15)
    res = blade.ok("destroy", uid)
    kept = res["restored"]["retained"]
    assert kept and res["restored"]["retained_bytes"] == sum(r["size"] for r in kept), res
    assert all(r["reason"].startswith("references found") for r in kept), kept
    # code is back at once: .text byte-exact; what differs is only the retained value bytes
    assert not text_section_differs(t.pid)
    assert in_ranges(text_differences(t.pid), kept)
    watch(t, want, KEEP_FOR)

    # accounted: the record, status of the uid and of the process
    rec = blade.ok("status", uid)
    assert rec["status"] == "Destroyed" and rec["retained"] == kept, rec
    proc = blade.ok("status", "--pid", t.pid)
    assert proc["retained_bytes"] == res["restored"]["retained_bytes"], proc
    assert {r["uid"] for r in proc["retained"]} == {uid} and proc["experiments"] == []

    # a later create on the process still holding them: they are not handed out again
    other = blade.create_return(t.pid, "main.Fetch", '"other-name",error:other error')
    patches = [Patch.from_json(p) for p in blade_record(blade, other)["patches"]]
    spans = [(int(r["addr"], 16), int(r["addr"], 16) + r["size"]) for r in kept]
    assert not [p for p in patches if p.role in (CAVE, VALUE)
                for lo, hi in spans if p.addr < hi and lo < p.end]
    blade.ok("destroy", other)
    watch(t, want, 1.0)

    # dropped by the program: a later command on that pid reclaims them
    t.send_line("drop")
    t.wait_for_line(r"^DROPPED", timeout=10)
    holds(t)  # a report after the drop: the loop ran on
    reclaimed = 0
    for attempt in range(10):  # a stale copy (a dead stack slot) may outlive the drop a while
        again = blade.ok("destroy", uid)
        reclaimed += again["reclaim"]["reclaimed"]
        if again.get("retained_bytes") == 0:
            break
        time.sleep(1)
    print(f"{action}: reclaimed after {attempt + 1} command(s)")
    assert again["retained_bytes"] == 0 and again["retained"] == [], again
    assert reclaimed >= res["restored"]["retained_bytes"], again  # (+ what `other` retained)
    assert text_differences(t.pid) == []  # the whole executable mapping equals the file again
    assert blade.ok("status", "--pid", t.pid)["retained_bytes"] == 0
    assert "retained" not in blade.ok("status", uid)
    assert t.alive() and not [ln for ln in t.lines if ln.startswith("CHANGED")]


def blade_record(blade, uid):
    import json
    with open(os.path.join(blade.home, "state.json")) as f:
        return json.load(f)["experiments"][uid]["record"]


def test_a_process_that_exits_takes_its_retained_values(blade, kept_binary, target_factory):
    t = target_factory(kept_binary)
    uid = blade.ok("create", "go", "return", "--pid", t.pid, "--func", "main.Fetch",
                   "--value", '"chaos-name",error:db is down')
    t.wait_for_line(r'^HOLD last="db is down"', timeout=15)
    assert blade.ok("destroy", uid)["restored"]["retained_bytes"] > 0
    pid = t.pid
    t.stop()
    rec = blade.ok("status", uid)  # the sweep of this command sees the process gone
    assert "retained" not in rec, rec
    assert blade.ok("status", "--pid", pid) == {"pid": pid, "alive": False, "experiments": [],
                                                "retained": [], "retained_bytes": 0}


# -- the policy, against a fake delve ----------------------------------------------------------

def _patched():
    cave = Patch(0x9000, bytes(16), b"\xc3" + b"\xcc" * 15, CAVE)
    value = Patch(0x9010, bytes(16), b"chaos-name" + bytes(6), VALUE)
    route = Patch(0x5000, b"\x90" * 5, b"\xe9" + bytes(4), ROUTE)
    mem = {p.addr + i: b for p in (cave, value, route) for i, b in enumerate(p.replacement)}
    return [cave, value, route], mem


def test_a_referenced_value_is_retained_never_restored_on_a_timer(monkeypatch):
    monkeypatch.setattr(patching.Patcher, "HOLD_WAIT", 0.05)
    monkeypatch.setattr(patching.Patcher, "VALUE_POLL", 0.01)
    patches, mem = _patched()
    fake = FakeDelve(mem, pc=0x1, sleeps=0)
    monkeypatch.setattr(patching.Patcher, "_held_values",
                        lambda self, ranges: {0: "the word at 0xc000010000 holds 0x9012"})
    out = patching.Patcher(fake, log=lambda *_: None).revert(patches, guard={"leaf": True})
    assert fake.read_memory(0x5000, 5) == b"\x90" * 5 and fake.read_memory(0x9000, 16) == bytes(16)
    assert fake.read_memory(0x9010, 10) == b"chaos-name"  # still what the program was given
    assert out["retained"] == [{"addr": "0x9010", "size": 16, "reason": "references found: "
                                "the word at 0xc000010000 holds 0x9012"}]
    assert out["retained_bytes"] == 16 and fake.log[-1] == "continue"


def test_no_scan_possible_retains_at_once(monkeypatch):
    patches, mem = _patched()
    fake = FakeDelve(mem, pc=0x1, sleeps=0)
    monkeypatch.setattr(patching.Patcher, "_held_values", lambda self, ranges: {
        0: patching.NOT_SCANNED + "300 MB of resident writable memory"})
    out = patching.Patcher(fake, log=lambda *_: None).revert(patches, guard={"leaf": True})
    assert out["retained"][0]["reason"].startswith("no scan possible: 300 MB")
    assert fake.log.count("halt") == 1  # not looked at again: the answer would not change


def test_a_value_dropped_meanwhile_is_restored_then_reclaim(monkeypatch):
    monkeypatch.setattr(patching.Patcher, "VALUE_POLL", 0.001)
    patches, mem = _patched()
    fake = FakeDelve(mem, pc=0x1, sleeps=0)
    looks = iter([{0: "held"}, {}])
    monkeypatch.setattr(patching.Patcher, "_held_values", lambda self, r: next(looks))
    out = patching.Patcher(fake, log=lambda *_: None).revert(patches, guard={"leaf": True})
    assert out["retained"] == [] and fake.read_memory(0x9010, 16) == bytes(16)
    # reclaim: one stop, restores what nothing points to, keeps the rest
    patches, mem = _patched()
    fake = FakeDelve(mem, pc=0x1, sleeps=0)
    monkeypatch.setattr(patching.Patcher, "_held_values", lambda self, r: {})
    res = patching.Patcher(fake, log=lambda *_: None).reclaim([patches[1]])
    assert res["reclaimed"] == 16 and res["reclaimed_at"] == ["0x9010"]
    assert fake.log.count("halt") == 1 and fake.log[-1] == "continue"
