"""create / destroy latency on a small binary and on a large one, side by side in one run.

Small: the bench target (bench/target). Large: a generated program of many packages with DWARF
(tests/fixtures/dwarf_bigprog/gen.py; --packages x 200 functions, ~1 MB per package) that stays
alive after start. Each create attaches a fresh dlv (the previous destroy detached it), so the
create figure includes dlv's attach, which grows with the binary; destroy includes the revert
(one stop, see Patcher.revert_in_one_stop) and the detach. bench/create_latency.py compares
against a bare dlv attach and measures the target's pauses.
Usage: python bench/create_destroy.py [--rounds 5] [--packages 60]
"""
import argparse
import os
import tempfile
import time

from common import Blade, bench_binary, generated_program, median, start_target, table, versions


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


def large_binary(packages):
    """Build (once, cached) the generated program, changed to stay alive after printing READY."""
    return generated_program("bench-bigprog", packages, lambda text: text.replace(
        '"fmt"', '"fmt"\n\t"time"', 1).replace(
        "fmt.Println(n)", 'fmt.Println("READY", n)\n\tfor {\n\t\ttime.Sleep(time.Hour)\n\t}'))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--packages", type=int, default=60, help="size of the large program (0: skip)")
    a = ap.parse_args()
    rows = []
    size, first, c, d = measure(bench_binary(), ["2", "calls"], "main.Lookup", '"x",nil',
                                a.rounds)
    rows.append(("bench target", f"{size / 1e6:.1f} MB", f"{first * 1e3:.0f}",
                 f"{c * 1e3:.0f}", f"{d * 1e3:.0f}"))
    if a.packages:
        big = large_binary(a.packages)
        size, first, c, d = measure(big, [], "bigprog/p0000.F1", '1,"x",error:down', a.rounds)
        rows.append((f"generated, {a.packages} packages", f"{size / 1e6:.1f} MB",
                     f"{first * 1e3:.0f}", f"{c * 1e3:.0f}", f"{d * 1e3:.0f}"))
    print(versions())
    print(table(("binary", "size", "create ms (each attaches dlv)", "create ms (median)",
                 "destroy ms (median, detaches)"), rows))


if __name__ == "__main__":
    main()
