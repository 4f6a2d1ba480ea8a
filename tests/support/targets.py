"""Running target processes for tests, and checks on their executable memory.

`start_target` runs a program with stdout/stderr read by threads so tests can wait for lines
without deadlocking on full pipes. `text_differences` compares the live executable mappings
(/proc/PID/maps + /proc/PID/mem) with the executable file: an empty result proves that every
byte blade-go wrote has been restored.
"""
import os
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Pattern, Sequence, Tuple, Union


class TargetError(RuntimeError):
    pass


class RunningTarget:
    """A started process. Lines of stdout are kept in order in `.lines`."""

    def __init__(self, argv: Sequence[str], env: Optional[Dict[str, str]] = None,
                 cwd: Optional[str] = None):
        self.argv = [str(a) for a in argv]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, cwd=cwd,
                                     start_new_session=True)
        self.pid = self.proc.pid
        self.lines: List[str] = []
        self.err_lines: List[str] = []
        self._cursor = 0  # wait_for_line searches from here by default
        self._cond = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(s, b), daemon=True)
                         for s, b in ((self.proc.stdout, self.lines),
                                      (self.proc.stderr, self.err_lines))]
        for t in self._readers:
            t.start()

    def _read(self, stream, sink: List[str]):
        for raw in iter(stream.readline, b""):
            with self._cond:
                sink.append(raw.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    # -- output ---------------------------------------------------------------------------
    def mark(self) -> int:
        """A position in the stdout lines; pass it to lines_since / wait_for_line(since=)."""
        with self._cond:
            return len(self.lines)

    def lines_since(self, mark: int) -> List[str]:
        with self._cond:
            return list(self.lines[mark:])

    def wait_for_line(self, pattern: Union[str, Pattern], timeout: float = 10.0,
                      since: Optional[int] = None) -> str:
        """First stdout line at or after `since` matching the regex `pattern` (re.search).

        Without `since`, the search starts after the line the previous wait matched, so
        successive waits consume the output in order.
        """
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        start = self._cursor if since is None else since
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.lines)):
                    if rx.search(self.lines[i]):
                        self._cursor = i + 1
                        return self.lines[i]
                start = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and
                                 not any(t.is_alive() for t in self._readers)):
                    break
                self._cond.wait(min(left, 0.2))
        raise TargetError(f"no line matching {rx.pattern!r} within {timeout}s; "
                          f"{self.describe()}")

    def send_line(self, text: str):
        """Write a line to the target's stdin."""
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def describe(self) -> str:
        state = "running" if self.alive() else f"exited with {self.proc.returncode}"
        with self._cond:
            out, err = self.lines[-20:], self.err_lines[-20:]
        return (f"pid {self.pid} {state}; last stdout: {out!r}; last stderr: {err!r}")

    # -- lifetime -------------------------------------------------------------------------
    def alive(self) -> bool:
        """True while the process runs (a zombie or a stopped-forever process is not 'exited')."""
        return self.proc.poll() is None

    def stop(self, grace: float = 3.0) -> Optional[int]:
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit status."""
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
                try:
                    self.proc.send_signal(sig)
                    # a SIGSTOPped target acts on SIGTERM only once continued
                    os.kill(self.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        for s in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                s.close()
            except OSError:
                pass
        return self.proc.returncode


def call(target: "RunningTarget", name: str, timeout: float = 10.0) -> str:
    """Ask a fixture that reads `call NAME` lines (e2e_target and kin) to call NAME once;
    returns what it printed after `NAME => `."""
    mark = target.mark()
    target.send_line(f"call {name}")
    line = target.wait_for_line(rf"^{name} => ", since=mark, timeout=timeout)
    return line.split(" => ", 1)[1]


def start_target(binary: Union[str, Path], args: Sequence[str] = (),
                 env: Optional[Dict[str, str]] = None, ready_line: Optional[str] = "READY",
                 timeout: float = 15.0, cwd: Optional[str] = None) -> RunningTarget:
    """Start `binary args...`; wait until a stdout line matches `ready_line` (None: no wait).

    `env` entries are added to the current environment.
    """
    full_env = dict(os.environ, **(env or {}))
    target = RunningTarget([str(binary), *args], env=full_env, cwd=cwd)
    if ready_line is not None:
        try:
            target.wait_for_line(ready_line, timeout=timeout)
        except TargetError:
            target.stop()
            raise
    return target


def free_port() -> int:
    """An unused loopback TCP port (for dlv --listen)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- executable text vs. file ---------------------------------------------------------------

@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    perms: str
    offset: int
    path: str


def exe_mappings(pid: int, exe: Optional[str] = None) -> List[Mapping]:
    """Executable (x) mappings of the main executable file, from /proc/PID/maps."""
    exe = os.path.realpath(exe or os.readlink(f"/proc/{pid}/exe"))
    ino = os.stat(exe).st_ino
    out = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or "x" not in parts[1]:
            continue
        if int(parts[4]) != ino or os.path.realpath(parts[5]) != exe:
            continue
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        out.append(Mapping(lo, hi, parts[1], int(parts[2], 16), parts[5]))
    return out


def read_text_segment(pid: int, exe: Optional[str] = None) -> List[Tuple[Mapping, bytes]]:
    """(mapping, live bytes) for each executable mapping of the executable (needs ptrace rights)."""
    result = []
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for m in exe_mappings(pid, exe):
            mem.seek(m.start)
            result.append((m, mem.read(m.end - m.start)))
    return result


