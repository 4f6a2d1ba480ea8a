"""A minimal GDB remote-protocol client for a program run under qemu-user's gdbstub.

It is the arm64 tests' stand-in for dlv (no arm64 machine here): `qemu-aarch64 -g PORT PROG`
starts PROG stopped at its first instruction and waits for a debugger; this client sets
software breakpoints, continues, and reads registers and memory at each stop. Only the
handful of packets the tests need (each acknowledged with '+' both ways):

    $Z0,ADDR,4#..          breakpoint at ADDR (4: an arm64 instruction)
    $c#63                  continue; the answer is a stop reply (T05thread:..; or W00 at exit)
    $Hg<tid>#..            registers of that thread from now on
    $p<regno>#..           one register, hex, target byte order (little-endian)
    $m<addr>,<len>#..      memory, hex

Worked example (a stop at a RET whose first result is the int64 7):

    >>> s = QemuGdb.start("qemu-aarch64", "/tmp/prog")     # doctest: +SKIP
    >>> s.breakpoint(0x4a1230); s.cont()                      # doctest: +SKIP
    ('stop', 5)
    >>> int.from_bytes(s.register(AARCH64["x0"]), "little")   # doctest: +SKIP
    7
"""
import socket
import subprocess
import time
from typing import Optional, Tuple

# qemu's aarch64 register numbers (gdb-xml/aarch64-core.xml, then aarch64-fpu.xml)
AARCH64 = {**{f"x{i}": i for i in range(31)}, "sp": 31, "pc": 32, "cpsr": 33,
           **{f"v{i}": 34 + i for i in range(32)}}


class GdbError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QemuGdb:
    def __init__(self, proc: subprocess.Popen, sock: socket.socket):
        self.proc, self.sock = proc, sock
        self._buf = b""
        self.thread: Optional[str] = None

    @classmethod
    def start(cls, qemu: str, program: str, *, cpu: str = "neoverse-n1", env=None,
              timeout: float = 30, qemu_args=()) -> "QemuGdb":
        """Start program under qemu with a gdbstub on a loopback port and connect to it.

        cpu: an arm64 server core without SVE (AWS Graviton2's), so that register 34 on is
        v0..v31 (128 bits), not SVE's z registers. qemu_args: e.g. ["-L", sysroot] for a PIE."""
        port = _free_port()
        proc = subprocess.Popen([qemu, "-cpu", cpu, *qemu_args, "-g", str(port), program],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise GdbError(f"qemu's gdbstub on port {port} never answered")
                time.sleep(0.05)
        self = cls(proc, sock)
        # qemu answers 'p' (one register) only to a client that read the target description
        self.request(b"qSupported:multiprocess+;xmlRegisters=aarch64")
        self.request(b"qXfer:features:read:target.xml:0,ffb")
        return self

    # -- packets --------------------------------------------------------------------------------
    def _send(self, payload: bytes, ack: bool = False):
        pkt = b"$" + payload + b"#" + b"%02x" % (sum(payload) & 0xFF)
        self.sock.sendall(pkt)
        if ack:
            while self._read_byte() != b"+":
                pass

    def _read_byte(self) -> bytes:
        if not self._buf:
            data = self.sock.recv(65536)
            if not data:
                raise GdbError("qemu closed the gdb connection")
            self._buf = data
        b, self._buf = self._buf[:1], self._buf[1:]
        return b

    def _recv(self, ack: bool = False) -> bytes:
        while self._read_byte() != b"$":  # skip acks and noise
            pass
        out = bytearray()
        while True:
            b = self._read_byte()
            if b == b"#":
                self._read_byte(), self._read_byte()  # checksum (TCP is reliable)
                break
            out += b
        if ack:
            self.sock.sendall(b"+")
        return bytes(out)

    def request(self, payload: bytes, timeout: Optional[float] = 30) -> bytes:
        self.sock.settimeout(timeout)
        self._send(payload, ack=True)
        reply = self._recv(ack=True)
        if reply.startswith(b"E") and len(reply) == 3:
            raise GdbError(f"{payload[:40]!r}: error {reply.decode()}")
        return reply

    # -- what the tests use ---------------------------------------------------------------------
    def breakpoint(self, addr: int):
        if self.request(b"Z0,%x,4" % addr) != b"OK":
            raise GdbError(f"breakpoint at {addr:#x} refused")

    def cont(self, timeout: float = 120) -> Tuple[str, int]:
        """Run until the next breakpoint: ('stop', 5) with self.thread set, or ('exit', status).

        Other signals (Go's preemption SIGURG, SIGCHLD...) are passed on to the program. A
        thread stopped at a breakpoint would hit it again at once (qemu checks breakpoints as
        it translates): it steps over it first, with the breakpoint removed for that step."""
        if self.stopped_at is not None and self.thread is not None:
            addr, self.stopped_at = self.stopped_at, None
            self.request(b"z0,%x,4" % addr)
            reply = self.request(b"vCont;s:" + self.thread.encode(), timeout=timeout)
            self.request(b"Z0,%x,4" % addr)
            if reply[:3] not in (b"T05", b"S05"):
                return self._stop(reply, timeout)
        reply = self.request(b"c", timeout=timeout)
        return self._stop(reply, timeout)

    stopped_at: Optional[int] = None

    def _stop(self, reply: bytes, timeout: float) -> Tuple[str, int]:
        while reply[:1] in (b"T", b"S") and reply[1:3] != b"05":
            reply = self.request(b"C" + reply[1:3], timeout=timeout)
        kind = reply[:1]
        if kind in (b"W", b"X"):
            return ("exit" if kind == b"W" else "killed", int(reply[1:3], 16))
        if kind != b"T" and kind != b"S":
            raise GdbError(f"unexpected stop reply {reply!r}")
        for field in reply[3:].split(b";"):
            if field.startswith(b"thread:"):
                self.thread = field[7:].decode()
                self.request(b"Hg" + field[7:])
        self.stopped_at = int.from_bytes(self.register(AARCH64["pc"]), "little")
        return ("stop", int(reply[1:3], 16))

    def register(self, regno: int) -> bytes:
        data = self.request(b"p%x" % regno)
        if not data:
            raise GdbError(f"qemu did not answer register {regno}")
        return bytes.fromhex(data.decode())

    def memory(self, addr: int, size: int) -> bytes:
        out = b""
        while len(out) < size:
            n = min(size - len(out), 1024)
            out += bytes.fromhex(self.request(b"m%x,%x" % (addr + len(out), n)).decode())
        return out

    def auxv(self) -> dict:
        """The program's auxiliary vector {AT_*: value} (qXfer:auxv:read; '}' escapes)."""
        import struct
        reply = self.request(b"qXfer:auxv:read::0,ffb")
        raw, it = bytearray(), iter(reply[1:])  # 'l'/'m', then binary data
        for b in it:
            raw.append(next(it) ^ 0x20 if b == 0x7D else b)
        return dict(struct.unpack_from("<QQ", raw, k) for k in range(0, len(raw) - 15, 16))

    def close(self):
        try:
            self.sock.close()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=10)
