"""How precisely `delay --time T` delays each call, and what other goroutines notice.

1. idle target (faults_target repl): N sequential calls of main.Work, each timed inside the
   target (time.Now around the call); excess over T: min/median/p95/max.
2. loaded target (faults_target "load": 8 goroutines calling Work, GOGC=1, forced GCs every
   5 ms, stack growth after the delay point): per-500 ms-window min/max call durations and the
   largest gap of a 50 ms ticker, over W windows.
Usage: python bench/delay_accuracy.py [--time 200] [--calls 50] [--windows 10]
"""
import argparse
import os
import re
import statistics
import tempfile

from common import Blade, start_target, table, versions
from tests.support.fixtures import build_fixture


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--time", type=int, default=200)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--windows", type=int, default=10)
    a = ap.parse_args()
    blade = Blade(tempfile.mkdtemp(prefix="blade-go-bench-"))
    binary = build_fixture("faults_target")
    rows = []
    t = start_target(binary)
    try:
        uid = blade.ok("create", "go", "delay", "--pid", t.pid, "--func", "main.Work",
                       "--time", a.time)
        excess = []
        for _ in range(a.calls):
            mark = t.mark()
            t.send_line("call Work")
            line = t.wait_for_line(r"^Work => ", since=mark, timeout=20)
            excess.append(float(re.search(r"ms=([\d.]+)", line).group(1)) - a.time)
        blade.ok("destroy", uid)
    finally:
        t.stop()
    rows.append(("idle, sequential calls", a.calls, f"{min(excess):.3f}",
                 f"{statistics.median(excess):.3f}", f"{pct(excess, 0.95):.3f}",
                 f"{max(excess):.3f}", "-"))
    t = start_target(binary, args=["load"], env=dict(os.environ, GOGC="1"))
    try:
        t.wait_for_line(r"^STAT ", timeout=20)
        uid = blade.ok("create", "go", "delay", "--pid", t.pid, "--func", "main.Work",
                       "--time", a.time)
        mark = t.mark()
        t.wait_for_line(r"^STAT ", since=mark, timeout=20)  # the window it landed in
        wins = []
        while len(wins) < a.windows:
            mark = t.mark()
            line = t.wait_for_line(r"^STAT ", since=mark, timeout=20)
            wins.append({k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)})
        blade.ok("destroy", uid)
    finally:
        t.stop()
    mins = [w["min"] - a.time for w in wins]
    maxs = [w["max"] - a.time for w in wins]
    rows.append(("8 goroutines, GOGC=1, forced GCs", int(sum(w["calls"] for w in wins)),
                 f"{min(mins):.3f}", f"{statistics.median(maxs):.3f} (window max)",
                 "-", f"{max(maxs):.3f}", f"{max(w['tick_max'] for w in wins):.1f}"))
    print(versions())
    print(table(("delay " + str(a.time) + " ms", "calls", "excess min (ms)", "excess median",
                 "p95", "excess max", "50 ms ticker max gap (ms)"), rows))


if __name__ == "__main__":
    main()
