"""What dlv's memory is made of, and whether GOGC in its environment is a cheap win.

dlv holds 193-286 MB RSS on the 68-100 MB echo programs (docs/BENCHMARKS.md). For each
GOGC value (alternating, per round) this attaches the patched dlv (build/delve/build.sh) to the
echo program, waits for its first answer, then does what a blade-go session does (halt, list
threads and goroutines, continue) and reads dlv's peak RSS (VmHWM), its RSS 3 s later (VmRSS,
after the Go scavenger returned what it would), and the longest echo round trip during the
attach (with the patched dlv the load runs before the stop, so a slower load costs the target
nothing). Usage: python bench/dlv_memory.py [--packages 450] [--rounds 3] [--gogc 100,50,25]
"""
import argparse
import os
import re
import subprocess
import tempfile
import time

from common import median, start_target, table
from create_latency import PauseProbe, echo_program


def status_kb(pid: int, field: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def attach(dlv, pid, gogc, probe):
    from blade_go.session.delve_client import DelveClient
    log = tempfile.TemporaryFile()
    env = dict(os.environ, GOGC=str(gogc))
    t0 = time.perf_counter()
    p = subprocess.Popen([dlv, "attach", str(pid), "--headless", "--accept-multiclient",
                          "--api-version=2", "--check-go-version=false", "--listen=127.0.0.1:0"],
                         stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
    while True:
        log.seek(0)
        m = re.search(rb"listening at:\s*\S+:(\d+)", log.read())
        if m:
            break
        time.sleep(0.005)
    c = DelveClient("127.0.0.1", int(m.group(1)), timeout=300)
    c.call("GetVersion", timeout=300)
    answer = time.perf_counter() - t0
    pause = probe.worst(t0, time.perf_counter())
    c.list_threads()
    c.list_goroutines()
    c.continue_async()
    hwm = status_kb(p.pid, "VmHWM")
    time.sleep(3)
    rss = status_kb(p.pid, "VmRSS")
    c.halt(timeout=30)
    c.detach(kill=False, timeout=30)
    c.close()
    p.wait(30)
    return answer, pause, hwm, rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--packages", type=int, default=450)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gogc", default="100,50,25")
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    dlv = subprocess.run(["bash", os.path.join(root, "build", "delve", "build.sh")],
                         capture_output=True, text=True, check=True).stdout.strip()
    binary = echo_program(a.packages)
    t = start_target(binary, ready_line="READY")
    probe = PauseProbe(int(t.wait_for_line(r"^READY ", since=0).split()[2]))
    values = a.gogc.split(",")
    res = {g: [] for g in values}
    try:
        for r in range(a.rounds):
            for g in (values if r % 2 == 0 else list(reversed(values))):
                res[g].append(attach(dlv, t.pid, g, probe))
                time.sleep(0.5)
    finally:
        probe.close()
        t.stop()
    rows = []
    for g, xs in res.items():
        rows.append((f"{os.path.getsize(binary) / 1e6:.1f} MB", g,
                     f"{median([x[0] for x in xs]) * 1e3:.0f}",
                     f"{median([x[1] for x in xs]) * 1e3:.0f}",
                     f"{median([x[2] for x in xs]) / 1024:.0f}",
                     f"{median([x[3] for x in xs]) / 1024:.0f}"))
    print(f"dlv {dlv} rounds={a.rounds} loadavg {open('/proc/loadavg').read().split()[:3]}")
    print(table(("binary", "GOGC", "first answer ms", "max pause ms", "dlv peak RSS MB",
                 "dlv RSS 3 s later MB"), rows))


if __name__ == "__main__":
    main()
