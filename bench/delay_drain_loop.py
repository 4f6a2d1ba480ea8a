"""delay destroyed while 8 goroutines sleep in it, N cycles on one live target under load.

The load target (tests/fixtures/faults_target "load": 8 goroutines calling main.Work, GOGC=1,
forced GCs every 5 ms, stack growth after the delay point, results checked by the program)
gets `delay --time T` on main.Work; after W seconds (every worker asleep inside the delay) the
experiment is destroyed, which disarms, drains and restores. After each cycle the target must
be alive, print no BAD line and keep calling at full speed; at the end .text must equal the
file. Prints the drain figures.
Usage: python bench/delay_drain_loop.py [--cycles 100] [--time 300] [--wait 0.5]
"""
import argparse
import re
import statistics
import tempfile
import time

from common import Blade, start_target, table, versions
from tests.support.fixtures import build_fixture
from tests.support.targets import text_differences


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--time", type=int, default=300)
    ap.add_argument("--wait", type=float, default=0.5)
    a = ap.parse_args()
    blade = Blade(tempfile.mkdtemp(prefix="blade-go-bench-"))
    import os
    t = start_target(build_fixture("faults_target"), args=["load"],
                     env=dict(os.environ, GOGC="1"))
    drains, waited, t0 = [], [], time.monotonic()
    try:
        for cycle in range(a.cycles):
            uid = blade.ok("create", "go", "delay", "--pid", t.pid, "--func", "main.Work",
                           "--time", a.time)
            time.sleep(a.wait)
            r = blade.ok("destroy", uid)["restored"]
            drains.append(r["drain_ms"])
            waited.append(r["drain_waited_for"])
            mark = t.mark()
            line = t.wait_for_line(r"^STAT ", since=mark, timeout=10)
            calls = int(re.search(r"calls=(\d+)", line).group(1))
            bad = [ln for ln in t.lines if ln.startswith("BAD")]
            if bad or not t.alive() or calls == 0:
                raise SystemExit(f"cycle {cycle}: alive={t.alive()} calls={calls} bad={bad[:1]}")
        diff = text_differences(t.pid)
        alive = t.alive()
    finally:
        t.stop()
    print(versions())
    rows = [("cycles", a.cycles), ("delay (ms)", a.time), ("target alive at the end", alive),
            (".text differences at the end", len(diff)),
            ("goroutines inside at destroy (min/median/max)",
             f"{min(waited)}/{statistics.median(waited):.0f}/{max(waited)}"),
            ("drain ms (min/median/max)",
             f"{min(drains):.0f}/{statistics.median(drains):.0f}/{max(drains):.0f}"),
            ("total seconds", f"{time.monotonic() - t0:.0f}")]
    print(table(("delay destroy while sleeping", "value"), rows))


if __name__ == "__main__":
    main()
