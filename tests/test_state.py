"""State store: location, permissions, transactions, corruption, and concurrent writers."""
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from blade_go import state as st
from blade_go.errors import BladeError, Code

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path):
    return st.StateStore(tmp_path / "home")


def test_home_locations(monkeypatch, tmp_path):
    monkeypatch.setenv("BLADE_GO_HOME", str(tmp_path / "x"))
    assert st.home() == tmp_path / "x"
    monkeypatch.delenv("BLADE_GO_HOME")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert st.home() == Path("/var/run/blade-go")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert st.home() == tmp_path / ".blade-go"


def test_permissions_and_helper_paths(store):
    store.create({"uid": "u1", "target": "go", "action": "return"})
    assert stat.S_IMODE(store.home.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.lock_path.stat().st_mode) == 0o600
    assert st.sessions_dir(store.home) == store.home / "sessions"
    assert stat.S_IMODE((store.home / "sessions").stat().st_mode) == 0o700
    assert st.log_path(store.home) == store.home / "blade-go.log"
    # atomic writes leave no temp files behind
    assert sorted(p.name for p in store.home.iterdir()) == ["sessions", "state.json", "state.lock"]


def test_record_lifecycle(store):
    rec = store.create({"uid": "u1", "target": "go", "action": "return", "pid": 5})
    assert rec["status"] == st.CREATED and rec["create_time"] == rec["update_time"]
    with pytest.raises(BladeError) as e:
        store.create({"uid": "u1"})
    assert e.value.code == Code.PARAMETER_ILLEGAL and "u1" in e.value.message
    store.update("u1", lambda r: r["record"].update(patches=[1, 2]))
    rec = store.set_status("u1", st.SUCCESS)
    assert rec["record"] == {"patches": [1, 2]} and rec["status"] == st.SUCCESS
    assert store.get("u1")["update_time"] >= rec["create_time"]
    with pytest.raises(BladeError) as e:
        store.get("nope")
    assert e.value.code == Code.DATA_NOT_FOUND and "nope" in e.value.message
    with pytest.raises(BladeError) as e:
        store.update("nope", lambda r: None)
    assert e.value.code == Code.DATA_NOT_FOUND


def test_list_filters_newest_first(store):
    for i in range(5):
        store.create({"uid": f"u{i}", "target": "go", "action": "return"})
    store.set_status("u1", st.SUCCESS)
    store.set_status("u3", st.SUCCESS)
    assert [r["uid"] for r in store.list()] == ["u4", "u3", "u2", "u1", "u0"]
    assert [r["uid"] for r in store.list(status=st.SUCCESS)] == ["u3", "u1"]
    assert [r["uid"] for r in store.list(limit=2)] == ["u4", "u3"]
    assert store.list(action="delay") == []


def test_transaction_is_all_or_nothing_and_reentrant(store):
    with store.transaction() as data:
        data["caves"] = {"42": [[10, 20]]}
        store.create({"uid": "inner"})  # nested in the same process: no deadlock
    assert store.snapshot()["caves"] == {"42": [[10, 20]]}
    with pytest.raises(RuntimeError):
        with store.transaction() as data:
            data["caves"]["42"].append([30, 40])
            raise RuntimeError("handler failed")
    assert store.snapshot()["caves"] == {"42": [[10, 20]]}
    assert store.get("inner")["status"] == st.CREATED


@pytest.mark.parametrize("content", ["{not json", '{"schema": 1}', "[]"])
def test_corrupt_state_is_reported_not_reset(store, content):
    store.create({"uid": "u1"})
    store.path.write_text(content)
    for op in (lambda: store.get("u1"), lambda: store.create({"uid": "u2"}), store.list):
        with pytest.raises(BladeError) as e:
            op()
        assert e.value.code == Code.DATABASE_ERROR and str(store.path) in e.value.message
    assert store.path.read_text() == content  # never silently reset


def test_unreadable_state_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BladeError) as e:
        st.StateStore(blocker / "home").create({"uid": "u"})
    assert e.value.code == Code.DATABASE_ERROR and "state directory" in e.value.message


WRITER = textwrap.dedent("""\
    import sys
    sys.path.insert(0, {repo!r})
    from blade_go.state import StateStore
    store, me, n = StateStore(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    for i in range(n):
        store.create({{"uid": f"{{me}}-{{i}}"}})
        store.update("shared", lambda r: r["record"].update(n=r["record"]["n"] + 1))
        with store.transaction() as data:
            data["counter"] = data.get("counter", 0) + 1
    """)


def test_concurrent_writers_lose_no_update(store):
    store.create({"uid": "shared", "record": {"n": 0}})
    procs, n = 4, 40
    script = WRITER.format(repo=str(REPO))
    writers = [subprocess.Popen([sys.executable, "-c", script, str(store.home), f"w{k}", str(n)])
               for k in range(procs)]
    assert [w.wait(timeout=120) for w in writers] == [0] * procs
    data = json.loads(store.path.read_text())
    assert data["experiments"]["shared"]["record"]["n"] == procs * n
    assert data["counter"] == procs * n
    assert len(data["experiments"]) == procs * n + 1
