"""End to end: `blade-go create go return` on a live Go process, observed from its own output.

One target per module (the preinstalled Go, optimized build); each case creates an experiment,
asks the target to call the function, checks the injected values, destroys, and checks the
original values are back.
"""
import json
import os
import subprocess
import sys
import time

import pytest

from tests.support.blade import Blade
from tests.support.lifecycle import tracer as _dlv_attached_to
from tests.support.targets import call, text_differences, differences_beyond_retained

# (case id, --func, call name in the target, --value, what the target prints while injected)
CASES = [
    ("string+error", "main.Query", "Query", '"chaos",error:injected db error',
     '"chaos",err(injected db error|eof=false|nf=false)'),
    ("ptr-method+var", "main.(*Store).GetUser", "GetUser", "nil,var:main.ErrNotFound",
     "user(nil),err(not found|eof=false|nf=true)"),
    ("value-method", "main.Store.Count", "Count", "42", "42"),
    ("int-widths", "main.Ints", "Ints",
     "-1,-128,0xffff,-9223372036854775808,18446744073709551615",
     "-1,-128,65535,-9223372036854775808,18446744073709551615"),
    ("bool", "main.Flag", "Flag", "false", "false"),
    ("floats", "main.Floats", "Floats", "inf,-0.1,nan", "+Inf,-0.1,NaN"),
    ("complex-zero", "main.Complex", "Complex", "zero", "(0+0i)"),
    ("nils", "main.Nils", "Nils", "nil,nil,nil,nil,nil,nil",
     'bytes("",nil=true),user(nil),map(nil=true),chan(nil=true),func(nil=true),any(nil)'),
    ("more-than-registers", "main.Many", "Many", '11,12,13,14,15,16,17,18,19,20,21,"a,b"',
     '11,12,13,14,15,16,17,18,19,20,21,"a,b"'),
    ("struct-zero", "main.GetPoint", "GetPoint", "zero", '0,0,0,""'),
    ("array-zero", "main.Arr", "Arr", "zero", "[0 0 0]"),
    ("var-io-eof", "main.Read", "Read", "0,var:io.EOF", "0,err(EOF|eof=true|nf=false)"),
    ("named-float32", "main.Temp", "Temp", "-40.5", "-40.5"),
    ("generic", "main.Max[int]", "MaxInt", "99", "99"),
    ("closure", "main.makeAdder.func1", "Adder", "-7", "-7"),
    ("escaped-string", "main.Query", "Query", r'"tab\there \u00e9",nil', r'"tab\there é",<nil>'),
]


@pytest.fixture
def target(e2e_binary, target_factory):
    return target_factory(e2e_binary)


