"""The pause at the first attach: stock vs patched dlv, side by side in one run.

A stock dlv 1.27.2 stops every thread of the target while it loads the executable
(`native.Attach` calls ptraceAttach first); the build blade-go's install makes
(build/delve/build.sh: the patch series in build/delve/patches) loads it before it stops the
process. Both are built from the same module source by the same Go. Per target, each round
runs, for each dlv in turn (the order alternates every round, so contention on a shared host
hits both alike):

  bare     `dlv attach PID --headless ...` until its first answer (GetVersion), then Detach:
           the time to that answer and the longest round trip a client of the target saw;
  create   `blade-go create go return` on the unattached process (supervisor + dlv attach +
           apply): its latency, the longest client round trip during it, and the pause the
           create itself reported (`target_paused`: the attach, any thread stopped and all
           stopped, sampled; the total with its halts);
  destroy  its `destroy` (restore, detach): latency and the longest client round trip.
dlv's peak RSS (VmHWM) is read while the experiment is active.

The client: the echo programs of create_latency.py (--packages: 2, 300 and 450 packages give
3.8, 68 and 100 MB) answer a 1-byte loopback echo; a loop sends one byte and waits for it back,
every millisecond, for the whole run. --server BINARY runs a real HTTP server instead (e.g.
Caddy: `--server caddy --server-args 'respond --listen 127.0.0.1:{port} hi' --func F`), probed
by an HTTP/1.1 keep-alive client doing GET / in a loop.

Usage: python bench/attach_pause.py [--packages 2,300,450] [--rounds 5]
           [--server PATH --server-args ARGS --func F --value V]
"""
import argparse
import http.client
import json
import os
import shlex
import socket
import tempfile
import threading
import time

from common import Blade, median, start_target, table
from create_latency import FUNC, VALUE, PauseProbe, echo_program, rss_kb


