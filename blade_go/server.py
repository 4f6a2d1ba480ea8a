"""`blade-go server --port P`: chaosblade's external-executor HTTP protocol.

What blade 1.8's cplus executor (exec/cplus/executor.go) sends to its agent, and what this
answers (always HTTP 200 with one JSON Response, like the agent; blade treats any other status
as 63064 and parses the body of a 200):
  GET /create?target=go&suid=<uid>&action=<action>&<flag>=<urlencoded value>...
      -> the create Response; result = the uid (suid), warnings also joined into `error`
         (blade stores a successful create's `error` in its record)
  GET /destroy?suid=<uid>             -> the destroy Response (suid=unknown&target=&action=&
                                         flags...: destroy by matchers, as on the command line)
  GET /status                         -> {"code":200,"success":true,"result":"success"}
  GET /status?suid=<uid>              -> the experiment record with live facts
  GET /remove                         -> answers, then the server stops (experiments stay)
Query parameters blade adds for its own use (port: which agent; debug, nohup, async, endpoint:
blade's) are dropped. A parameter given twice is refused. Listens on loopback unless told.
"""
from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .chaosblade import conventions as cb
from .errors import BladeError, Code
from .response import fail, ok

log = logging.getLogger("blade_go")
BLADE_OWNED = ("port", "debug", "nohup", "async", "endpoint", "uid")


def _query(path: str) -> tuple:
    url = urllib.parse.urlsplit(path)
    pairs = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
    names = [k for k, _ in pairs]
    twice = sorted({k for k in names if names.count(k) > 1})
    if twice:
        raise BladeError(Code.PARAMETER_ILLEGAL, "illegal parameters: " + ", ".join(
            f"{k} given {names.count(k)} times" for k in twice) + "; give each once")
    return url.path.rstrip("/") or "/", {k: v.replace(cb.SPACE, " ") for k, v in pairs}


def _need(q, name):
    value = q.get(name, "")
    if not value:
        raise BladeError(Code.PARAMETER_LESS, f"less parameter: {name}")
    return value


def handle(path: str, stop=None) -> dict:
    """The Response for one request path (with its query string)."""
    from . import experiment
    try:
        route, q = _query(path)
        if route == "/create":
            target, action, uid = _need(q, "target"), _need(q, "action"), _need(q, "suid")
            flags = {k: v for k, v in q.items()
                     if k not in ("target", "action", "suid") + BLADE_OWNED}
            flags["uid"] = uid
            result = experiment.create(target, action, flags)
            warnings = None
            if isinstance(result, dict) and "uid" in result:
                result, warnings = result["uid"], result.get("warnings") or None
            return ok(result, warnings=warnings, under_blade=True)
        if route == "/destroy":
            uid = _need(q, "suid")
            if uid == cb.UNKNOWN_UID:
                args = [f"--{k}={v}" for k, v in q.items()
                        if k not in ("target", "action", "suid") + BLADE_OWNED]
                return ok(cb.destroy_by_matchers(_need(q, "target"), _need(q, "action"), args))
            return ok(experiment.destroy(uid))
        if route == "/status":
            if q.get("suid"):
                return ok(experiment.status(q["suid"]))
            return ok("success")
        if route == "/remove":
            if stop:
                stop()
            return ok("removed")
        raise BladeError(Code.COMMAND_ILLEGAL, f"unknown request {route!r}: expected /create, "
                         "/destroy, /status or /remove")
    except BladeError as e:
        return fail(e.code, e.message)
    except Exception as e:  # a bug: the agent keeps serving, the caller gets the reason
        log.exception("request %s failed", path)
        return fail(Code.UNEXPECTED_STATUS, f"internal error: {type(e).__name__}: {e}")


class _Handler(BaseHTTPRequestHandler):
    server_version = "blade-go"
    timeout = 60  # a client that connects and says nothing cannot hold the server's exit

    def do_GET(self):
        resp = handle(self.path, stop=self.server.stop_soon)
        body = json.dumps(resp, default=str).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        log.info("%s -> %s", self.path, resp.get("code"))
        if self.server.stopping:  # /remove: answered first, then the server stops
            threading.Thread(target=self.server.shutdown, daemon=True).start()

    do_POST = do_GET

    def log_message(self, fmt, *args):
        log.debug("http: " + fmt, *args)


class Server(ThreadingHTTPServer):
    # server_close() joins the handler threads: requests still running finish before we exit
    daemon_threads = False
    block_on_close = True
    stopping = False

    def stop_soon(self):
        # Only a mark: the handler shuts the server down after its answer is written (the
        # process exits when serve_forever returns, and would cut an unsent answer short).
        self.stopping = True


def make_server(ip: str, port: int) -> Server:
    try:
        return Server((ip, port), _Handler)
    except OSError as e:
        raise BladeError(Code.PARAMETER_INVALID, f"cannot listen on {ip}:{port}: {e}")


def serve(ip: str, port: int):
    srv = make_server(ip, port)
    log.warning("blade-go server listening on %s:%d", ip, srv.server_port)
    print(f"blade-go server listening on http://{ip}:{srv.server_port}", flush=True)
    try:
        srv.serve_forever()
    finally:
        srv.server_close()
