"""`blade-go server`: chaosblade's external-executor HTTP protocol, with real HTTP requests
against a live Go target."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import requests

from tests.support.targets import call, differences_beyond_retained, free_port

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def server(tmp_path):
    port = free_port()
    env = {**os.environ, "BLADE_GO_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    p = subprocess.Popen([sys.executable, "-m", "blade_go", "server", "--port", str(port)],
                         env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 20
    while True:
        try:
            requests.get(base + "/status", timeout=2)
            break
        except requests.ConnectionError:
            assert p.poll() is None and time.time() < deadline, p.communicate()
            time.sleep(0.1)
    p.base, p.port, p.home = base, port, tmp_path / "home"
    yield p
    if p.poll() is None:
        p.kill()
    p.communicate()


@pytest.fixture
def target(e2e_binary, target_factory):
    return target_factory(e2e_binary)


def get(server, path, **params):
    r = requests.get(server.base + path, params=params, timeout=120)
    assert r.status_code == 200
    return r.json()


def test_create_status_destroy_over_http(server, target):
    assert get(server, "/status") == {"code": 200, "success": True, "result": "success"}
    original = call(target, "Query")
    # exactly the URL blade's cplus executor builds (flags url-encoded, port/debug its own)
    value = urllib.parse.quote('"web",error:db@@##is@@##down')
    url = (f"{server.base}/create?target=go&suid=h1&action=return&pid={target.pid}"
           f"&func={urllib.parse.quote('main.Query')}&value={value}&port={server.port}"
           "&debug=true")
    r = requests.get(url, timeout=120)
    assert r.status_code == 200 and r.json() == {"code": 200, "success": True, "result": "h1"}
    assert call(target, "Query") == '"web",err(db is down|eof=false|nf=false)'
    rec = get(server, "/status", suid="h1")["result"]
    assert rec["status"] == "Success" and rec["pid"] == target.pid
    resp = get(server, "/destroy", suid="h1")
    assert resp["success"] and resp["result"]["status"] == "Destroyed"
    assert call(target, "Query") == original and differences_beyond_retained(server.home, target.pid) == []


def test_failures_are_responses_not_http_errors(server, target):
    resp = get(server, "/create", target="go", suid="h2", action="return", pid=target.pid,
               func="main.Qery", value="1")
    assert resp["success"] is False and resp["code"] == 47000 and "main.Query" in resp["error"]
    resp = get(server, "/destroy", suid="nope")
    assert resp["success"] is False and resp["code"] == 67002
    resp = get(server, "/create", target="go", action="return", pid=target.pid)
    assert resp["code"] == 45000 and "suid" in resp["error"]
    r = requests.get(f"{server.base}/create?target=go&suid=h3&action=return&func=a&func=b",
                     timeout=30)
    assert r.json()["code"] == 46000 and "func given 2 times" in r.json()["error"]
    assert get(server, "/bogus")["code"] == 49000


def test_destroy_by_matchers_and_remove(server, target):
    for uid, func, value in (("m1", "main.Query", '"a",nil'), ("m2", "main.Store.Count", "5")):
        assert get(server, "/create", target="go", suid=uid, action="return", pid=target.pid,
                   func=func, value=value)["success"]
    resp = get(server, "/destroy", suid="unknown", target="go", action="return",
               func="main.Store.Count")
    assert resp["success"] and resp["result"]["destroyed"] == ["m2"], resp
    assert call(target, "Count") != "5" and call(target, "Query") == '"a",<nil>'
    assert get(server, "/destroy", suid="m1")["success"]
    assert differences_beyond_retained(server.home, target.pid) == []
    assert get(server, "/remove")["success"]
    server.wait(20)  # the server stops after answering
    assert server.returncode == 0


def test_loopback_only_by_default(server):
    # the listening socket is bound to 127.0.0.1, not to every address
    local = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    listening = [f[1] for f in local if f[3] == "0A" and int(f[1].split(":")[1], 16) == server.port]
    assert listening == ["0100007F:%04X" % server.port]
    addrs = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    for a in addrs - {"127.0.0.1"}:
        with pytest.raises(OSError):
            socket.create_connection((a, server.port), timeout=2).close()
