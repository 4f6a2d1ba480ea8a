"""The CLI end to end (in process and as the installed console script), with a fake executor."""
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from blade_go import actions
from blade_go.actions import Executor
from blade_go.cli import run
from blade_go.errors import BladeError, Code

REPO = Path(__file__).resolve().parents[1]


class FakeExecutor(Executor):
    calls = []

    def create(self, ctx):
        FakeExecutor.calls.append(("create", ctx))
        if ctx.flags["func"] == "main.fails":
            raise BladeError(Code.PARAMETER_INVALID, "function main.fails not found")
        if ctx.flags["func"] == "main.crash":
            raise ZeroDivisionError("boom")
        print("noise from a handler")  # must not reach stdout
        out = {"patches": ["p1"], "result": {"func": ctx.flags["func"]}}
        if ctx.flags["func"] == "main.warns":
            out["warnings"] = ["2 call site(s) inlined"]
        return out

    def destroy(self, ctx, record):
        FakeExecutor.calls.append(("destroy", record))
        return {"restored": len(record["patches"])}

    def status(self, ctx, record):
        return {"session": "alive", "pid": ctx.pid}


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("BLADE_GO_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(actions.HANDLERS, "return", FakeExecutor)
    FakeExecutor.calls = []
    return tmp_path / "home"


@pytest.fixture
def target():
    name = "bgcli-" + uuid.uuid4().hex[:8]
    p = subprocess.Popen(["bash", "-c", 'exec -a "$0" sleep 300', name])
    deadline = time.time() + 5
    while not Path(f"/proc/{p.pid}/cmdline").read_bytes().startswith(name.encode()):
        assert time.time() < deadline, "target did not start"
        time.sleep(0.01)
    yield p
    p.kill()
    p.wait()


def cli(capsys, *argv):
    """Run blade-go in process; returns (exit status, parsed single JSON line, stderr)."""
    code = run(list(argv))
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 1, out
    return code, json.loads(lines[0]), err


def test_create_status_destroy_roundtrip(capsys, target):
    code, resp, err = cli(capsys, "create", "go", "return", "--pid", str(target.pid),
                          "--func", "main.f", "--value", "nil,error:down", "--timeout", "2m")
    assert code == 0 and resp["code"] == 200 and resp["success"] is True and "error" not in resp
    uid = resp["result"]
    assert len(uid) == 16 and int(uid, 16) >= 0
    assert "noise from a handler" in err
    ctx = FakeExecutor.calls[0][1]
    assert (ctx.uid, ctx.pid, ctx.timeout, ctx.action) == (uid, target.pid, 120, "return")

    code, resp, _ = cli(capsys, "status", uid)
    rec = resp["result"]
    assert code == 0 and rec["status"] == "Success" and rec["pid"] == target.pid
    assert rec["flags"] == {"func": "main.f", "value": "nil,error:down", "pid": [target.pid],
                            "timeout": 120}
    assert rec["command"].startswith("create go return --func main.f --value nil,error:down")
    assert rec["result"] == {"func": "main.f"} and rec["live"] == {"session": "alive",
                                                                   "pid": target.pid}
    assert rec["exe"] == os.path.realpath(shutil.which("sleep"))

    code, resp, _ = cli(capsys, "destroy", uid)
    assert code == 0 and resp["result"] == {"uid": uid, "status": "Destroyed",
                                            "restored": {"restored": 1}}
    assert FakeExecutor.calls[-1] == ("destroy", {"patches": ["p1"],
                                                  "result": {"func": "main.f"}})
    code, resp, _ = cli(capsys, "destroy", uid)
    assert code == 0 and "already destroyed" in resp["result"]["message"]
    assert len([c for c in FakeExecutor.calls if c[0] == "destroy"]) == 1


def test_chaosblade_invocation_forms(capsys, target):
    code, resp, _ = cli(capsys, "create", "go", "ret", "--uid=cb-1", f"--pid={target.pid}",
                        "--func=main.(*S).Get", "--value=1", "--async=true", "--debug=false")
    assert code == 0 and resp["result"] == "cb-1", resp
    code, resp, _ = cli(capsys, "create", "go", "return", "--uid=cb-1", f"--pid={target.pid}",
                        "--func=main.f", "--value=1")
    assert code == 1 and resp["code"] == Code.PARAMETER_ILLEGAL and "cb-1" in resp["error"]
    code, resp, _ = cli(capsys, "destroy", "go", "return", "--uid=cb-1",
                        f"--pid={target.pid}", "--func=main.f")
    assert code == 0 and resp["result"]["status"] == "Destroyed"
    code, resp, _ = cli(capsys, "destroy", "go", "return", "--uid=cb-1", "--debug=true")
    assert code == 0 and "already destroyed" in resp["result"]["message"]
    code, resp, _ = cli(capsys, "destroy", "go", "explode", "--uid=cb-1")
    assert code == 1 and resp["code"] == Code.COMMAND_ILLEGAL


def test_destroy_by_matchers(capsys, target):
    base = ["create", "go", "return", f"--pid={target.pid}", "--value=1"]
    for uid, func in (("m1", "main.a"), ("m2", "main.a"), ("m3", "main.b")):
        assert cli(capsys, *base, f"--func={func}", f"--uid={uid}")[1]["success"]
    # blade's form: --uid=unknown plus the flags the user gave
    code, resp, _ = cli(capsys, "destroy", "go", "return", "--uid=unknown", "--func=main.a",
                        f"--pid={target.pid}", "--debug=true")
    assert code == 0, resp
    assert sorted(resp["result"]["destroyed"]) == ["m1", "m2"]
    assert "m1" in resp["result"]["message"]
    statuses = {r["uid"]: r["status"] for r in cli(capsys, "status", "--type", "create")[1]["result"]}
    assert statuses == {"m1": "Destroyed", "m2": "Destroyed", "m3": "Success"}
    # a value that matches nothing destroys nothing, and says so
    code, resp, _ = cli(capsys, "destroy", "go", "return", "--func", "main.b", "--value", "2")
    assert code == 0 and resp["result"]["destroyed"] == []
    assert resp["result"]["message"] == "no live experiment matches"
    # a flag the action does not have is refused, not ignored
    code, resp, _ = cli(capsys, "destroy", "go", "return", "--fnuc=main.b")
    assert code == 1 and resp["code"] == Code.COMMAND_ILLEGAL and "--fnuc" in resp["error"]
    code, resp, _ = cli(capsys, "destroy", "go", "ret", "--func=main.b", "--value=1")
    assert resp["result"]["destroyed"] == ["m3"]


def test_repeated_flags_are_refused(capsys, target):
    for argv in (["--func", "main.a", "--func=main.b"], ["--func=main.a", "--func=main.a"],
                 ["--func=main.a", f"--pid={target.pid}"]):
        code, resp, _ = cli(capsys, "create", "go", "return", f"--pid={target.pid}",
                            "--value=1", *argv)
        assert code == 1 and resp["code"] == Code.PARAMETER_ILLEGAL, resp
        name = "--pid" if "--pid" in argv[-1] else "--func"
        assert f"{name} given 2 times" in resp["error"]
    code, resp, _ = cli(capsys, "destroy", "go", "return", "--func=a", "--func=b")
    assert code == 1 and resp["code"] == Code.PARAMETER_ILLEGAL
    # blade passes an imposed uid twice (its --uid=U, then the user's flags): same value, fine
    code, resp, _ = cli(capsys, "create", "go", "return", "--uid=u2", f"--pid={target.pid}",
                        "--value=1", "--func=main.a", "--uid=u2")
    assert code == 0 and resp["result"] == "u2"
    code, resp, _ = cli(capsys, "create", "go", "return", "--uid=u3", f"--pid={target.pid}",
                        "--value=1", "--func=main.a", "--uid=u4")
    assert code == 1 and "--uid given 2 times" in resp["error"]
    # a value that looks like a flag name is a value, not a repetition
    code, resp, _ = cli(capsys, "create", "go", "return", f"--pid={target.pid}", "--func",
                        "--value", "--value=1")
    assert code == 0, resp


def test_blade_space_encoding_is_decoded(capsys, target):
    code, resp, _ = cli(capsys, "create", "go", "return", f"--pid={target.pid}",
                        "--func=main.f", "--value=nil,error:db@@##is@@##down", "--uid=sp")
    assert code == 0
    assert FakeExecutor.calls[-1][1].flags["value"] == "nil,error:db is down"
    code, resp, _ = cli(capsys, "destroy", "go", "return", "--uid=unknown",
                        "--value=nil,error:db@@##is@@##down")
    assert resp["result"]["destroyed"] == ["sp"]


def test_warnings_have_their_own_field(capsys, target):
    code, resp, _ = cli(capsys, "create", "go", "return", f"--pid={target.pid}",
                        "--func=main.warns", "--value=1", "--uid=w1")
    assert code == 0 and resp["result"] == "w1"
    assert resp["warnings"] == ["2 call site(s) inlined"] and "error" not in resp


def _under_blade(home, *argv):
    env = {**os.environ, "BLADE_GO_HOME": str(home), "BLADE_GO_UNDER_BLADE": "1",
           "PYTHONPATH": str(REPO)}
    code = ("import sys\nfrom tests.test_cli import FakeExecutor\nfrom blade_go import actions\n"
            "actions.HANDLERS['return'] = FakeExecutor\nfrom blade_go.cli import main\n"
            "main(sys.argv[1:])\n")
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=60)


