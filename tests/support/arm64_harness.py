"""Run arm64 stub code on an arm64 CPU model: tests/fixtures/arm64_cond_harness under
`qemu-aarch64 -cpu neoverse-n1`.

The harness (a Go program, GOARCH=arm64, its trampoline in Go assembly) maps a code region at
CODE (RWX) and a data region at DATA (RW), writes the given bytes there, then calls a target
from several goroutines at once with R0-R15 and 8 stack words set per call set, as Go code
calls a function (SP at a Go frame of a real goroutine, R28 = g, R29 = the frame pointer chain
of real frames). It reports R0 after each call, how many "kept" registers/stack words came back
changed, and memory dumps (the counters).

    run = run_harness(writes={CODE: f_bytes, CAVE: stub}, sets=[Call(ENTRY, regs=[42])],
                      calls=2000, goroutines=4, keep=0xfffe, dumps=[(DATA, 64)])
    run.results[0][:3], run.clobbered, run.dumps[DATA]
"""
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from .fixtures import build_fixture
from .toolchains import require_qemu_aarch64

CODE, DATA = 0x10000000, 0x20000000
ENTRY = CODE            # F
CAVE = CODE + 0x4000    # the stub
CALLERS = CODE + 0x2000  # Go-shaped caller functions (see go_caller)
QEMU_CPU = "neoverse-n1"


@dataclass
class Call:
    target: int
    regs: Sequence[int] = ()
    stack: Sequence[int] = ()


@dataclass
class Run:
    results: List[List[int]]
    clobbered: int
    dumps: Dict[int, bytes] = field(default_factory=dict)

    @property
    def all(self) -> List[int]:
        return [v for r in self.results for v in r]


def harness() -> Path:
    return build_fixture("arm64_cond_harness", goarch="arm64")


def qemu() -> str:
    return require_qemu_aarch64()  # skips (fails under CI=true) when missing


def run_harness(writes: Dict[int, bytes], sets: Sequence[Call], calls: int = 1,
                goroutines: int = 1, keep: int = 0, dumps: Sequence[Tuple[int, int]] = (),
                timeout: float = 300) -> Run:
    lines = [f"w {a:x} {bytes(b).hex()}" for a, b in writes.items() if b]
    for s in sets:
        regs = list(s.regs) + [0x5A5A0000 + i for i in range(len(s.regs), 16)]
        stack = list(s.stack) + [0xC0DE0000 + i for i in range(len(s.stack), 8)]
        lines.append("s %x %s %s" % (s.target, " ".join(f"{r & (2**64 - 1):x}" for r in regs),
                                     " ".join(f"{w & (2**64 - 1):x}" for w in stack)))
    lines.append(f"n {calls} {goroutines}")
    lines.append(f"k {keep:x}")
    lines += [f"d {a:x} {n:x}" for a, n in dumps]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(lines) + "\n")
        path = f.name
    try:
        proc = subprocess.run([qemu(), "-cpu", QEMU_CPU, str(harness()), path],
                              capture_output=True, text=True, timeout=timeout)
    finally:
        Path(path).unlink(missing_ok=True)
    if proc.returncode != 0:
        raise AssertionError(f"harness failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    results: List[List[int]] = [[] for _ in range(goroutines)]
    clobbered, out_dumps = None, {}
    for line in proc.stdout.splitlines():
        w = line.split()
        if w[0] == "r":
            results[int(w[1])] = [int(x, 16) for x in w[2].split(",")] if len(w) > 2 else []
        elif w[0] == "x":
            clobbered = int(w[1])
        elif w[0] == "m":
            out_dumps[int(w[1], 16)] = bytes.fromhex(w[2]) if len(w) > 2 else b""
    assert clobbered is not None, proc.stdout[-2000:]
    return Run(results, clobbered, out_dumps)

