"""Cost per call of an armed condition that never fires, vs the original function and vs a
delve breakpoint with a condition, side by side in one run.

8 goroutines call Lookup(id) (ids 1 and 2) in a loop. Rounds alternate: original, then each
armed experiment (created, measured, destroyed), so drift on a shared VM affects every row
alike. An anchor experiment on main.Version keeps the session attached throughout, so the
only difference between rows is the routed function. Rates are per second of the target's own
CPU time (call_overhead.rate), so other processes on a shared machine do not count as a cost of
the call. Last, blade-go's session gone, a dlv of our own attaches and sets a breakpoint on
Lookup with the condition `id == 99` (never true); that row is per second of wall time, since a
stopped target spends no CPU time while delve decides.

Issue 19 (--caller and the blast-radius table; `--group caller`): the same rounds with the
plain stub (no condition and no table: BLADE_GO_RADIUS=0) as the reference row, the table
alone (what every armed experiment now keeps), and a --caller that never matches (Lookup is
called from main.main.func1, never from main.Version), at depth 1 and 3, with and without the
table. The last column is the difference to the plain stub.
Usage: python bench/conditions_overhead.py [--rounds 3] [--seconds 2] [--goroutines 8]
       [--group conditions|caller]
"""
import argparse
import os
import tempfile
import time

from call_overhead import rate  # per second of the target's CPU time
from common import Blade, bench_binary, median, start_target, table, versions
from common import rate as wall_rate

CONFIGS = [
    ("armed --effect-percent 0", ["--effect-percent", "0"]),
    ("armed --match 'id==99' (never true)", ["--match", "id==99"]),
    ("armed --match 'id>=5 && id<=9' (never true)", ["--match", "id>=5 && id<=9"]),
    ("armed --effect-count 1 (spent)", ["--effect-count", "1"]),
]
NO_TABLE = {"BLADE_GO_RADIUS": "0"}
PLAIN = "plain stub (no condition, no table)"
CALLER_CONFIGS = [  # (name, flags, environment of the create)
    (PLAIN, [], NO_TABLE),
    ("blast-radius table alone", [], {}),
    ("--caller main.Version (never matches) + table", ["--caller", "main.Version"], {}),
    ("--caller main.Version --caller-depth 3 + table",
     ["--caller", "main.Version", "--caller-depth", "3"], {}),
    ("--caller main.Version, no table", ["--caller", "main.Version"], NO_TABLE),
    ("--caller main.Version --caller-depth 3, no table",
     ["--caller", "main.Version", "--caller-depth", "3"], NO_TABLE),
]


def delve_conditional_breakpoint(pid, seconds, target):
    from blade_go.session.delve_client import DelveClient
    from blade_go.session.launcher import launch_dlv
    log = tempfile.mktemp(prefix="blade-go-bench-dlv-", suffix=".log")
    dlv = launch_dlv(pid, log)
    c = DelveClient("127.0.0.1", dlv.port)
    try:
        c.halt()
        bp = c.call("CreateBreakpoint",
                    {"Breakpoint": {"functionName": "main.Lookup", "Cond": "id == 99"}})
        c.continue_async()
        r = wall_rate(target, seconds)
        c.halt()
        c.clear_breakpoint(bp["Breakpoint"]["id"])
        c.detach()
    finally:
        c.close()
        try:
            dlv.proc.wait(timeout=30)
        except Exception:
            dlv.kill()  # ours: never leave a dlv behind
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--goroutines", type=int, default=8)
    ap.add_argument("--group", choices=("conditions", "caller"), default="conditions")
    a = ap.parse_args()
    home = tempfile.mkdtemp(prefix="blade-go-bench-")
    blade = Blade(home)
    configs = [(n, f, {}) for n, f in CONFIGS] if a.group == "conditions" else CALLER_CONFIGS
    blades = {k: Blade(home, env=dict(env)) for k, (_, _, env) in enumerate(configs)}
    t = start_target(bench_binary(), args=[str(a.goroutines), "calls"])
    plain, armed = [], {name: [] for name, _, _ in configs}
    try:
        anchor = blade.create_return(t.pid, "main.Version", "2")
        for _ in range(a.rounds):
            plain.append(rate(t, a.seconds))
            for k, (name, flags, _) in enumerate(configs):
                uid = blades[k].create_return(t.pid, "main.Lookup", '"chaos",nil', *flags)
                armed[name].append(rate(t, a.seconds))
                blade.ok("destroy", uid)
        blade.ok("destroy", anchor)
        detached = rate(t, a.seconds)
        bp = delve_conditional_breakpoint(t.pid, a.seconds, t)
        time.sleep(1.0)
        survived = t.alive()  # see the note printed below
    except Exception:
        print("target stderr:", "\n".join(t.err_lines[:12]))
        raise
    finally:
        t.stop()
    cores = min(os.cpu_count() or 1, a.goroutines)
    ns = lambda r: 1e9 / r  # target CPU ns per call
    wall_ns = lambda r: 1e9 * cores / r  # every core busy calling
    base = ns(median(plain))
    rows = [("original (session attached)", f"{median(plain):,.0f}", f"{base:.2f}", "-",
             "1.000")]
    ref = ns(median(armed[PLAIN])) if PLAIN in armed else None
    for name, _, _ in configs:
        v = ns(median(armed[name]))
        rows.append((name, f"{median(armed[name]):,.0f}", f"{v:.2f}", f"{v - base:+.2f}",
                     f"{v / base:.3f}") + ((f"{v - ref:+.2f}",) if ref else ()))

    rows.append(("original (detached)", f"{detached:,.0f}", f"{ns(detached):.2f}",
                 f"{ns(detached) - base:+.2f}", f"{ns(detached) / base:.3f}"))
    rows.append(("delve breakpoint, Cond 'id == 99' (wall)", f"{bp:,.0f}", f"{wall_ns(bp):.0f}",
                 f"{wall_ns(bp) - base:+.0f}", f"{wall_ns(bp) / base:.0f}"))
    print(versions())
    print(f"rounds={a.rounds} seconds={a.seconds} goroutines={a.goroutines} "
          f"(medians of the rounds)")
    header = ("Lookup", "calls per target CPU second", "CPU ns per call", "ns vs original",
              "ratio") + (("ns vs plain stub",) if ref else ())
    print(table(header, [r + ("",) * (len(header) - len(r)) for r in rows]))
    print(f"target alive 1 s after our dlv cleared the breakpoint and detached: {survived}"
          " (a thread that trapped on the int3 just before the detach can get SIGTRAP)")


if __name__ == "__main__":
    main()
