"""A small client for delve's JSON-RPC API (api-version 2) over a unix socket or TCP.

dlv speaks Go's net/rpc JSON codec: one request object per line, responses carry the request id.
Two facts shape this client:
- malformed params make dlv stop answering that connection without any error, so every call
  has a timeout;
- ``Command{continue}`` is answered only when the target stops (exit, breakpoint, halt), so it
  is sent asynchronously and its pending future kept; ``halt()`` sends ``Command{halt}`` and then
  waits for that pending answer.
"""
import base64
import itertools
import json
import socket
import threading
import time
from concurrent.futures import Future, TimeoutError as FutureTimeout

DEFAULT_TIMEOUT = 10.0
SCOPE = {"GoroutineID": -1, "Frame": 0, "DeferredCall": 0}
LOAD_CONFIG = {"FollowPointers": True, "MaxVariableRecurse": 1, "MaxStringLen": 64,
               "MaxArrayValues": 64, "MaxStructFields": -1}
MAX_EXAMINE = 1000  # ExamineMemory refuses longer reads


class DelveError(Exception):
    """dlv answered with an error string."""


class DelveTimeout(DelveError):
    """dlv did not answer in time (or the connection is wedged)."""


class DelveDisconnected(DelveError):
    """The connection to dlv closed (dlv died or detached)."""


