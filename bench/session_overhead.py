"""Throughput of unrelated work in the target while a session is attached vs detached.

While an experiment is active, dlv stays attached (ptrace): every signal the Go runtime receives
(e.g. SIGURG preemption requests) stops the target once, and dlv turns async preemption off.
This measures what that costs work that has nothing to do with the injected function.
Usage: python bench/session_overhead.py [--rounds 3] [--seconds 3] [--goroutines 4]
"""
import argparse
import tempfile

from common import Blade, bench_binary, median, rate, start_target, table, versions


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--goroutines", type=int, default=4)
    a = ap.parse_args()
    blade = Blade(tempfile.mkdtemp(prefix="blade-go-bench-"))
    t = start_target(bench_binary(), args=[str(a.goroutines), "work"])
    detached, attached = [], []
    try:
        for _ in range(a.rounds):
            detached.append(rate(t, a.seconds))
            uid = blade.create_return(t.pid, "main.Version", "2")
            attached.append(rate(t, a.seconds))
            blade.ok("destroy", uid)
    finally:
        t.stop()
    d, at = median(detached), median(attached)
    print(versions())
    print(table(("session", "work units/s (median)", "runs"),
                [("detached", f"{d:,.0f}", ", ".join(f"{x:,.0f}" for x in detached)),
                 ("attached (experiment active)", f"{at:,.0f}",
                  ", ".join(f"{x:,.0f}" for x in attached))]))
    print(f"ratio attached/detached throughput: {at / d:.3f}")


if __name__ == "__main__":
    main()
