"""The real blade 1.8.0 reaches `blade-go server` over HTTP, as its cplus agent:
`blade-go chaosblade install --via cplus`, `blade prepare cplus --port P`, then
`blade create go return ...` / `blade status` / `blade destroy` / `blade revoke`."""
import time

import pytest

from tests.support import chaosblade as cb
from tests.support.targets import call, differences_beyond_retained, free_port


@pytest.fixture
def release(tmp_path):
    with cb.installed_release(tmp_path / "release", "--via", "cplus") as rel:
        yield rel


@pytest.fixture
def target(e2e_binary, target_factory):
    return target_factory(e2e_binary)


def agent_pids(port):
    import os
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                argv = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if b"chaosblade-exec-cplus" in argv and str(port).encode() in argv:
                out.append(int(d))
    return out


def test_blade_drives_blade_go_server_as_its_cplus_agent(release, tmp_path, target):
    blade = cb.BladeCLI(release, tmp_path / "state")
    port = free_port()
    try:
        prep = blade.ok("prepare", "cplus", "--port", port)
        assert len(agent_pids(port)) == 1
        original = call(target, "Query")
        uid = blade.ok("create", "go", "return", "--pid", target.pid, "--func", "main.Query",
                       "--value", '"agent",error:over http')
        assert call(target, "Query") == '"agent",err(over http|eof=false|nf=false)'
        assert blade.record(uid)["Status"] == "Success"
        own = cb.blade_go("status", uid, env={"BLADE_GO_HOME": str(blade.state_home)})
        assert own["result"]["status"] == "Success" and own["result"]["pid"] == target.pid
        blade.ok("destroy", uid)
        assert call(target, "Query") == original and \
            differences_beyond_retained(blade.state_home, target.pid) == []
        assert blade.record(uid)["Status"] == "Destroyed"
        # a refused create: blade-go's message reaches the user through the agent
        resp = blade.response("create", "go", "return", "--pid", target.pid, "--func",
                              "main.Qery", "--value", "1")
        assert resp["success"] is False and resp["code"] == 47000 and "main.Query" in resp["error"]
        blade.ok("revoke", prep)
        deadline = time.time() + 20
        while agent_pids(port) and time.time() < deadline:
            time.sleep(0.2)
        assert agent_pids(port) == []
    finally:
        import os
        import signal
        for pid in agent_pids(port):
            os.kill(pid, signal.SIGKILL)
