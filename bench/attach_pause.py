"""How much of the target's pause at `dlv attach` is dlv loading the binary's DWARF?

dlv 1.27's native backend loads /proc/PID/exe's debug info after it has stopped every thread
(bench/dlv_exe_path.py, docs/BENCHMARKS.md), so that load is part of the pause a client sees.
This runs the same echo program twice, from its file as built and from an
`objcopy --strip-debug` copy (same code, symbols and pclntab, no .debug_*), and attaches the
pinned dlv to each in turn, alternating: the difference is the DWARF load; what is left is
the floor of any attach (ptrace-stopping the threads, reading symbols and pclntab).
Prints, per file: dlv's first answer and the longest echo round trip meanwhile.
Usage: python bench/attach_pause.py [--packages 300,450] [--rounds 5]
"""
import argparse
import os
import subprocess
import tempfile
import time

from common import median, start_target, table, versions
from create_latency import PauseProbe, bare_attach, echo_program


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--packages", default="300,450")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    from tests.support.toolchains import require_dlv
    dlv = require_dlv()
    rows = []
    for packages in map(int, a.packages.split(",")):
        big = echo_program(packages)
        copy = tempfile.mktemp(prefix="nodebug-")
        subprocess.run(["objcopy", "--strip-debug", str(big), copy], check=True)
        os.chmod(copy, 0o755)
        targets = {}
        try:
            for label, path in (("with DWARF", str(big)), ("--strip-debug copy", copy)):
                t = start_target(path, ready_line="READY")
                port = int(t.wait_for_line(r"^READY ", since=0).split()[2])
                targets[label] = (t, PauseProbe(port), [], [])
            for _ in range(a.rounds):
                for label, (t, probe, answers, pauses) in targets.items():
                    t0 = time.perf_counter()
                    answers.append(bare_attach(dlv, t.pid))
                    pauses.append(probe.worst(t0, time.perf_counter()))
                    time.sleep(0.3)
            for label, (t, probe, answers, pauses) in targets.items():
                path = str(big) if label == "with DWARF" else copy
                rows.append((f"{os.path.getsize(big) / 1e6:.1f} MB", label,
                             f"{os.path.getsize(path) / 1e6:.1f}", f"{median(answers) * 1e3:.0f}",
                             f"{median(pauses) * 1e3:.0f}", f"{max(pauses) * 1e3:.0f}"))
        finally:
            for t, probe, _, _ in targets.values():
                probe.close()
                t.stop()
            os.unlink(copy)
    print(versions(), f"rounds={a.rounds}")
    print(table(("program", "file run", "file MB", "dlv first answer ms (median)",
                 "max pause ms (median)", "max pause ms (worst)"), rows))


if __name__ == "__main__":
    main()
