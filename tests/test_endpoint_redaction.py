"""--endpoint credentials (issue 7.7c): used for the create's own POST, never stored or printed
in clear (state, log, status, results, warnings)."""
import base64
import http.server
import json
import os
import threading

import pytest

from blade_go.redact import redact_argv, redact_url, scrub
from tests.support.targets import free_port

SECRETS = ("s3cr3tpass", "tok3nvalue", "alice")


def test_redact_url():
    assert redact_url("https://alice:pw@h.example:8443/p/q?token=abc&x=1#frag") == \
        "https://***@h.example:8443/p/q?token=***&x=***#***"
    assert redact_url("http://h/hook") == "http://h/hook"
    assert redact_argv(["create", "--endpoint", "http://u:p@h/?k=v", "--endpoint=http://a:b@h"]) \
        == ["create", "--endpoint", "http://***@h/?k=***", "--endpoint=http://***@h"]
    url = "http://alice:s3cr3tpass@h/x?token=tok3nvalue"
    msg = scrub(f"failed for {url}: HTTPConnectionPool url: /x?token=tok3nvalue", url)
    assert not any(s in msg for s in SECRETS), msg


class _Hook(http.server.BaseHTTPRequestHandler):
    seen = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.seen.append((self.path, self.headers.get("Authorization"), json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def hook():
    srv = http.server.HTTPServer(("127.0.0.1", free_port()), _Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _Hook.seen.clear()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _all_text(home):
    """Every regular file under home (sockets, such as a fork server's still closing, hold no
    bytes)."""
    import stat
    out = ""
    for root, _, files in os.walk(home):
        for f in files:
            path = os.path.join(root, f)
            try:
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue
                with open(path, "rb") as fh:
                    out += fh.read().decode("utf-8", "replace")
            except FileNotFoundError:  # removed meanwhile by an ending session
                continue
    return out


def test_the_post_authenticates_and_nothing_keeps_the_secret(blade, hook, e2e_binary,
                                                              target_factory):
    target = target_factory(e2e_binary)
    url = f"http://alice:s3cr3tpass@127.0.0.1:{hook}/hook?token=tok3nvalue"
    uid = blade.create_return(target.pid, "main.Flag", "false", "--endpoint", url, "--debug")
    path, auth, body = _Hook.seen[0]
    assert path == "/hook?token=tok3nvalue"  # the create's own POST had everything
    assert base64.b64decode(auth.split()[1]) == b"alice:s3cr3tpass"
    assert body["uid"] == uid and "s3cr3tpass" not in json.dumps(body)
    status = blade.ok("status", uid)
    listing = blade.ok("status", "--type", "create")
    blade.ok("destroy", uid)
    text = json.dumps([uid, status, listing]) + _all_text(blade.home)
    assert "blade-go.log" in os.listdir(blade.home)
    assert not any(s in text for s in SECRETS), [s for s in SECRETS if s in text]
    assert status["flags"]["endpoint"] == f"http://***@127.0.0.1:{hook}/hook?token=***"


def test_a_failing_endpoint_warns_without_the_secret(blade, e2e_binary, target_factory):
    target = target_factory(e2e_binary)
    url = f"http://alice:s3cr3tpass@127.0.0.1:{free_port()}/x?token=tok3nvalue"
    resp = blade.create_response(target.pid, "main.Flag", "false", "--endpoint", url)
    warning = " ".join(resp["warnings"])
    assert "unreachable" in warning and not any(s in warning for s in SECRETS), warning
    blade.ok("destroy", resp["result"])
    code, resp = blade.run("create", "go", "return", "--pid", target.pid, "--func", "main.Flag",
                           "--value", "false", "--endpoint", "ftp://alice:s3cr3tpass@h/")
    assert resp["code"] == 46000 and "s3cr3tpass" not in resp["error"]
