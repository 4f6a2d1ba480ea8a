"""blade-go's own analysis in a `create go return`, phase by phase, old code vs new, side by side.

    python bench/create_analysis.py [--runs 5] [--small 2] [--large 300] [--old REV]

What the create CLI does before it asks the session for anything (actions/return_.py), timed
per phase in a fresh Python process per run (nothing cached between runs but the OS page
cache): open (open_typed_binary by pid: ELF headers, build info, load bias), lookup (the
function by name), denylist (check_injectable: the compile unit from DWARF), signature
(result locations from DWARF + ABI), inlined (inlined copies in every compile unit),
plan (parse --value, the caves, the stub and route patches). `imports` is the time to import
what the CLI imports for a create before the first phase (measured apart: the CLI start-up is
not this script's subject). Targets: the echo programs of bench/create_latency.py (2 and 300
packages x 200 functions, with DWARF), running, opened by pid as the CLI does.

With --cli: the whole CLI instead, per round alternating: a bare `dlv attach` (until it answers,
then detach; bench/create_latency.py), then for old and new code a `create` (fresh session), a
second `create` on the attached process, and the two destroys (second, then last).

Old code: `git archive REV` (default: `git merge-base HEAD main`, where this branch left main)
unpacked into a temporary directory; new code: this checkout (its working tree). Each run alternates old and new. Medians of the runs, in ms.
"""
import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import io

from common import ROOT, median, start_target, table

FUNC, FUNC2 = "bigprog/p0000.F1", "bigprog/p0000.F2"
VALUE = '1,"x",error:down'

# Runs in a child process with PYTHONPATH set to the code under test; prints one JSON line.
CHILD = r'''
import json, sys, time
t0 = time.perf_counter()
from blade_go.actions import return_ as R
from blade_go.denylist import check_injectable
from blade_go.inspector import CaveAllocator
from blade_go.inspector.typed import open_typed_binary
from blade_go.stubs import BinaryResolver, parse_values, plan_return
T = {"imports": time.perf_counter() - t0}
pid, func, value = int(sys.argv[1]), sys.argv[2], sys.argv[3]


def phase(name, f):
    t = time.perf_counter()
    out = f()
    T[name] = time.perf_counter() - t
    return out


b = phase("open", lambda: open_typed_binary(pid=pid, func=func))
fn = phase("lookup", lambda: R._find_out_of_line(b, func))
phase("denylist", lambda: check_injectable(b, fn, func))
results = phase("signature", lambda: b.result_locations(fn))
sites = phase("inlined", lambda: b.inlined_sites(fn.name))


def plan():
    values = parse_values(value, results, b, func=fn.name)
    original = R._route_original(b, fn)
    bias = b.load_bias
    alloc = CaveAllocator(b.caves(int3=False), taken=[])
    return plan_return(results, values, arch=b.goarch, ptrsize=b.ptrsize,
                       resolve=BinaryResolver(b),
                       allocate=lambda n: alloc.allocate(n, near=fn.entry) + bias,
                       entry=fn.entry + bias, entry_original=original,
                       read_original=lambda a, n: b.read(a - bias, n))


p = phase("plan", plan)
T["analysis"] = sum(v for k, v in T.items() if k != "imports")
print(json.dumps({"t": T, "stub": p.stub_size, "sites": len(sites), "entry": fn.entry}))
'''
PHASES = ["imports", "open", "lookup", "denylist", "signature", "inlined", "plan", "analysis"]


def old_tree(rev: str) -> str:
    d = tempfile.mkdtemp(prefix="blade-go-old-")
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "blade_go", "specs"],
                          check=True, capture_output=True).stdout
    tarfile.open(fileobj=io.BytesIO(data)).extractall(d)
    return d


def run_child(code: str, pid: int) -> dict:
    env = dict(os.environ, PYTHONPATH=code)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: with .pyc
    p = subprocess.run([sys.executable, "-c", CHILD, str(pid), FUNC, VALUE], env=env,
                       capture_output=True, text=True, cwd=code)
    if p.returncode:
        raise RuntimeError(p.stderr[-2000:])
    return json.loads(p.stdout)


