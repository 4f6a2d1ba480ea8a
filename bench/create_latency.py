"""create / destroy latency against a bare `dlv attach`, and the longest pause a client of the
target sees, on a small and a large binary, side by side in one run.

Targets: the generated program of tests/fixtures/dwarf_bigprog (PACKAGES x 200 functions, with
DWARF), changed to stay alive and to answer a loopback TCP echo: a client thread sends one byte
and waits for it back, in a loop, for the whole run; the longest round trip inside a window is
the longest time the target did not answer (every thread stopped by ptrace, for instance).

Per round, alternating:
  bare      `dlv attach PID --headless ...` until it answers GetVersion; then Detach.
  create    `blade-go create go return` (fresh session: supervisor + dlv attach), per mode.
  create2   a second experiment on the already attached process.
  destroy2  destroy of the second (the session stays attached).
  destroy   destroy of the first (the last: restores and detaches).
Medians over the rounds; ratios are create / bare of the same rounds. Peak RSS (VmHWM) of the
supervisor, its fork server and dlv is read while both experiments are active.

Modes (--modes, each round runs every mode in turn): `fork`, as shipped (the second create is
handed to the supervisor's warm fork server, session/forkserver.py); `fork-S`, the same with
the client started as chaosblade's dispatcher starts it (`python -S -m blade_go`: no site
.pth hooks before the hand-over); `cold`, with BLADE_GO_FORKSERVER=0 (no fork server: every
create is a fresh process). --gap seconds pass, untimed, between the first create and the
second (a fork server is ready a few hundred ms after the attach).

Usage: python bench/create_latency.py [--rounds 5] [--small 2] [--large 300]
           [--modes fork,fork-S,cold] [--gap 1.0]
"""
import argparse
import os
import re
import socket
import subprocess
import tempfile
import threading
import time

from common import Blade, generated_program, median, start_target, table, versions

FUNC, FUNC2 = "bigprog/p0000.F1", "bigprog/p0000.F2"
VALUE = '1,"x",error:down'
ECHO_MAIN = '''
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Println("READY", n, ln.Addr().(*net.TCPAddr).Port)
	for {
		c, err := ln.Accept()
		if err != nil {
			continue
		}
		go func(c net.Conn) {
			b := make([]byte, 1)
			for {
				if _, err := c.Read(b); err != nil {
					return
				}
				c.Write(b)
			}
		}(c)
	}
'''


def echo_program(packages: int):
    """Build (once, cached) the generated program with the echo server in main."""
    return generated_program("bench-echo-bigprog", packages, lambda text: text.replace(
        '"fmt"', '"fmt"\n\t"net"', 1).replace("\tfmt.Println(n)\n", ECHO_MAIN))


class PauseProbe:
    """A client of the target's echo port; records (send time, round trip) forever."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.samples = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            t0 = time.perf_counter()
            self.sock.sendall(b"x")
            self.sock.recv(1)
            t1 = time.perf_counter()
            self.samples.append((t0, t1 - t0))
            time.sleep(0.001)

    def worst(self, start: float, end: float) -> float:
        """Longest round trip of a request in flight at any point of [start, end]."""
        return max((rtt for t0, rtt in self.samples if t0 + rtt >= start and t0 <= end),
                   default=0.0)

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def bare_attach(dlv: str, pid: int) -> float:
    """Seconds from spawning dlv to its first answer (GetVersion); then a clean detach."""
    from blade_go.session.delve_client import DelveClient
    log = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen([dlv, "attach", str(pid), "--headless", "--accept-multiclient",
                             "--api-version=2", "--check-go-version=false",
                             "--listen=127.0.0.1:0"], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    port = None
    while port is None:
        log.seek(0)
        m = re.search(rb"listening at:\s*\S+:(\d+)", log.read())
        if m:
            port = int(m.group(1))
        elif proc.poll() is not None:
            raise RuntimeError("dlv exited")
        else:
            time.sleep(0.005)
    client = DelveClient("127.0.0.1", port)
    client.get_version()
    elapsed = time.perf_counter() - t0
    client.halt(timeout=10)
    client.detach(kill=False, timeout=10)
    client.close()
    proc.wait(10)
    return elapsed


def rss_kb(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def private_kb(pid: int) -> int:
    """Memory of pid's own (anonymous and private file pages), now: what it costs the host
    beyond the page cache and the libraries it shares."""
    try:
        return sum(int(line.split()[1]) for line in open(f"/proc/{pid}/smaps_rollup")
                   if line.startswith(("Private_Clean:", "Private_Dirty:")))
    except OSError:
        return 0


def session_rss(home: str, pid: int):
    """(supervisor, fork server, dlv) peak RSS KB of the session attached to pid, and the fork
    server's private KB now."""
    sup = fork = dlv = fork_private = 0
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            cmd = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"blade_go.session.supervisor" in cmd and home.encode() in cmd:
            sup = rss_kb(int(p))
        elif b"blade_go.session.forkserver" in cmd and home.encode() in cmd:
            fork, fork_private = rss_kb(int(p)), private_kb(int(p))
        elif cmd and cmd[0].endswith(b"dlv") and b"attach" in cmd and str(pid).encode() in cmd:
            dlv = rss_kb(int(p))
    return sup, fork, dlv, fork_private


