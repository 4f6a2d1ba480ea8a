"""The agent inside blade-go's arm64 VM: runs what the host asks, on the serial console.

tests/support/arm64vm.py boots the VM with this repository at /repo and /job/run starting
`python3 /repo/tests/support/arm64vm_guest.py`, its terminal the serial console. The agent
puts the console in raw mode, prints `ARM64VM-READY <facts>` and then answers one request per
line:

    host:   CALL 7 <base64 of {"fn": "blade", "kw": {"args": ["status", "5f3c..."]}}>
    guest:  RESULT 7 <base64 of {"ok": true, "value": [0, {...}], "seconds": 3.2}>

until `QUIT`. The functions below are small observations (start a target, make it call a
function, run the real blade-go CLI, compare /proc/PID/mem with the file, list processes):
the host's tests compose them and make every assertion, as the amd64 e2e tests do.
"""
import base64
import json
import os
import platform
import subprocess
import sys
import termios
import time
import traceback
import tty
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.blade import Blade  # noqa: E402
from tests.support import targets as _targets  # noqa: E402

DLV = os.environ.get("BLADE_GO_DLV", "/opt/blade-go/bin/dlv")
HOME = "/tmp/blade-go-home"
_running = {}  # handle -> RunningTarget


def facts():
    """What the VM is: architecture, kernel, CPU, Python and library versions, dlv's."""
    import capstone
    import elftools
    cpu = Path("/proc/cpuinfo").read_text()
    dlv = subprocess.run([DLV, "version"], capture_output=True, text=True, timeout=120)
    return {"machine": platform.machine(), "kernel": platform.release(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "capstone": capstone.__version__, "pyelftools": elftools.__version__,
            "cpu_features": next((ln.split(":", 1)[1].split() for ln in cpu.splitlines()
                                  if ln.startswith("Features")), []),
            "dlv": dlv.stdout + dlv.stderr, "uptime": float(Path("/proc/uptime").read_text().split()[0])}


def shell(argv, timeout=300, env=None, cwd="/repo"):
    """Run a command; (status, stdout, stderr)."""
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                       env=dict(os.environ, **(env or {})))
    return [p.returncode, p.stdout, p.stderr]


def start(binary, args=(), env=None, ready_line="READY", timeout=120):
    """Start an arm64 test program; its handle (the pid)."""
    t = _targets.start_target(binary, args, env=env, ready_line=ready_line, timeout=timeout)
    _running[t.pid] = t
    return t.pid


def call(pid, name, timeout=60):
    """`call NAME` on an e2e-style target; what it printed after `NAME => `."""
    return _targets.call(_running[pid], name, timeout=timeout)


def send(pid, line, reply, timeout=60):
    """Write a line to the target's stdin, then the first stdout line after it matching reply."""
    t = _running[pid]
    mark = t.mark()
    t.send_line(line)
    return t.wait_for_line(reply, since=mark, timeout=timeout)


def target_state(pid):
    """alive, exit status, the last lines of stdout and stderr."""
    t = _running[pid]
    return {"alive": t.alive(), "returncode": t.proc.returncode,
            "lines": t.lines[-40:], "err_lines": t.err_lines[-40:]}


def stop(pid):
    return _running.pop(pid).stop()


def blade(args, timeout=600):
    """The real CLI (`python3 -m blade_go ARGS`), state in HOME: (exit status, Response)."""
    return list(Blade(HOME).run(*args, timeout=timeout))


def text_differences(pid):
    """[start, end) ranges where the live executable text differs from the file."""
    return [list(r) for r in _targets.text_differences(pid)]


def differences_beyond_retained(pid):
    return [list(r) for r in _targets.differences_beyond_retained(HOME, pid)]


def processes():
    """[pid, comm, cmdline] of every process but kernel threads, this agent and its parents."""
    out = []
    me = {os.getpid(), os.getppid(), 1}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in me:
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            comm = (d / "comm").read_text().strip()
        except OSError:
            continue
        if cmd == [b""]:
            continue  # a kernel thread
        out.append([int(d.name), comm, [c.decode(errors="replace") for c in cmd if c]])
    return out


def blade_go_processes(wait=0.0):
    """[pid, comm, cmdline] of every dlv, supervisor, guardian or fork server still running,
    after waiting up to `wait` seconds for them to end (a destroy's supervisor detaches and
    exits after the Response; a refused create SIGTERMs its standby)."""
    deadline = time.monotonic() + wait
    while True:
        left = [p for p in processes() if p[1] == "dlv" or
                any("blade_go" in a or a.endswith("guard.py") for a in p[2])]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.25)


def _status_field(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])


def tracer_pid(pid):
    """The process tracing pid (0: nobody). TracerPid names the tracing thread; dlv traces
    from one of its threads, so it is mapped to that thread's process (Tgid)."""
    tracer = _status_field(pid, "TracerPid")
    return _status_field(tracer, "Tgid") if tracer else 0


