"""The main paths once on a stock dlv: blade-go keeps working without blade-go's delve patches.

$TOOLS_DIR/bin/dlv (what the rest of the suite uses) is the patched build
(build/delve/build.sh); $TOOLS_DIR/bin-stock/dlv is the same delve version built from the same
module source without the patches. create / status / destroy of `return` and `delay` run here
on the stock one; the results say which dlv held the target and how long it was stopped.
"""
import os

import pytest

from tests.support.blade import Blade
from tests.support.fixtures import build_fixture
from tests.support.targets import call, differences_beyond_retained, text_differences
from tests.support.toolchains import require_stock_dlv
from tests.test_delay_e2e import call as timed_call


@pytest.fixture
def stock_blade(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    return Blade(home, env={"BLADE_GO_DLV": require_stock_dlv()})


def _paused_by_stock(resp):
    paused = resp["target_paused"]
    assert paused["dlv"] == "stock"
    return paused


def test_return_on_stock_dlv(stock_blade, e2e_binary, target_factory):
    t = target_factory(e2e_binary)
    original = call(t, "Query")
    code, resp = stock_blade.run("create", "go", "return", "--pid", t.pid, "--func", "main.Query",
                                 "--value", '"chaos",error:stock')
    assert code == 0 and resp["success"], resp
    uid = resp["result"]
    paused = _paused_by_stock(resp)
    assert paused["attach_ms"] > 0 and len(paused["halts_ms"]) >= 1  # this create attached
    assert call(t, "Query") == '"chaos",err(stock|eof=false|nf=false)'
    status = stock_blade.ok("status", uid)
    assert status["status"] == "Success" and status["live"]["dlv_kind"] == "stock"
    assert status["dlv"]["kind"] == "stock" and status["dlv"]["preload"] is False
    assert status["dlv"]["in_use"] and "loads the" in status["dlv"]["first_attach_pause"]
    environ = open(f"/proc/{status['live']['dlv_pid']}/environ", "rb").read().split(b"\0")
    assert not any(e.startswith(b"GOGC=") for e in environ) or "GOGC" in os.environ
    # a second experiment on the attached process stops it only for its apply
    code, resp2 = stock_blade.run("create", "go", "return", "--pid", t.pid, "--func",
                                  "main.Flag", "--value", "false")
    assert code == 0 and "attach_ms" not in _paused_by_stock(resp2)
    for u in (resp2["result"], uid):
        stock_blade.ok("destroy", u)
    assert call(t, "Query") == original
    # code byte-exact; a value the program may still hold stays (issue 16)
    assert differences_beyond_retained(stock_blade.home, t.pid) == []


def test_delay_on_stock_dlv(stock_blade, target_factory):
    t = target_factory(build_fixture("faults_target"))
    assert timed_call(t, "Work")[0] == "1004"
    code, resp = stock_blade.run("create", "go", "delay", "--pid", t.pid, "--func", "main.Work",
                                 "--time", "150")
    assert code == 0 and resp["success"], resp
    _paused_by_stock(resp)
    got, ms = timed_call(t, "Work")
    assert got == "1004" and 149 <= ms < 1000
    assert stock_blade.ok("status", resp["result"])["dlv"]["kind"] == "stock"
    stock_blade.ok("destroy", resp["result"])
    assert timed_call(t, "Work")[1] < 100
    assert text_differences(t.pid) == []