@pytest.mark.parametrize("func,name,value,injected", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_return_injects_and_destroy_restores(blade, target, func, name, value, injected):
    original = call(target, name)
    uid = blade.create_return(target.pid, func, value)
    assert call(target, name) == injected
    assert call(target, name) == injected  # every later call, not just the next one
    status = blade.ok("status", uid)
    assert status["status"] == "Success"
    blade.ok("destroy", uid)
    assert call(target, name) == original
    assert target.alive()


def test_destroy_restores_every_byte(blade, target):
    uids = [blade.create_return(target.pid, "main.Query", '"x",error:e1'),
            blade.create_return(target.pid, "main.Flag", "false"),
            blade.create_return(target.pid, "main.Many", "1,2,3,4,5,6,7,8,9,10,11,\"" + "s" * 300 + "\"")]
    assert text_differences(target.pid)  # the patches are really there
    for uid in uids:
        blade.ok("destroy", uid)
    assert differences_beyond_retained(blade.home, target.pid) == []
    again = blade.ok("destroy", uids[0])
    assert "already destroyed" in str(again).lower()


def test_inlined_call_sites_are_reported_not_changed(blade, target):
    """Direct calls of Small were inlined: they keep the original behaviour, calls through the
    function value run the out-of-line copy and get the injected value; the create result
    says which sites are not covered."""
    assert call(target, "Small") == "5,5"
    code, resp = blade.run("create", "go", "return", "--pid", target.pid, "--func",
                           "main.Small", "--value", "-9")
    assert code == 0 and isinstance(resp["result"], str), resp  # the result is always the uid
    assert any("main.call" in w and "inlined" in w for w in resp["warnings"]), resp
    assert call(target, "Small") == "5,-9"
    blade.ok("destroy", resp["result"])
    assert call(target, "Small") == "5,5"


def test_concurrent_creates_on_one_process(blade, target):
    """Parallel CLI processes share one session and never share cave bytes."""
    from concurrent.futures import ThreadPoolExecutor
    cases = CASES[:6]
    with ThreadPoolExecutor(len(cases)) as pool:
        uids = list(pool.map(lambda c: blade.create_return(target.pid, c[1], c[3]), cases))
    for c in cases:
        assert call(target, c[2]) == c[4]
    with ThreadPoolExecutor(len(cases)) as pool:
        list(pool.map(lambda u: blade.ok("destroy", u), uids))
    assert differences_beyond_retained(blade.home, target.pid) == []
    for _ in range(50):  # the supervisor detaches on its next poll once no experiment is live
        if _dlv_attached_to(target.pid) is None:
            break
        time.sleep(0.1)
    assert _dlv_attached_to(target.pid) is None


def test_second_experiment_on_same_function_is_refused(blade, target):
    uid = blade.create_return(target.pid, "main.Query", '"a",nil')
    resp = blade.fail("create", "go", "return", "--pid", target.pid, "--func", "main.Query",
                      "--value", '"b",nil')
    assert uid in resp["error"]
    assert call(target, "Query") == '"a",<nil>'
    blade.ok("destroy", uid)


@pytest.mark.parametrize("func,value,code,words", [
    ("main.Query", "1,2", 46000, ["result 1", "error"]),
    ("main.Query", '"only-one"', 46000, ["2 results"]),
    ("main.Flag", "maybe", 46000, ["bool"]),
    ("main.Ints", "1,300,3,4,5", 46000, ["int8"]),
    ("main.GetUser", "nil,nil", 47000, ["closest", "main.(*Store).GetUser"]),
    ("main.tiny", "1", 47000, ["inlined"]),
    ("main.Query", '"' + "x" * 20000 + '",nil', None, ["no room"]),
], ids=["type-mismatch", "count", "bad-bool", "int-range", "not-found", "inlined-only",
        "no-room"])
def test_refusals_leave_nothing_behind(blade, target, func, value, code, words):
    resp = blade.fail("create", "go", "return", "--pid", target.pid, "--func", func,
                      "--value", value)
    if code is not None:
        assert resp["code"] == code, resp
    for w in words:
        assert w.lower() in resp["error"].lower(), resp
    assert differences_beyond_retained(blade.home, target.pid) == []
    assert _dlv_attached_to(target.pid) is None
    assert call(target, "Query") == '"row-1",<nil>'


def test_not_a_go_process(blade):
    p = subprocess.Popen(["sleep", "60"])
    try:
        resp = blade.fail("create", "go", "return", "--pid", p.pid, "--func", "main.F",
                          "--value", "1")
        assert "go" in resp["error"].lower()
    finally:
        p.kill()


def test_no_dwarf_is_refused(blade, target_factory):
    from tests.support.fixtures import build_fixture
    t = target_factory(build_fixture("e2e_target", ldflags="-w"))
    resp = blade.fail("create", "go", "return", "--pid", t.pid, "--func", "main.Query",
                      "--value", '"a",nil')
    assert "dwarf" in resp["error"].lower()
    assert _dlv_attached_to(t.pid) is None


def test_no_permission_is_explained(blade, e2e_binary, target_factory):
    """A process that made itself non-dumpable can only be traced with CAP_SYS_PTRACE: run
    blade-go as root without that capability (uid 0 keeps access to its own files)."""
    t = target_factory(e2e_binary, env=dict(os.environ, NODUMP="1"))
    p = subprocess.run(["setpriv", "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace",
                        sys.executable, "-m", "blade_go", "create", "go", "return", "--pid",
                        str(t.pid), "--func", "main.Query", "--value", '"a",nil'],
                       capture_output=True, text=True, env=blade.env, timeout=60)
    resp = json.loads(p.stdout)
    assert p.returncode == 1 and resp["code"] == 43000, resp
    assert "permission" in resp["error"].lower()
    assert _dlv_attached_to(t.pid) is None
    assert differences_beyond_retained(blade.home, t.pid) == []


def test_another_tracer_is_named(blade, target, dlv):
    from tests.support.rpc import AttachedDelve
    other = AttachedDelve(dlv, target.pid)
    try:
        resp = blade.fail("create", "go", "return", "--pid", target.pid, "--func", "main.Query",
                          "--value", '"a",nil')
    finally:
        other.stop()
    assert str(other.proc.pid) in resp["error"] and "dlv" in resp["error"], resp
    assert call(target, "Query") == '"row-1",<nil>'


def test_bytes_changed_by_another_tool_are_not_overwritten(blade, target):
    """The session compares the live bytes with the executable's before writing: a function
    someone else already patched is refused, and the session detaches at once."""
    from blade_go.inspector import open_binary
    binary = open_binary(pid=target.pid)
    fn = binary.find_function("main.Complex")  # never called unless asked: safe to alter
    addr = fn.entry + binary.load_bias
    with open(f"/proc/{target.pid}/mem", "r+b") as mem:
        mem.seek(addr)
        original = mem.read(1)
        mem.seek(addr)
        mem.write(bytes([original[0] ^ 0xFF]))
    try:
        resp = blade.fail("create", "go", "return", "--pid", target.pid, "--func",
                          "main.Complex", "--value", "zero")
        assert "differ from the executable" in resp["error"], resp
        for _ in range(100):
            if _dlv_attached_to(target.pid) is None:
                break
            time.sleep(0.05)
        assert _dlv_attached_to(target.pid) is None, "session must detach after a refusal"
    finally:
        with open(f"/proc/{target.pid}/mem", "r+b") as mem:
            mem.seek(addr)
            mem.write(original)
    assert differences_beyond_retained(blade.home, target.pid) == []
    assert call(target, "Complex") == "(1+2i)"


def test_missing_dlv_says_how_to_install(tmp_path, target):
    blade = Blade(tmp_path / "home", env={"BLADE_GO_DLV": str(tmp_path / "no-dlv")})
    resp = blade.fail("create", "go", "return", "--pid", target.pid, "--func", "main.Query",
                      "--value", '"a",nil')
    assert resp["code"] == 52000 and "go install github.com/go-delve/delve" in resp["error"]
    rec = blade.ok("status", "--type", "create")[0]
    assert rec["status"] == "Error" and "dlv" in rec["error"]
    assert _dlv_attached_to(target.pid) is None
    assert text_differences(target.pid) == []
    assert call(target, "Query") == '"row-1",<nil>'


def test_unknown_uid(blade):
    resp = blade.fail("destroy", "0123456789abcdef")
    assert resp["code"] == 67002


