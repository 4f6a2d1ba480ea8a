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


CLOSING = "session closing: "  # prefix of the error a supervisor that is ending answers


class SessionGone(BladeError):
    """The supervisor is not there (any more) or is closing: the request was not carried out,
    so it is safe to send it again to a fresh supervisor."""


class SessionLost(BladeError):
    """The request went out but no answer came back: it may or may not have been carried out."""


def request(sock_path: str, op: str, wait: float = 60.0, **args) -> dict:
    """Send one request to a supervisor and return its result, raising BladeError on failure."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(wait)
    try:
        try:
            conn.connect(sock_path)
        except OSError as e:  # no socket file, or nobody listening on it any more
            raise SessionGone(Code.OS_CMD_EXEC_FAILED,
                              f"session supervisor not reachable ({op}): {e.strerror}") from None
        send_message(conn, {"op": op, **args})
        resp = read_message(conn)
    except socket.timeout:
        raise SessionLost(Code.OS_CMD_EXEC_FAILED,
                          f"session supervisor did not answer {op} within {wait:.0f}s") from None
    except (OSError, ValueError) as e:  # reset or garbled after the request went out
        raise SessionLost(Code.OS_CMD_EXEC_FAILED,
                         f"session supervisor connection failed ({op}): {e}") from None
    finally:
        conn.close()
    if resp is None:
        raise SessionLost(Code.OS_CMD_EXEC_FAILED, f"session supervisor closed the connection ({op})")
    if not resp.get("ok"):
        if str(resp.get("error", "")).startswith(CLOSING):
            raise SessionGone(resp.get("code", Code.OS_CMD_EXEC_FAILED), resp["error"])
        raise BladeError(resp.get("code", Code.OS_CMD_EXEC_FAILED), resp.get("error", "unknown error"))
    return resp.get("result", {})
