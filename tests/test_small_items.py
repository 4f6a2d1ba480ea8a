"""Issue 7, point 9: small failures that answered 54000 internal errors or misled the user."""
import json
import os

import pytest

from blade_go.errors import Code


def _write_state(home, experiments):
    os.makedirs(home, mode=0o700, exist_ok=True)
    with open(os.path.join(home, "state.json"), "w") as f:
        json.dump({"schema": 1, "experiments": experiments}, f)


@pytest.mark.parametrize("rec", [{"status": "Success"},
                                 {"status": "Success", "action": "return", "target": "go",
                                  "pid": 1, "record": {"patches": [{"addr": 5}]}},
                                 {"status": "Success", "action": "return", "record": None},
                                 {"uid": "u1"}, "junk"],
                         ids=["only-status", "patch-missing-fields", "record-null",
                              "no-status", "not-an-object"])
def test_records_missing_fields_give_clear_errors_not_key_errors(blade, rec):
    _write_state(blade.home, {"u1": rec})
    for cmd in (("status", "u1"), ("destroy", "u1"), ("status", "--type", "create")):
        code, resp = blade.run(*cmd)
        assert resp["code"] != Code.UNEXPECTED_STATUS, (cmd, resp)
        assert "KeyError" not in json.dumps(resp) and "internal error" not in json.dumps(resp)


def test_non_utf8_bytes_in_state_json_are_reported_as_corruption(blade):
    _write_state(blade.home, {"u1": {"status": "Success", "error": "x"}})
    path = os.path.join(blade.home, "state.json")
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(raw.replace(b'"x"', b'"\xff\xfe"'))
    for cmd in (("status", "u1"), ("destroy", "u1"), ("status", "--type", "create")):
        code, resp = blade.run(*cmd)
        assert code == 1 and resp["code"] == Code.DATABASE_ERROR and "corrupt" in resp["error"]
    with open(path, "rb") as f:
        assert b"\xff\xfe" in f.read()  # left untouched: it may hold original bytes


@pytest.mark.parametrize("flag,value", [("--pid", "١٢٣"), ("--pid", "１２"), ("--pid", "12,٣"),
                                        ("--timeout", "٣٠"), ("--timeout", "３s")])
def test_non_ascii_digits_are_not_numbers(blade, flag, value):
    args = ["create", "go", "return", "--func", "main.Query", "--value", "1"]
    args += [flag, value] if flag == "--pid" else ["--pid", "1", flag, value]
    code, resp = blade.run(*args)
    assert code == 1 and resp["code"] == Code.PARAMETER_ILLEGAL, resp
    assert flag in resp["error"]


def test_inspect_pid_with_non_ascii_digits(blade):
    code, resp = blade.run("inspect", "--pid", "²")
    assert resp["code"] == Code.PARAMETER_ILLEGAL, resp


def test_a_100_kb_func_is_not_echoed_whole(blade):
    name = "main." + "F" * 100_000
    code, resp = blade.run("create", "go", "return", "--pid", "1", "--func", name,
                           "--value", "1")
    assert code == 1 and resp["code"] == Code.PARAMETER_ILLEGAL
    assert len(resp["error"]) < 1000 and "100005 characters" in resp["error"]


def test_a_long_func_is_truncated_in_not_found(e2e_binary):
    from blade_go.inspector import open_binary
    from blade_go.errors import BladeError
    with open_binary(e2e_binary) as b:
        for n in (3000, 60_000):
            with pytest.raises(BladeError) as e:
                b.find_function("main." + "G" * n)
            assert e.value.code == Code.PARAMETER_INVALID and len(e.value.message) < 1000
            assert f"({n + 5} characters)" in e.value.message


def _call(target, name):
    mark = target.mark()
    target.send_line(f"call {name}")
    return target.wait_for_line(rf"^{name} => ", since=mark, timeout=10).split(" => ", 1)[1]


def test_value_bytes_that_are_not_utf8(blade, e2e_binary, target_factory):
    """A Go string may hold any bytes: they are injected as given, never a 54000."""
    import subprocess
    import sys
    target = target_factory(e2e_binary)
    original = _call(target, "Query")
    argv = [sys.executable, "-m", "blade_go", "create", "go", "return", "--pid",
            str(target.pid), "--func", "main.Query", "--value"]
    p = subprocess.run([a.encode() for a in argv] + [b'"a\xffb",error:\xfe'],
                       capture_output=True, env=blade.env, timeout=120)
    resp = json.loads(p.stdout)
    assert resp["success"], resp
    assert _call(target, "Query") == '"a\\xffb",err(\ufffd|eof=false|nf=false)'
    status = blade.ok("status", resp["result"])
    assert status["flags"]["value"] == '"a\udcffb",error:\udcfe'  # stored, readable back
    blade.ok("destroy", resp["result"])
    assert _call(target, "Query") == original
    # integers: still parse errors, never internal ones
    p = subprocess.run([a.encode() for a in argv[:-3]] + [b"--func", b"main.Ints", b"--value",
                                                          b"1,2,3,\xff,5"],
                       capture_output=True, env=blade.env, timeout=120)
    resp = json.loads(p.stdout)
    assert resp["code"] == Code.PARAMETER_ILLEGAL and "result 3" in resp["error"], resp
