"""create / destroy latency on a small binary and on the largest one at hand.

Small: the bench target. Large: a copy of the bench target linked with a big dependency tree
is not available offline, so the large case is dlv's own executable started as a target? No:
it must be a Go program we can inject into, so the large case builds the bench target with
`-gcflags=all=-l` off and... see LARGE below: by default the largest Go binary we build here.
Usage: python bench/create_destroy.py [--rounds 5] [--large PATH --large-func NAME --large-value V --large-args ...]
"""
import argparse
import os
import tempfile
import time

from common import Blade, bench_binary, median, start_target, table, versions


def measure(binary, args, func, value, rounds, ready="READY"):
    blade = Blade(tempfile.mkdtemp(prefix="blade-go-bench-"))
    t = start_target(binary, args=args, ready_line=ready)
    first_create = None
    creates, destroys = [], []
    try:
        for i in range(rounds):
            t0 = time.perf_counter()
            uid = blade.create_return(t.pid, func, value)
            t1 = time.perf_counter()
            blade.ok("destroy", uid)
            t2 = time.perf_counter()
            if i == 0:
                first_create = t1 - t0
            creates.append(t1 - t0)
            destroys.append(t2 - t1)
    finally:
        t.stop()
    return os.path.getsize(binary), first_create, median(creates), median(destroys)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--large", help="a large Go executable to start as the target")
    ap.add_argument("--large-func")
    ap.add_argument("--large-value")
    ap.add_argument("--large-args", nargs="*", default=[])
    ap.add_argument("--large-ready", default=None)
    a = ap.parse_args()
    rows = []
    size, first, c, d = measure(bench_binary(), ["2", "calls"], "main.Lookup", '"x",nil',
                                a.rounds)
    rows.append(("bench target", f"{size / 1e6:.1f} MB", f"{first * 1e3:.0f}",
                 f"{c * 1e3:.0f}", f"{d * 1e3:.0f}"))
    if a.large:
        size, first, c, d = measure(a.large, a.large_args, a.large_func, a.large_value,
                                    a.rounds, ready=a.large_ready)
        rows.append((os.path.basename(a.large), f"{size / 1e6:.1f} MB", f"{first * 1e3:.0f}",
                     f"{c * 1e3:.0f}", f"{d * 1e3:.0f}"))
    print(versions())
    print(table(("binary", "size", "create ms (each attaches dlv)", "create ms (median)",
                 "destroy ms (median, detaches)"), rows))


if __name__ == "__main__":
    main()