def test_under_blade_exit_zero_json_only_log_file(home, target):
    # what blade needs: exit 0 whatever happened, stdout+stderr = the one Response
    out = _under_blade(home, "create", "go", "return", f"--pid={target.pid}", "--func=main.fails",
                       "--value=1", "--debug=true")
    assert out.returncode == 0 and out.stderr == ""
    resp = json.loads(out.stdout)
    assert resp == {"code": Code.PARAMETER_INVALID, "success": False,
                    "error": "function main.fails not found"}
    log_text = (home / "blade-go.log").read_text()
    assert "argv:" in log_text and "noise" not in out.stdout  # debug went to the log
    out = _under_blade(home, "create", "go", "return", f"--pid={target.pid}", "--func=main.warns",
                       "--value=1", "--uid=bw", "--endpoint=http://127.0.0.1:9/x")
    assert out.returncode == 0 and out.stderr == ""
    resp = json.loads(out.stdout)
    # blade keeps `error` of a successful create in its record: the warning goes there too
    assert resp["result"] == "bw" and resp["error"] == "warning: 2 call site(s) inlined"
    # --endpoint is blade's job under blade: no "unreachable" warning from a second POST
    assert resp["warnings"] == ["2 call site(s) inlined"]
    assert "noise from a handler" in (home / "blade-go.log").read_text()


