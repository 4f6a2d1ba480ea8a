"""ns per call of an injected vs a not injected function, side by side in one run.

8 goroutines call Lookup in a loop; the rate is read before, during and after each experiment
on it (`return`, an armed `delay --time 0`, `args` setting id to a value that keeps the same
path), alternating several times so drift on a shared VM affects all sides alike. Rates are
per second of the target's own CPU time (/proc/PID/stat), so other processes on the machine do
not count as a cost of the call.
Usage: python bench/call_overhead.py [--rounds 3] [--seconds 2] [--goroutines 8]
                                     [--faults return,delay0,args]
"""
import argparse
import os
import tempfile

import time

from common import Blade, _count, bench_binary, median, start_target, table, versions

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """The target's own CPU time (user + system): unlike wall time, other processes on a shared
    machine do not change how much of it a call costs."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rate(target, seconds):
    """Calls per second of the target's own CPU time, over `seconds` of wall time."""
    first, c0 = _count(target, target.mark()), cpu_seconds(target.pid)
    time.sleep(seconds)
    last, c1 = _count(target, target.mark()), cpu_seconds(target.pid)
    return (last[1] - first[1]) / (c1 - c0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--goroutines", type=int, default=8)
    ap.add_argument("--faults", default="return,delay0,args")
    a = ap.parse_args()
    faults = {  # name -> create arguments after `create go`
        "return": ["return", "--func", "main.Lookup", "--value", '"chaos",nil'],
        "delay0": ["delay", "--func", "main.Lookup", "--time", "0"],
        "args": ["args", "--func", "main.Lookup", "--set", "id=2"],
    }
    chosen = [f for f in a.faults.split(",") if f]
    blade = Blade(tempfile.mkdtemp(prefix="blade-go-bench-"))
    t = start_target(bench_binary(), args=[str(a.goroutines), "calls"])
    plain, injected = [], {f: [] for f in chosen}
    try:
        # An anchor experiment keeps the session attached on both sides of the comparison, so
        # the only difference between them is the routed function.
        anchor = blade.create_return(t.pid, "main.Version", "2")
        for _ in range(a.rounds):
            plain.append(rate(t, a.seconds))
            for f in chosen:
                uid = blade.ok("create", "go", *faults[f], "--pid", t.pid)
                injected[f].append(rate(t, a.seconds))
                blade.ok("destroy", uid)
        blade.ok("destroy", anchor)
        detached = rate(t, a.seconds)
    finally:
        if not t.alive():  # a benchmark must not hide a crash of its target
            print("TARGET DIED:\n" + "\n".join(t.err_lines[:60]))
        t.stop()
    ns = lambda r: 1e9 / r  # CPU ns per call (rates are per CPU second of the target)
    rows = [("not injected (attached)", f"{median(plain):,.0f}", f"{ns(median(plain)):.2f}", "1.000")]
    for f in chosen:
        r = median(injected[f])
        rows.append((f"{f} (attached)", f"{r:,.0f}", f"{ns(r):.2f}", f"{median(plain) / r:.3f}"))
    rows.append(("not injected (detached)", f"{detached:,.0f}", f"{ns(detached):.2f}",
                 f"{median(plain) / detached:.3f}"))
    print(versions())
    print(table(("Lookup", "calls per CPU second", "CPU ns per call",
                 "ns/call vs not injected"), rows))


if __name__ == "__main__":
    main()
