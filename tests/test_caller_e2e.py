"""End to end (issue 19): `--caller` scopes a fault by call path on a live Go process under
load, and the blast-radius table in `status` equals what the target counted itself.

tests/fixtures/callers_target calls Work along three paths from 8 goroutines (GOGC=1):

    direct:  worker -> call -> viaDirect -> Work
    inlined: worker -> call -> viaInlined -> helper (inlined into viaInlined) -> Work
    deep:    worker -> call -> viaDeep -> mid1 -> mid2 -> Work

Each case pauses the load, resets the target's counters, creates the experiment, runs the load,
pauses and compares, per path, the calls the target made and saw faulted with the stub's
table (one entry per call site of Work: calls, faulted, excluded by --caller), then destroys and
checks `.text` byte for byte.
"""

import pytest

from tests.support.fixtures import build_fixture, fixture_dir
from tests.support.targets import differences_beyond_retained, text_differences
from tests.support.targets import command, run_window

WORK = "main.Work"
FAULT = "-1,error:chaos"
LOAD_ENV = {"GOGC": "1"}
PATHS = ("direct", "inlined", "deep")
# the function holding each path's call of Work (helper is inlined into viaInlined)
SITE_CALLER = {"direct": "main.viaDirect", "inlined": "main.viaInlined", "deep": "main.mid2"}


def site_lines():
    src = (fixture_dir("callers_target") / "main.go").read_text().splitlines()
    return {p: next(i for i, ln in enumerate(src, 1) if f"SITE:{p}" in ln) for p in PATHS}


def armed(blade, t, *flags, action="return", value=FAULT):
    command(t, "pause", "PAUSED")
    command(t, "reset", "RESET")
    extra = ["--value", value] if action in ("return", "panic") else []
    return blade.ok("create", "go", action, "--pid", t.pid, "--func", WORK, *extra, *flags)


def by_path(table):
    """The blast-radius rows keyed by path (through the caller function of each site)."""
    out = {}
    for row in table:
        path = next((p for p, c in SITE_CALLER.items() if row["caller"] == c), None)
        assert path is not None, f"a call site outside the three paths: {row}"
        assert path not in out, f"two entries for one site: {table}"
        out[path] = row
    return out


def check_table(facts, s, caller=True):
    """The stub's table equals the target's own counts, site by site."""
    rows = by_path(facts["blast_radius"])
    lines = site_lines()
    for p in PATHS:
        if s[f"{p}_calls"] == 0:
            continue
        row = rows[p]
        assert row["calls"] == s[f"{p}_calls"], (p, row, s)
        assert row["faulted"] == s[f"{p}_faulted"], (p, row, s)
        assert row["site"].endswith(f"main.go:{lines[p]}"), (p, row)
        if caller:
            assert row["excluded_by_caller"] == row["calls"] - row["faulted"], row
    assert facts["calls_faulted"] == sum(s[f"{p}_faulted"] for p in PATHS)
    assert facts["calls_seen"] == sum(s[f"{p}_calls"] for p in PATHS)
    assert "blast_radius_overflow" not in facts


def finish(blade, t, uid):
    done = blade.ok("destroy", uid)
    assert differences_beyond_retained(blade.home, t.pid) == []  # code exact; kept values stay (issue 16)
    command(t, "reset", "RESET")
    after = run_window(t, 0.5)
    assert sum(after[f"{p}_calls"] for p in PATHS) > 0
    assert sum(after[f"{p}_faulted"] for p in PATHS) == 0
    assert not [ln for ln in t.lines if ln.startswith("BAD")], t.describe()
    assert t.alive()
    return done


@pytest.fixture(scope="module")
def binary():
    return build_fixture("callers_target")


@pytest.fixture
def target(binary, target_factory):
    return target_factory(binary, env=LOAD_ENV)


# (flags, paths faulted): depth counts physical frames; a function inlined into its caller
# shares that caller's frame (helper's copy is viaInlined's code)
CASES = [
    (("--caller", "main.viaDirect"), {"direct"}),
    (("--caller", "main.helper"), {"inlined"}),                    # only inlined copies
    (("--caller", "main.viaInlined", "--caller-depth", "1"), {"inlined"}),
    (("--caller", "main.viaDeep"), set()),                          # the 3rd frame
    (("--caller", "main.viaDeep", "--caller-depth", "3"), {"deep"}),
    (("--caller", "main.mid1,main.viaDirect", "--caller-depth", "2"), {"direct", "deep"}),
    (("--caller", "main.call", "--caller-depth", "3"), {"direct", "inlined"}),  # deep: 4th
]


