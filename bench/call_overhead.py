"""ns per call of an injected vs a not injected function, side by side in one run.

8 goroutines call Lookup in a loop; the rate is read before, during and after a `return`
experiment on it, alternating several times so drift on a shared VM affects both sides alike.
Usage: python bench/call_overhead.py [--rounds 3] [--seconds 2] [--goroutines 8]
"""
import argparse
import os
import tempfile

from common import Blade, bench_binary, median, rate, start_target, table, versions


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--goroutines", type=int, default=8)
    a = ap.parse_args()
    blade = Blade(tempfile.mkdtemp(prefix="blade-go-bench-"))
    t = start_target(bench_binary(), args=[str(a.goroutines), "calls"])
    plain, injected = [], []
    try:
        # An anchor experiment keeps the session attached on both sides of the comparison, so
        # the only difference between them is the routed function.
        anchor = blade.create_return(t.pid, "main.Version", "2")
        for _ in range(a.rounds):
            plain.append(rate(t, a.seconds))
            uid = blade.create_return(t.pid, "main.Lookup", '"chaos",nil')
            injected.append(rate(t, a.seconds))
            blade.ok("destroy", uid)
        blade.ok("destroy", anchor)
        detached = rate(t, a.seconds)
    finally:
        t.stop()
    cores = min(os.cpu_count() or 1, a.goroutines)
    ns = lambda r: 1e9 * cores / r  # CPU ns per call: every core is busy calling
    rows = [("not injected (attached)", f"{median(plain):,.0f}", f"{ns(median(plain)):.2f}"),
            ("injected (attached)", f"{median(injected):,.0f}", f"{ns(median(injected)):.2f}"),
            ("not injected (detached)", f"{detached:,.0f}", f"{ns(detached):.2f}")]
    print(versions())
    print(table(("Lookup", "calls/s (all goroutines)", "CPU ns per call"), rows))
    print(f"ratio injected/not injected (ns per call): {median(plain) / median(injected):.3f}")


if __name__ == "__main__":
    main()