def blade(code: str, home: str, *args) -> tuple:
    """(seconds, result) of one CLI command run from `code`."""
    env = dict(os.environ, BLADE_GO_HOME=home, PYTHONPATH=code)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "blade_go", *args], env=env, cwd=code,
                       capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    resp = json.loads(p.stdout)
    if not resp.get("success"):
        raise RuntimeError(f"{args}: {resp}")
    return elapsed, resp["result"]


def cli_rounds(codes: dict, pid: int, rounds: int, dlv: str) -> dict:
    from create_latency import bare_attach
    res = {"bare": []}
    for k in codes:
        for what in ("create", "create2", "destroy2", "destroy"):
            res[f"{k}:{what}"] = []
    create = ["create", "go", "return", "--pid", str(pid), "--value", VALUE, "--func"]
    for _ in range(rounds):
        res["bare"].append(bare_attach(dlv, pid))
        for k, code in codes.items():
            home = tempfile.mkdtemp(prefix="blade-go-bench-")
            t1, uid1 = blade(code, home, *create, FUNC)
            t2, uid2 = blade(code, home, *create, FUNC2)
            t3, _ = blade(code, home, "destroy", uid2)
            t4, _ = blade(code, home, "destroy", uid1)
            for what, t in (("create", t1), ("create2", t2), ("destroy2", t3), ("destroy", t4)):
                res[f"{k}:{what}"].append(t)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--small", type=int, default=2)
    ap.add_argument("--large", type=int, default=300)
    ap.add_argument("--cli", action="store_true", help="time the whole CLI (module doc)")
    ap.add_argument("--old", help="git revision of the old code (default: merge-base with main)")
    a = ap.parse_args()
    from create_latency import echo_program
    old = a.old or subprocess.run(["git", "-C", str(ROOT), "merge-base", "HEAD", "main"],
                                  check=True, capture_output=True, text=True).stdout.strip()
    codes = {"old": old_tree(old), "new": str(ROOT)}
    rows = []
    if a.cli:
        from tests.support.toolchains import require_dlv
        dlv = require_dlv()
    for packages in [p for p in (a.small, a.large) if p]:
        binary = echo_program(packages)
        t = start_target(binary, ready_line="READY")
        try:
            if a.cli:
                r = cli_rounds(codes, t.pid, a.runs, dlv)
                ms = lambda k: median(r[k]) * 1e3  # noqa: E731
                size = f"{os.path.getsize(binary) / 1e6:.1f} MB"
                rows.append([size, "bare dlv attach", f"{ms('bare'):.0f}", "1.00", "", "", ""])
                for k in codes:
                    rows.append([size, f"blade-go {k}", f"{ms(k + ':create'):.0f}",
                                 f"{ms(k + ':create') / ms('bare'):.2f}",
                                 f"{ms(k + ':create2'):.0f}", f"{ms(k + ':destroy2'):.0f}",
                                 f"{ms(k + ':destroy'):.0f}"])
                continue
            res = {k: [] for k in codes}
            for k, code in codes.items():  # warm-up: .pyc files, page cache
                run_child(code, t.pid)
            for _ in range(a.runs):
                for k, code in codes.items():
                    res[k].append(run_child(code, t.pid))
        finally:
            t.stop()
        size = f"{os.path.getsize(binary) / 1e6:.1f} MB"
        for k in codes:
            r = res[k]
            rows.append([size, k] + [f"{median([x['t'][p] for x in r]) * 1e3:.1f}"
                                     for p in PHASES] + [str(r[0]["sites"]), str(r[0]["stub"])])
        if {res[k][0]["entry"] for k in codes} != {res["old"][0]["entry"]} or \
                res["old"][0]["stub"] != res["new"][0]["stub"]:
            print(f"WARNING: old and new disagree on {size}: {res['old'][0]} {res['new'][0]}")
    load = " ".join(open("/proc/loadavg").read().split()[:3])
    print(f"old = {old[:12]}; function {FUNC}, --value '{VALUE}', median of {a.runs} runs; "
          f"load average after: {load}")
    if a.cli:
        print(table(["binary", "who", "create ms", "x bare", "2nd create ms",
                     "destroy (attached) ms", "destroy last ms"], rows))
        return
    print(table(["binary", "code"] + [p + " ms" for p in PHASES] + ["inlined sites", "stub B"],
                rows))


if __name__ == "__main__":
    main()