@pytest.mark.parametrize("flags,faulted", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_caller_faults_exactly_the_intended_paths(blade, target, flags, faulted):
    t = target
    uid = armed(blade, t, *flags)
    s = run_window(t, 1.2)
    for p in PATHS:
        assert s[f"{p}_calls"] > 0, s
        want = s[f"{p}_calls"] if p in faulted else 0
        assert s[f"{p}_faulted"] == want, (p, s)
    facts = blade.ok("status", uid)["live"]
    check_table(facts, s)
    excluded = {e["caller"] for e in facts["excluded_callers"]}
    assert excluded == {SITE_CALLER[p] for p in PATHS if p not in faulted}
    done = finish(blade, t, uid)
    final = done["restored"]
    assert final["calls_faulted"] == sum(s[f"{p}_faulted"] for p in PATHS)
    assert {r["caller"] for r in final["blast_radius"]} == set(SITE_CALLER.values())


def test_blast_radius_of_a_plain_fault(blade, target):
    """No condition at all: the table still shows every site reached, all faulted."""
    t = target
    uid = armed(blade, t)
    s = run_window(t, 1.0)
    facts = blade.ok("status", uid)["live"]
    assert "excluded_callers" not in facts
    check_table(facts, s, caller=False)
    assert [r["calls"] for r in facts["blast_radius"]] == \
        sorted((r["calls"] for r in facts["blast_radius"]), reverse=True)
    finish(blade, t, uid)


def test_caller_with_count_and_on_other_actions(blade, target):
    t = target
    uid = armed(blade, t, "--caller", "main.mid1", "--caller-depth", "2",
                "--effect-count", "200")
    s = run_window(t, 1.5)
    assert s["deep_faulted"] == 200 and s["direct_faulted"] == s["inlined_faulted"] == 0, s
    facts = blade.ok("status", uid)["live"]
    check_table(facts, s, caller=False)
    rows = by_path(facts["blast_radius"])
    assert rows["deep"]["rejected_by_other_conditions"] == s["deep_calls"] - 200
    finish(blade, t, uid)

    uid = armed(blade, t, "--set", "id=1000", "--caller", "main.helper", action="args")
    s = run_window(t, 1.0)
    assert s["inlined_faulted"] == s["inlined_calls"] > 0, s
    assert s["direct_faulted"] == s["deep_faulted"] == 0, s
    check_table(blade.ok("status", uid)["live"], s)
    finish(blade, t, uid)

    uid = armed(blade, t, "--caller", "main.viaDeep", "--caller-depth", "3", action="panic",
                value='"chaos"')
    s = run_window(t, 1.0)
    assert s["deep_faulted"] == s["deep_calls"] > 0, s
    assert s["direct_faulted"] == s["inlined_faulted"] == 0, s
    check_table(blade.ok("status", uid)["live"], s)
    finish(blade, t, uid)

    uid = armed(blade, t, "--time", "30", "--caller", "main.viaDirect", action="delay")
    s = run_window(t, 1.0)
    facts = blade.ok("status", uid)["live"]
    rows = by_path(facts["blast_radius"])
    assert rows["direct"]["faulted"] == s["direct_calls"] > 0
    assert rows["deep"]["faulted"] == rows["inlined"]["faulted"] == 0
    finish(blade, t, uid)


def test_caller_refusals(blade, target):
    t = target
    r = blade.fail("create", "go", "return", "--pid", t.pid, "--func", WORK, "--value", FAULT,
                   "--caller", "main.viaDirekt")
    assert "closest: main.viaDirect" in r["error"]
    r = blade.fail("create", "go", "return", "--pid", t.pid, "--func", WORK, "--value", FAULT,
                   "--caller-depth", "2")
    assert "--caller-depth needs --caller" in r["error"]
    r = blade.fail("create", "go", "return", "--pid", t.pid, "--func", WORK, "--value", FAULT,
                   "--caller", "main.viaDeep", "--caller-depth", "9")
    assert r["code"] in (46000, 47000) and "caller-depth" in r["error"]
    assert text_differences(t.pid) == []
