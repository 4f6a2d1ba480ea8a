"""Framing on the supervisor's unix socket: one JSON object per line each way.

Request:  {"op": "apply"|"revert"|"watch"|"facts"|"release", ...arguments}
Response: {"ok": true, "result": {...}} or {"ok": false, "code": <chaosblade code>, "error": "..."}
"""
import json
import socket

from ..errors import BladeError, Code

MAX_LINE = 16 * 1024 * 1024


def send_message(conn: socket.socket, obj: dict):
    conn.sendall(json.dumps(obj).encode() + b"\n")


def read_message(conn: socket.socket) -> dict | None:
    """Read one line; None when the peer closed before sending anything."""
    buf = bytearray()
    while not buf.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            if not buf:
                return None
            break
        buf += chunk
        if len(buf) > MAX_LINE:
            raise ValueError("message too long")
    return json.loads(buf)


def ok(result=None) -> dict:
    return {"ok": True, "result": result if result is not None else {}}


def error(exc: Exception) -> dict:
    code = exc.code if isinstance(exc, BladeError) else Code.OS_CMD_EXEC_FAILED
    return {"ok": False, "code": code, "error": str(exc)}


def request(sock_path: str, op: str, wait: float = 60.0, **args) -> dict:
    """Send one request to a supervisor and return its result, raising BladeError on failure."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(wait)
    try:
        conn.connect(sock_path)
        send_message(conn, {"op": op, **args})
        resp = read_message(conn)
    except socket.timeout:
        raise BladeError(Code.OS_CMD_EXEC_FAILED,
                         f"session supervisor did not answer {op} within {wait:.0f}s") from None
    finally:
        conn.close()
    if resp is None:
        raise BladeError(Code.OS_CMD_EXEC_FAILED, f"session supervisor closed the connection ({op})")
    if not resp.get("ok"):
        raise BladeError(resp.get("code", Code.OS_CMD_EXEC_FAILED), resp.get("error", "unknown error"))
    return resp.get("result", {})