def dlv_probe(pid, func, timeout=300):
    """Attach the arm64 dlv to pid the way blade-go's session layer talks to it (JSON-RPC over
    a unix socket, blade_go.session.delve_client), and report what the session layer relies
    on: the halt, thread PCs, the register names dlv prints, reading `func`'s first 16 bytes,
    writing them (four NOPs, through blade_go.session.memory as patches are written) and
    writing the originals back, then detach. /proc/PID/mem is read after each write."""
    from elftools.elf.elffile import ELFFile
    from blade_go.session.delve_client import DelveClient
    from blade_go.session.memory import write_bytes
    from blade_go.session.references import registers
    exe = os.readlink(f"/proc/{pid}/exe")
    with open(exe, "rb") as f:
        elf = ELFFile(f)
        addr = elf.get_section_by_name(".symtab").get_symbol_by_name(func)[0]["st_value"]
        seg = next(s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD" and
                   s["p_vaddr"] <= addr < s["p_vaddr"] + s["p_filesz"])
        offset = addr - seg["p_vaddr"] + seg["p_offset"]
    sock = f"/tmp/dlv-probe-{pid}.sock"
    t0 = time.monotonic()
    dlv = subprocess.Popen([DLV, "attach", str(pid), "--headless", "--accept-multiclient",
                            "--api-version=2", f"--listen=unix:{sock}"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        while not os.path.exists(sock):
            if dlv.poll() is not None or time.monotonic() - t0 > timeout:
                raise RuntimeError(f"dlv did not listen: {dlv.stdout.read().decode()}")
            time.sleep(0.1)
        c = DelveClient("unix:" + sock, timeout=timeout)
        state = c.state()
        attach_s = time.monotonic() - t0
        threads = c.list_threads()
        regs = c.call("ListRegisters", {"ThreadID": threads[0]["id"], "IncludeFp": True})
        names = [n for n, _ in registers(regs.get("Registers", ""))]
        before = c.read_memory(addr, 16)
        nops = bytes.fromhex("1f2003d5") * 4
        write_bytes(c, addr, nops)
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            mem.seek(addr)
            while_written = mem.read(16)
            write_bytes(c, addr, before)
            mem.seek(addr)
            after = mem.read(16)
        with open(exe, "rb") as f:
            f.seek(offset)
            in_file = f.read(16)
        stopped_while_attached = tracer_pid(pid) == dlv.pid
        c.detach(kill=False)
        c.close()
        dlv.wait(timeout)
        return {"attach_seconds": round(attach_s, 2), "running": state.get("Running"),
                "threads": [{"id": t["id"], "pc": t.get("pc", 0)} for t in threads],
                "register_names": names, "addr": addr, "before": before.hex(),
                "file": in_file.hex(), "while_written": while_written.hex(),
                "after": after.hex(), "traced_by_dlv": stopped_while_attached,
                "dlv_exit": dlv.returncode, "tracer_after": tracer_pid(pid)}
    finally:
        if dlv.poll() is None:
            dlv.terminate()
            dlv.wait(60)


FUNCTIONS = {f.__name__: f for f in (facts, shell, start, call, send, target_state, stop, blade,
                                     text_differences, differences_beyond_retained, processes,
                                     blade_go_processes, tracer_pid, dlv_probe)}


def _reply(tag, payload):
    data = base64.b64encode(json.dumps(payload).encode()).decode()
    os.write(1, f"\n{tag} {data}\n".encode())


def main():
    os.environ.setdefault("BLADE_GO_DLV", DLV)
    os.makedirs(HOME, exist_ok=True)
    if os.isatty(0):  # no echo, no line editing, no CR/LF translation on the console
        tty.setraw(0, termios.TCSANOW)
    t0 = time.monotonic()
    # Compile blade-go once, or every CLI run would, unless the host brought the .pyc files.
    if not Path("/repo/blade_go/__pycache__").is_dir():
        subprocess.run([sys.executable, "-m", "compileall", "-q", "/repo/blade_go",
                        "/repo/tests/support"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    _reply("ARM64VM-READY", {"compile_seconds": round(time.monotonic() - t0, 2)})
    buf = b""
    while True:
        chunk = os.read(0, 65536)
        if not chunk:
            return 0
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            line = line.strip().decode(errors="replace")
            if line == "QUIT":
                for pid in list(_running):
                    stop(pid)
                return 0
            if not line.startswith("CALL "):
                continue
            _, rid, data = line.split(" ", 2)
            t = time.monotonic()
            try:
                req = json.loads(base64.b64decode(data))
                value = FUNCTIONS[req["fn"]](**req.get("kw", {}))
                result = {"ok": True, "value": value}
            except Exception:  # reported to the host, which fails the test with it
                result = {"ok": False, "error": traceback.format_exc()}
            result["seconds"] = round(time.monotonic() - t, 3)
            _reply(f"RESULT {rid}", result)


if __name__ == "__main__":
    sys.exit(main())