@pytest.mark.parametrize("argv,code,words", [
    (["create", "go", "return", "--pid", "1"], Code.PARAMETER_LESS, ["--func"]),
    (["create", "go", "return", "--func", "f", "--value", "v"], Code.PARAMETER_LESS,
     ["pid|process|process-cmd"]),
    (["create", "go", "return", "--pid", "x", "--func", "f", "--value", "v"],
     Code.PARAMETER_ILLEGAL, ["--pid", "process id"]),
    (["create", "go", "return", "--pid", "1", "--func", "f", "--value", "v", "--timeout", "soon"],
     Code.PARAMETER_ILLEGAL, ["--timeout", "seconds"]),
    (["create", "go", "return", "--pid", "1", "--func", "f", "--value", "v", "--endpoint", "x"],
     Code.PARAMETER_ILLEGAL, ["--endpoint", "URL"]),
    (["create", "go", "return", "--pid", "1", "--func", "f", "--value", "v", "--uid", "a b"],
     Code.PARAMETER_ILLEGAL, ["--uid"]),
    (["create", "go", "return", "--pid", "1", "--func", "f", "--value", "v", "--async=maybe"],
     Code.PARAMETER_ILLEGAL, ["--async", "boolean"]),
    (["create", "go", "return", "--pid", "1", "--bogus", "1"], Code.COMMAND_ILLEGAL, ["--bogus"]),
    (["create", "go", "return", "--pid", "1", "--func"], Code.PARAMETER_LESS, ["--func"]),
    (["create", "go", "explode"], Code.COMMAND_ILLEGAL, ["explode", "return"]),
    (["create", "java", "x"], Code.COMMAND_ILLEGAL, ["java"]),
    (["create", "go"], Code.PARAMETER_LESS, ["action"]),
    (["create"], Code.PARAMETER_LESS, ["target"]),
    (["frobnicate"], Code.COMMAND_ILLEGAL, ["frobnicate"]),
    (["destroy"], Code.PARAMETER_LESS, ["uid"]),
    (["destroy", "nope"], Code.DATA_NOT_FOUND, ["nope"]),
    (["destroy", "nope", "extra"], Code.COMMAND_ILLEGAL, ["extra"]),
    (["status", "nope"], Code.DATA_NOT_FOUND, ["nope"]),
    (["status"], Code.PARAMETER_LESS, ["--type"]),
    (["status", "--type", "prepare"], Code.PARAMETER_ILLEGAL, ["--type"]),
    (["status", "--type", "create", "--status", "Weird"], Code.PARAMETER_ILLEGAL, ["Success"]),
    (["status", "--type", "create", "--limit", "0"], Code.PARAMETER_ILLEGAL, ["--limit"]),
    (["inspect"], Code.PARAMETER_LESS, ["--pid", "--binary"]),
    (["inspect", "--pid", "abc"], Code.PARAMETER_ILLEGAL, ["--pid"]),
])
def test_errors_are_one_json_response(capsys, argv, code, words):
    status, resp, _ = cli(capsys, *argv)
    assert status == 1 and resp["success"] is False and resp["code"] == code
    assert set(resp) == {"code", "success", "error"}
    for w in words:
        assert w in resp["error"], resp["error"]


