"""Does `dlv attach PID EXE` with a debug-less EXE shorten the target's pause at attach?

Attaches the pinned dlv to the large echo program of create_latency.py, alternating: no EXE
(dlv reads /proc/PID/exe), a copy made by `objcopy --strip-debug`, and an unrelated small Go
binary. Prints the time to dlv's first answer, the longest echo round trip meanwhile, the
function dlv names for the first thread, and whether dlv said "no debug info".
Usage: python bench/dlv_exe_path.py [--packages 300] [--rounds 2]
"""
import argparse
import os
import re
import subprocess
import tempfile
import time

from common import table
from create_latency import PauseProbe, echo_program


def attach_once(dlv, pid, extra, probe):
    from blade_go.session.delve_client import DelveClient
    log = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    p = subprocess.Popen([dlv, "attach", str(pid)] + extra + [
        "--headless", "--accept-multiclient", "--api-version=2", "--check-go-version=false",
        "--listen=127.0.0.1:0"], stdout=log, stderr=log)
    while True:
        log.seek(0)
        m = re.search(rb"listening at:\s*\S+:(\d+)", log.read())
        if m:
            break
        time.sleep(0.005)
    c = DelveClient("127.0.0.1", int(m.group(1)))
    c.get_version()
    t1 = time.perf_counter()
    c.halt()
    fn = (c.list_threads()[0].get("function") or {}).get("name")
    c.detach(kill=False)
    c.close()
    p.wait()
    log.seek(0)
    return t1 - t0, probe.worst(t0, t1), fn, b"no debug info" in log.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--packages", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    from tests.support.fixtures import build_fixture
    from tests.support.targets import start_target
    from tests.support.toolchains import require_dlv
    dlv = require_dlv()
    big = echo_program(a.packages)
    other = str(build_fixture("hello"))
    copy = tempfile.mktemp(prefix="nodebug-")
    subprocess.run(["objcopy", "--strip-debug", str(big), copy], check=True)
    t = start_target(big, ready_line="READY")
    probe = PauseProbe(int(t.wait_for_line(r"^READY ", since=0).split()[2]))
    rows = []
    try:
        for _ in range(a.rounds):
            for label, extra in (("none (/proc/PID/exe)", []), ("objcopy --strip-debug", [copy]),
                                 ("hello (unrelated)", [other])):
                ans, pause, fn, nodebug = attach_once(dlv, t.pid, extra, probe)
                rows.append((label, f"{ans * 1e3:.0f}", f"{pause * 1e3:.0f}", fn, nodebug))
    finally:
        probe.close()
        t.stop()
        os.unlink(copy)
    print(f"{os.path.getsize(big) / 1e6:.1f} MB target")
    print(table(("EXE given", "first answer ms", "max pause ms", "thread 1 function",
                 "said 'no debug info'"), rows))


if __name__ == "__main__":
    main()