def _connect_unix(path: str, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        if len(path.encode()) < 100:
            sock.connect(path)
        else:  # sun_path holds 107 bytes: go through a descriptor of the directory
            import os
            dfd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
            try:
                sock.connect(f"/proc/self/fd/{dfd}/{os.path.basename(path)}")
            finally:
                os.close(dfd)
    except BaseException:
        sock.close()
        raise
    return sock


class DelveClient:
    def __init__(self, host: str, port: int | None = None, timeout: float = DEFAULT_TIMEOUT):
        """DelveClient(host, port) or DelveClient("HOST:PORT") for TCP; DelveClient("unix:PATH")
        (or a path) for a unix socket."""
        self.timeout = timeout
        if port is None and not host.startswith(("unix:", "/")):  # "HOST:PORT" (old dlv: TCP)
            h, _, p = host.rpartition(":")
            if h and p.isdigit():
                host, port = h, int(p)
        if port is None:
            self._sock = _connect_unix(host[5:] if host.startswith("unix:") else host, timeout)
        else:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.settimeout(None)
        self._ids = itertools.count(1)
        self._pending: dict[int, Future] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._closed = False
        self._continue: Future | None = None  # answer of the running `continue`, if any
        # Every stop this client made: ms from sending halt to sending continue (the create
        # and destroy results report them: the tool's own cost to the target, measured).
        self.stops: list[float] = []
        self._halted_at: float | None = None
        self._reader = threading.Thread(target=self._read_loop, name="dlv-reader", daemon=True)
        self._reader.start()

    # -- transport ------------------------------------------------------------------------
    def _read_loop(self):
        buf = b""
        try:
            while True:
                chunk = self._sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        self._dispatch(json.loads(line))
        except (OSError, ValueError):
            pass
        finally:
            self._fail_all(DelveDisconnected("connection to dlv closed"))

    def _dispatch(self, msg: dict):
        with self._lock:
            fut = self._pending.pop(msg.get("id"), None)
        if fut is None:
            return
        if msg.get("error"):
            fut.set_exception(DelveError(str(msg["error"])))
        else:
            fut.set_result(msg.get("result"))

    def _fail_all(self, exc: Exception):
        with self._lock:
            self._closed = True
            pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)

    def send(self, method: str, params: dict | None = None) -> Future:
        """Send a request and return the future of its answer."""
        fut: Future = Future()
        with self._lock:
            if self._closed:
                raise DelveDisconnected("connection to dlv closed")
            rid = next(self._ids)
            self._pending[rid] = fut
        line = json.dumps({"method": "RPCServer." + method, "params": [params or {}], "id": rid})
        try:
            with self._send_lock:
                self._sock.sendall(line.encode() + b"\n")
        except OSError as e:
            with self._lock:
                self._pending.pop(rid, None)
            raise DelveDisconnected(f"cannot send to dlv: {e}") from e
        return fut

    def call(self, method: str, params: dict | None = None, timeout: float | None = None):
        fut = self.send(method, params)
        try:
            return fut.result(timeout if timeout is not None else self.timeout)
        except FutureTimeout:
            raise DelveTimeout(f"dlv did not answer {method} within "
                               f"{timeout if timeout is not None else self.timeout}s") from None

    @property
    def connected(self) -> bool:
        return not self._closed

    def close(self):
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    # -- execution control ----------------------------------------------------------------
    def get_version(self) -> dict:
        return self.call("GetVersion")

    def state(self, nonblocking: bool = True) -> dict:
        return self.call("State", {"NonBlocking": nonblocking})["State"]

    @property
    def running(self) -> bool:
        return self._continue is not None and not self._continue.done()

    def continue_async(self) -> Future:
        """Resume the target; the returned future resolves with the state when it stops."""
        if self.running:
            return self._continue
        self._continue = self.send("Command", {"name": "continue"})
        if self._halted_at is not None:
            self.stops.append(round((time.monotonic() - self._halted_at) * 1000, 2))
            self._halted_at = None
        return self._continue

    def pending_continue(self) -> Future | None:
        return self._continue

    def halt(self, timeout: float | None = None) -> dict:
        """Stop the target and return the stop state (the pending continue's answer).

        Only sends ``Command{halt}`` while a continue is pending: on Linux dlv implements halt by
        sending SIGTRAP to the target, and a halt sent to an already stopped target leaves that
        SIGTRAP pending; the Go runtime dies of it as soon as dlv detaches.
        """
        fut = self._continue
        if fut is None or fut.done():
            if fut is not None and fut.exception() is None and fut.result()["State"].get("exited"):
                return fut.result()["State"]
            return self.state(nonblocking=True)
        halted_at = time.monotonic()
        self.send("Command", {"name": "halt"})
        self._halted_at = halted_at
        try:
            return fut.result(timeout if timeout is not None else self.timeout)["State"]
        except FutureTimeout:
            raise DelveTimeout("target did not stop after halt") from None

    # -- inspection -----------------------------------------------------------------------
    def list_threads(self) -> list:
        return self.call("ListThreads")["Threads"] or []

    def list_goroutines(self, page: int = 1000) -> list:
        out, start = [], 0
        while True:
            res = self.call("ListGoroutines", {"Start": start, "Count": page})
            out.extend(res.get("Goroutines") or [])
            start = res.get("Nextg", -1)
            if start is None or start <= 0:
                return out

    def stacktrace(self, goroutine_id: int, depth: int = 32) -> list:
        return self.call("Stacktrace", {"Id": goroutine_id, "Depth": depth})["Locations"] or []

    def list_breakpoints(self, all_: bool = True) -> list:
        return self.call("ListBreakpoints", {"All": all_})["Breakpoints"] or []

    def clear_breakpoint(self, bp_id: int):
        return self.call("ClearBreakpoint", {"Id": bp_id})

    def read_memory(self, addr: int, length: int) -> bytes:
        out = bytearray()
        while len(out) < length:
            n = min(MAX_EXAMINE, length - len(out))
            res = self.call("ExamineMemory", {"Address": addr + len(out), "Length": n})
            mem = res.get("Mem") or ""
            out += base64.b64decode(mem)
            if n and not mem:
                raise DelveError(f"cannot read memory at {addr + len(out):#x}")
        return bytes(out)

    def eval(self, expr: str, cfg: dict | None = None) -> dict:
        return self.call("Eval", {"Scope": SCOPE, "Expr": expr, "Cfg": cfg or LOAD_CONFIG})["Variable"]

    def set(self, symbol: str, value: str):
        return self.call("Set", {"Scope": SCOPE, "Symbol": symbol, "Value": value})

    def write_memory(self, addr: int, data: bytes):
        from .memory import write_bytes  # chunking rules live beside the reads
        write_bytes(self, addr, data)

    def disassemble(self, start: int, end: int, flavour: int = 0) -> list:
        return self.call("Disassemble", {"Scope": SCOPE, "StartPC": start, "EndPC": end,
                                         "Flavour": flavour})["Disassemble"] or []

    def function_return_locations(self, fn_name: str) -> list:
        return self.call("FunctionReturnLocations", {"FnName": fn_name})["Addrs"] or []

    def detach(self, kill: bool = False, timeout: float | None = None):
        return self.call("Detach", {"Kill": kill}, timeout)