def test_targeting_errors_through_cli(capsys, target):
    status, resp, _ = cli(capsys, "create", "go", "return", "--process", "bgcli-nothing-here",
                          "--func", "f", "--value", "v")
    assert status == 1 and resp["code"] == Code.PROCESS_ID_BY_NAME_FAILED


def test_handler_errors_are_recorded(capsys, target):
    status, resp, _ = cli(capsys, "create", "go", "return", "--pid", str(target.pid),
                          "--func", "main.fails", "--value", "1", "--uid", "bad-1")
    assert status == 1 and resp == {"code": Code.PARAMETER_INVALID, "success": False,
                                    "error": "function main.fails not found"}
    _, resp, _ = cli(capsys, "status", "bad-1")
    assert resp["result"]["status"] == "Error"
    assert resp["result"]["error"] == "function main.fails not found"
    _, resp, _ = cli(capsys, "destroy", "bad-1")  # nothing was applied: just marked Destroyed
    assert resp["success"] and not [c for c in FakeExecutor.calls if c[0] == "destroy"]


def test_internal_error_no_traceback_unless_debug(capsys, target, home):
    argv = ["create", "go", "return", "--pid", str(target.pid), "--func", "main.crash",
            "--value", "1"]
    status, resp, err = cli(capsys, *argv)
    assert status == 1 and resp["code"] == Code.UNEXPECTED_STATUS
    assert "ZeroDivisionError: boom" in resp["error"] and "Traceback" not in err
    status, resp, err = cli(capsys, *argv, "--debug")
    assert status == 1 and "Traceback" in err and "Traceback" not in json.dumps(resp)
    assert "Traceback" in (home / "blade-go.log").read_text()
    assert str(home / "blade-go.log") in resp["error"]


def test_missing_or_broken_handler(capsys, target, monkeypatch):
    argv = ["create", "go", "return", "--pid", str(target.pid), "--func", "f", "--value", "1"]
    monkeypatch.setitem(actions.HANDLERS, "return", "blade_go.no_such_module:X")
    status, resp, _ = cli(capsys, *argv)
    assert resp["code"] == Code.HANDLER_EXEC_NOT_FOUND and "no_such_module" in resp["error"]
    monkeypatch.delitem(actions.HANDLERS, "return")
    status, resp, _ = cli(capsys, *argv)
    assert resp["code"] == Code.HANDLER_EXEC_NOT_FOUND and "'return'" in resp["error"]
    _, resp, _ = cli(capsys, "status", "--type", "create")
    assert resp["result"] == []  # nothing was recorded for a create that could not start


def test_list_with_status_and_limit(capsys, target):
    base = ["create", "go", "return", "--pid", str(target.pid), "--value", "1"]
    for i, func in enumerate(["main.a", "main.fails", "main.b"]):
        _, resp, _ = cli(capsys, *base, "--func", func, "--uid", f"l{i}")
        assert resp["success"] == (func != "main.fails"), resp
    _, resp, _ = cli(capsys, "status", "--type", "create")
    assert [r["uid"] for r in resp["result"]] == ["l2", "l1", "l0"]
    assert "record" not in resp["result"][0]
    _, resp, _ = cli(capsys, "status", "--type=create", "--status=success", "--limit=1")
    assert [r["uid"] for r in resp["result"]] == ["l2"]


