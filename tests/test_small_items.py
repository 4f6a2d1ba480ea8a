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