def load_bias(pid: int, exe: Optional[str] = None) -> int:
    """Runtime address minus file virtual address of the executable's text (0 unless PIE)."""
    from elftools.elf.elffile import ELFFile

    exe = exe or os.readlink(f"/proc/{pid}/exe")
    m = exe_mappings(pid, exe)[0]
    with open(exe, "rb") as f:
        for seg in ELFFile(f).iter_segments():
            if seg["p_type"] == "PT_LOAD" and \
                    seg["p_offset"] <= m.offset < seg["p_offset"] + max(seg["p_filesz"], 1):
                return m.start - (seg["p_vaddr"] + (m.offset - seg["p_offset"]))
    raise TargetError(f"no PT_LOAD of {exe} covers file offset {m.offset:#x}")


def text_differences(pid: int, exe: Optional[str] = None) -> List[Tuple[int, int]]:
    """[(start, end)) runtime address ranges where the live executable text differs from the file.

    Pages past the end of the file read as zeros, as the kernel maps them.
    """
    exe = exe or os.readlink(f"/proc/{pid}/exe")
    data = Path(exe).read_bytes()
    diffs: List[Tuple[int, int]] = []
    for m, live in read_text_segment(pid, exe):
        want = data[m.offset:m.offset + len(live)]
        want += bytes(len(live) - len(want))
        if live == want:
            continue
        diffs.extend(_differing_runs(live, want, m.start))
    return diffs


def _differing_runs(live: bytes, want: bytes, base: int) -> List[Tuple[int, int]]:
    """Maximal runs of differing bytes; equal pages are skipped without a byte loop."""
    runs: List[Tuple[int, int]] = []
    page = 4096
    for p in range(0, len(live), page):
        if live[p:p + page] == want[p:p + page]:
            continue
        for i in range(p, min(p + page, len(live))):
            if live[i] == want[i]:
                continue
            if runs and runs[-1][1] == base + i:
                runs[-1] = (runs[-1][0], base + i + 1)
            else:
                runs.append((base + i, base + i + 1))
    return runs


def text_matches_file(pid: int, exe: Optional[str] = None) -> List[Tuple[int, int]]:
    """Alias of text_differences: an empty list means the text equals the file byte for byte."""
    return text_differences(pid, exe)


def _pie(exe: str) -> bool:
    from elftools.elf.elffile import ELFFile
    with open(exe, "rb") as f:
        return ELFFile(f)["e_type"] == "ET_DYN"


def retained_ranges(home, pid: int) -> List[Tuple[int, int]]:
    """[lo, hi) of the value caves that blade-go's state (in `home`) retains in process pid:
    values the program may still hold, left in place by a destroy (issue 16)."""
    import json
    try:
        with open(Path(home) / "state.json") as f:
            exps = json.load(f).get("experiments", {})
    except FileNotFoundError:
        return []
    out = []
    for rec in exps.values():
        if rec.get("pid") != pid:
            continue
        for e in (rec.get("record") or {}).get("retained") or []:
            out.append((int(e["addr"]), int(e["addr"]) + len(e["replacement"]) // 2))
    return out


def differences_beyond_retained(home, pid: int, exe: Optional[str] = None
                                ) -> List[Tuple[int, int]]:
    """text_differences outside the value caves the state retains in pid, and any difference
    inside `.text` (which must stay byte-exact to the file: values live only in padding)."""
    exe = exe or os.readlink(f"/proc/{pid}/exe")
    return outside_retained(text_differences(pid, exe), home, pid, exe)


def outside_retained(diffs, home, pid: int, exe: str) -> List[Tuple[int, int]]:
    """The differences of `diffs` that lie inside `.text` or outside every value cave that
    blade-go's state in `home` retains in pid. exe may be /proc/PID/exe (a container's
    process: the maps name the file as the container sees it)."""
    from elftools.elf.elffile import ELFFile
    if exe == f"/proc/{pid}/exe":
        bias = load_bias(pid, os.readlink(exe)) if _pie(exe) else 0
    else:
        bias = load_bias(pid, exe)
    with open(exe, "rb") as f:
        sec = ELFFile(f).get_section_by_name(".text")
        text = (sec["sh_addr"] + bias, sec["sh_addr"] + bias + sec["sh_size"]) if sec else (0, 0)
    kept = retained_ranges(home, pid)
    return [(a, b) for a, b in diffs
            if (a < text[1] and text[0] < b) or not any(lo <= a and b <= hi for lo, hi in kept)]


# The line protocol of the pausable fixtures (conditions_target, callers_target): one command
# line in, one reply line out; "stats" answers `STATS name=N name=N ...`.
def command(t: "RunningTarget", text: str, reply: str, timeout: float = 30) -> str:
    mark = t.mark()
    t.send_line(text)
    return t.wait_for_line(rf"^{reply}", since=mark, timeout=timeout)


def read_stats(t: "RunningTarget") -> Dict[str, int]:
    line = command(t, "stats", "STATS ")
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def run_window(t: "RunningTarget", seconds: float) -> Dict[str, int]:
    """Let the paused fixture's goroutines call for `seconds`, pause them, return the counts."""
    command(t, "resume", "RESUMED")
    time.sleep(seconds)
    command(t, "pause", "PAUSED")
    return read_stats(t)