class _Collector(http.server.BaseHTTPRequestHandler):
    bodies = []

    def do_POST(self):
        n = int(self.headers["Content-Length"])
        _Collector.bodies.append(json.loads(self.rfile.read(n)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_endpoint_receives_record_and_failure_is_a_warning(capsys, target):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/report"
        base = ["create", "go", "return", "--pid", str(target.pid), "--value", "1"]
        _, resp, _ = cli(capsys, *base, "--func", "main.f", "--endpoint", url, "--uid", "e1")
        assert resp["result"] == "e1"
        _, resp, _ = cli(capsys, *base, "--func", "main.fails", "--endpoint", url)
        assert resp["code"] == Code.PARAMETER_INVALID
    finally:
        server.shutdown()
    ok, failed = _Collector.bodies
    assert ok["uid"] == "e1" and ok["status"] == "Success" and ok["pid"] == target.pid
    assert ok["result"] == {"func": "main.f"} and "record" not in ok
    assert failed["status"] == "Error" and "not found" in failed["error"]
    # nothing listens on the port any more: the experiment still succeeds, with a warning
    code, resp, _ = cli(capsys, *base, "--func", "main.f", "--endpoint", url, "--uid", "e2")
    assert code == 0 and resp["result"] == "e2"
    assert "unreachable" in resp["warnings"][0]
    _, resp, _ = cli(capsys, "status", "e2")
    assert resp["result"]["status"] == "Success"


def test_inspect_without_report_module(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "blade_go.inspector.report", None)
    status, resp, _ = cli(capsys, "inspect", "--binary", "/bin/true")
    assert status == 1 and resp["code"] == Code.HANDLER_EXEC_NOT_FOUND


# ---- the installed console script ----------------------------------------------------------

def sh(*argv, env_home):
    env = {**os.environ, "BLADE_GO_HOME": str(env_home)}
    return subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("exe", [["blade-go"], [sys.executable, "-m", "blade_go"]])
def test_console_script(exe, home):
    if exe == ["blade-go"] and not shutil.which("blade-go"):
        pytest.fail("blade-go is not installed (pip install -e .)")
    out = sh(*exe, "create", "go", "return", "--pid", "1", env_home=home)
    assert out.returncode == 1
    assert json.loads(out.stdout)["code"] == Code.PARAMETER_LESS
    assert out.stdout.count("\n") == 1 and "Traceback" not in out.stdout + out.stderr
    out = sh(*exe, "create", "go", "return", "-h", env_home=home)
    assert out.returncode == 0 and "--func" in out.stdout and "--process-cmd" in out.stdout
    assert "blade-go create go return --pid 4242 --func 'main.(*Store).GetUser'" in out.stdout
    out = sh(*exe, "status", "--type", "create", env_home=home)
    assert out.returncode == 0 and json.loads(out.stdout) == {"code": 200, "success": True,
                                                              "result": []}
    out = sh(*exe, "version", env_home=home)
    assert json.loads(out.stdout)["result"]["version"]


def test_stdout_of_child_processes_is_kept_off_stdout(tmp_path):
    # a handler whose child process writes to fd 1 must not corrupt the JSON answer
    code = (
        "import subprocess, sys\n"
        "from blade_go import actions\n"
        "class E(actions.Executor):\n"
        "    def create(self, ctx):\n"
        "        subprocess.run(['echo', 'child noise'])\n"
        "        return {}\n"
        "actions.HANDLERS['return'] = E\n"
        "from blade_go.cli import main\n"
        "main(sys.argv[1:])\n")
    p = subprocess.Popen(["sleep", "30"])
    try:
        out = subprocess.run([sys.executable, "-c", code, "create", "go", "return", "--pid",
                              str(p.pid), "--func", "f", "--value", "1"], capture_output=True,
                             text=True, env={**os.environ, "BLADE_GO_HOME": str(tmp_path)},
                             cwd=REPO, timeout=60)
    finally:
        p.kill()
        p.wait()
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["success"] is True
    assert "child noise" in out.stderr