MODE_ENV = {"fork": {}, "fork-S": {}, "cold": {"BLADE_GO_FORKSERVER": "0"}}
# fork-S: the client started as chaosblade's dispatcher starts it, `python -S -m blade_go`
MODE_OPTS = {"fork-S": ["-S"]}


def measure(binary, rounds, modes, dlv, gap):
    t = start_target(binary, ready_line="READY")
    port = int(t.wait_for_line(r"^READY ", since=0).split()[2])
    probe = PauseProbe(port)
    res = {k: [] for k in ["bare", "bare_pause"]}
    for m in modes:
        for k in ("create", "create2", "destroy2", "destroy", "pause_create", "pause_destroy",
                  "sup_rss", "fork_rss", "dlv_rss", "fork_private"):
            res[f"{m}:{k}"] = []
    try:
        for r in range(rounds):
            t0 = time.perf_counter()
            res["bare"].append(bare_attach(dlv, t.pid))
            res["bare_pause"].append(probe.worst(t0, time.perf_counter()))
            for m in modes:
                home = tempfile.mkdtemp(prefix="blade-go-bench-")
                blade = Blade(home, env=MODE_ENV[m], python_opts=MODE_OPTS.get(m, ()))
                t0 = time.perf_counter()
                uid = blade.create_return(t.pid, FUNC, VALUE)
                t1 = time.perf_counter()
                time.sleep(gap)
                t1g = time.perf_counter()
                uid2 = blade.create_return(t.pid, FUNC2, VALUE)
                t2 = time.perf_counter()
                sup, fork, dl, fork_private = session_rss(home, t.pid)
                blade.ok("destroy", uid2)
                t3 = time.perf_counter()
                blade.ok("destroy", uid)
                t4 = time.perf_counter()
                for k, v in (("create", t1 - t0), ("create2", t2 - t1g), ("destroy2", t3 - t2),
                             ("destroy", t4 - t3), ("pause_create", probe.worst(t0, t1)),
                             ("pause_destroy", probe.worst(t2, t4)), ("sup_rss", sup),
                             ("fork_rss", fork), ("dlv_rss", dl),
                             ("fork_private", fork_private)):
                    res[f"{m}:{k}"].append(v)
    finally:
        probe.close()
        t.stop()
    return os.path.getsize(binary), res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--small", type=int, default=2, help="packages of the small program")
    ap.add_argument("--large", type=int, default=300, help="packages of the large one (0: skip)")
    ap.add_argument("--modes", default="fork,cold")
    ap.add_argument("--gap", type=float, default=1.0)
    a = ap.parse_args()
    from tests.support.toolchains import require_dlv
    dlv = require_dlv()
    modes = a.modes.split(",")
    rows, mem = [], []
    for packages in [p for p in (a.small, a.large) if p]:
        size, res = measure(echo_program(packages), a.rounds, modes, dlv, a.gap)
        ms = lambda k: median(res[k]) * 1e3
        bare = ms("bare")
        rows.append((f"{size / 1e6:.1f} MB", "bare dlv attach", f"{bare:.0f}", "1.00", "", "",
                     "", f"{ms('bare_pause'):.0f}", ""))
        for m in modes:
            rows.append((f"{size / 1e6:.1f} MB", f"blade-go ({m})", f"{ms(m + ':create'):.0f}",
                         f"{ms(m + ':create') / bare:.2f}", f"{ms(m + ':create2'):.0f}",
                         f"{ms(m + ':destroy2'):.0f}", f"{ms(m + ':destroy'):.0f}",
                         f"{ms(m + ':pause_create'):.0f}", f"{ms(m + ':pause_destroy'):.0f}"))
            mem.append((f"{size / 1e6:.1f} MB", m, f"{median(res[m + ':sup_rss']) / 1024:.0f}",
                        f"{median(res[m + ':fork_rss']) / 1024:.0f}",
                        f"{median(res[m + ':fork_private']) / 1024:.0f}",
                        f"{median(res[m + ':dlv_rss']) / 1024:.0f}"))
    print(versions(), f"rounds={a.rounds} gap={a.gap}s")
    print(table(("binary", "who", "create/attach ms", "x bare", "2nd create ms",
                 "destroy (attached) ms", "destroy last ms", "max pause create ms",
                 "max pause destroy ms"), rows))
    print()
    print(table(("binary", "mode", "supervisor peak RSS MB", "fork server peak RSS MB",
                 "fork server private MB", "dlv peak RSS MB"), mem))


if __name__ == "__main__":
    main()