class HttpProbe(PauseProbe):
    """PauseProbe over HTTP/1.1 keep-alive: GET / in a loop, one request at a time."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.samples = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            t0 = time.perf_counter()
            self.conn.request("GET", "/")
            self.conn.getresponse().read()
            self.samples.append((t0, time.perf_counter() - t0))
            time.sleep(0.001)

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.conn.close()


def bare_attach(dlv: str, pid: int) -> float:
    """Seconds from spawning dlv to its first answer (GetVersion); then a clean detach. No
    deadline short of 10 minutes: a stock attach of 100 MB on a busy host takes tens of s."""
    import re
    import subprocess
    from blade_go.session.delve_client import DelveClient
    log = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen([dlv, "attach", str(pid), "--headless", "--accept-multiclient",
                             "--api-version=2", "--check-go-version=false",
                             "--listen=127.0.0.1:0"], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    try:
        while True:
            log.seek(0)
            m = re.search(rb"listening at:\s*\S+:(\d+)", log.read())
            if m:
                break
            if proc.poll() is not None:
                raise RuntimeError("dlv exited")
            time.sleep(0.005)
        client = DelveClient("127.0.0.1", int(m.group(1)), timeout=600)
        client.get_version()
        elapsed = time.perf_counter() - t0
        client.halt(timeout=60)
        client.detach(kill=False, timeout=60)
        client.close()
        proc.wait(60)
        return elapsed
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(60)


def dlv_pid_of(target_pid: int) -> int | None:
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                cmd = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"dlv") and b"attach" in cmd and str(target_pid).encode() in cmd:
                return int(p)
    return None


def measure(target, probe, dlvs: dict, rounds: int, func: str, value: str) -> dict:
    res = {(k, m): [] for k in dlvs for m in (
        "bare", "bare_pause", "create", "create_pause", "reported_attach", "reported_all",
        "reported_total",
        "destroy", "destroy_pause", "dlv_rss")}
    for r in range(rounds):
        order = list(dlvs.items()) if r % 2 == 0 else list(reversed(dlvs.items()))
        for kind, dlv in order:
            t0 = time.perf_counter()
            res[(kind, "bare")].append(bare_attach(dlv, target.pid))
            res[(kind, "bare_pause")].append(probe.worst(t0, time.perf_counter()))
            time.sleep(0.3)
            home = tempfile.mkdtemp(prefix="blade-go-bench-")
            blade = Blade(home, env={"BLADE_GO_DLV": dlv})
            t0 = time.perf_counter()
            code, resp = blade.run("create", "go", "return", "--pid", target.pid, "--func", func,
                                   "--value", value, timeout=600)
            t1 = time.perf_counter()
            assert code == 0, resp
            dp = dlv_pid_of(target.pid)
            res[(kind, "dlv_rss")].append(rss_kb(dp) if dp else 0)
            paused = resp.get("target_paused") or {}
            time.sleep(0.3)
            t2 = time.perf_counter()
            blade.ok("destroy", resp["result"], timeout=600)
            t3 = time.perf_counter()
            for m, v in (("create", t1 - t0), ("create_pause", probe.worst(t0, t1)),
                         ("reported_attach", (paused.get("attach_ms") or 0) / 1e3),
                         ("reported_all", (paused.get("attach_all_stopped_ms") or 0) / 1e3),
                         ("reported_total", (paused.get("total_ms") or 0) / 1e3),
                         ("destroy", t3 - t2), ("destroy_pause", probe.worst(t2, t3))):
                res[(kind, m)].append(v)
            time.sleep(0.3)
    return res


def rows_for(label: str, size: int, res: dict, dlvs: dict) -> list:
    ms = lambda xs: f"{median(xs) * 1e3:.0f}"  # noqa: E731
    mx = lambda xs: f"{max(xs) * 1e3:.0f}"  # noqa: E731
    out = []
    for kind in dlvs:
        g = lambda m: res[(kind, m)]  # noqa: E731
        out.append((label, f"{size / 1e6:.1f}", kind, ms(g("bare")), ms(g("bare_pause")),
                    ms(g("create")), f"{ms(g('create_pause'))} / {mx(g('create_pause'))}",
                    f"{ms(g('reported_attach'))} / {ms(g('reported_all'))} / "
                    f"{ms(g('reported_total'))}",
                    f"{ms(g('destroy_pause'))} / {mx(g('destroy_pause'))}",
                    f"{median(g('dlv_rss')) / 1024:.0f}"))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--packages", default="2,300,450")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--server", help="a real server binary instead of the echo programs")
    ap.add_argument("--server-args", default="", help="its arguments; {port} is replaced")
    ap.add_argument("--func", default=FUNC)
    ap.add_argument("--value", default=VALUE)
    a = ap.parse_args()
    import subprocess
    from tests.support.toolchains import go_toolchain, stock_dlv_path
    from blade_go.session import dlvinfo
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    patched = subprocess.run(["bash", os.path.join(root, "build", "delve", "build.sh")],
                             capture_output=True, text=True, check=True).stdout.strip()
    stock = stock_dlv_path() or subprocess.run(
        ["bash", os.path.join(root, "build", "delve", "build.sh"), "--stock"],
        capture_output=True, text=True, check=True).stdout.strip()
    dlvs = {"stock": stock, "patched": patched}
    rows = []
    if a.server:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        args = shlex.split(a.server_args.replace("{port}", str(port)))
        targets = [(os.path.basename(a.server), a.server, args, port)]
    else:
        targets = [(f"echo {n} pkgs", str(echo_program(int(n))), [], None)
                   for n in a.packages.split(",")]
    for label, binary, args, port in targets:
        t = start_target(binary, args=args, ready_line=None if port else "READY")
        try:
            if port:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        socket.create_connection(("127.0.0.1", port), 1).close()
                        break
                    except OSError:
                        assert time.monotonic() < deadline, t.describe()
                        time.sleep(0.1)
                probe = HttpProbe(port)
            else:
                probe = PauseProbe(int(t.wait_for_line(r"^READY ", since=0).split()[2]))
            try:
                res = measure(t, probe, dlvs, a.rounds, a.func, a.value)
            finally:
                probe.close()
        finally:
            t.stop()
        rows += rows_for(label, os.path.getsize(binary), res, dlvs)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")), "?")
    print(json.dumps({"go": go_toolchain("go-default").version, "cpu": f"{cpu} x{os.cpu_count()}",
                      "loadavg_end": open("/proc/loadavg").read().split()[:3],
                      **{k: {f: dlvinfo.describe(v)[f] for f in ("version", "build")}
                         for k, v in dlvs.items()}}), f"rounds={a.rounds}")
    print(table(("target", "MB", "dlv", "bare: first answer ms", "bare: max pause ms",
                 "create ms", "create: max pause ms (median / worst)",
                 "create reported: attach / all stopped / total ms", "destroy: max pause ms (median / worst)",
                 "dlv peak RSS MB"), rows))


if __name__ == "__main__":
    main()
