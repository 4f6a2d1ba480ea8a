"""A minimal delve JSON-RPC client for tests (the production client is blade_go/session).

dlv's API v2 is Go net/rpc with the JSON codec over TCP: one request object per line, replies
matched by id. Every call has a timeout because malformed params make dlv go silent.
"""
import base64
import json
import os
import socket
import subprocess
import time
from typing import Optional


class RPCError(Exception):
    pass


class DelveRPC:
    def __init__(self, host: str, port: int, timeout: float = 30.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""
        self.next_id = 0

    def call(self, method: str, params: Optional[dict] = None, timeout: Optional[float] = None):
        self.next_id += 1
        rid = self.next_id
        req = {"method": "RPCServer." + method, "params": [params or {}], "id": rid}
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._read_line(deadline)
            if reply.get("id") != rid:  # a late answer to an earlier, timed-out call
                continue
            if reply.get("error"):
                raise RPCError(f"{method}: {reply['error']}")
            return reply.get("result")

    def _read_line(self, deadline: float) -> dict:
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("dlv did not answer in time")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RPCError("dlv closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    # conveniences used by the tests
    def command(self, name: str, timeout: float = 60.0) -> dict:
        return self.call("Command", {"name": name}, timeout=timeout)

    def registers(self, thread_id: int) -> dict:
        """{NAME: value string} of one thread, floating point registers included."""
        res = self.call("ListRegisters", {"ThreadID": thread_id, "IncludeFp": True})
        return {r["Name"].upper(): r["Value"] for r in res["Regs"]}

    def memory(self, addr: int, length: int) -> bytes:
        out = b""
        while len(out) < length:  # dlv refuses more than 1000 bytes per call
            n = min(1000, length - len(out))
            res = self.call("ExamineMemory", {"Address": addr + len(out), "Length": n})
            out += base64.b64decode(res["Mem"])
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AttachedDelve:
    """`dlv attach PID --headless` plus a connected client; stop() detaches and reaps dlv."""

    def __init__(self, dlv: str, pid: int, timeout: float = 60.0):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [dlv, "attach", str(pid), "--headless", "--api-version=2", "--accept-multiclient",
             "--check-go-version=false", f"--listen=127.0.0.1:{self.port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=dict(os.environ, HOME=os.environ.get("HOME", "/root")))
        self.rpc = self._connect(timeout)

    def _connect(self, timeout: float) -> DelveRPC:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RPCError("dlv exited: " + self.proc.stdout.read().decode(errors="replace"))
            try:
                return DelveRPC("127.0.0.1", self.port)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, kill_target: bool = False):
        try:
            self.rpc.call("Detach", {"Kill": kill_target}, timeout=20)
        except (RPCError, OSError, TimeoutError):
            pass
        self.rpc.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.terminate()  # SIGTERM makes dlv detach cleanly
            self.proc.wait(timeout=10)
