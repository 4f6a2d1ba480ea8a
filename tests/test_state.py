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
    # a path blade-go cannot use says why and what to do (43000, issue 16)
    assert e.value.code == Code.FORBIDDEN and "is a file, not a directory" in e.value.message


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


# ---- trusted home (issue 7.7a) ------------------------------------------------------------
def _forbidden(fn):
    with pytest.raises(BladeError) as e:
        fn()
    assert e.value.code == Code.FORBIDDEN, e.value.message
    return e.value.message


def test_home_writable_by_others_is_refused(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    os.chmod(home, 0o777)
    msg = _forbidden(lambda: st.StateStore(home).list())
    assert "writable by group or others" in msg and str(home) in msg
    os.chmod(home, 0o770)
    _forbidden(lambda: st.sessions_dir(home))
    _forbidden(lambda: st.log_path(home))
    os.chmod(home, 0o755)  # readable by others is fine: nothing secret, nothing writable
    assert st.StateStore(home).list() == []
    assert not (home / "state.json").exists()


def test_home_in_a_group_writable_parent_is_refused_unless_sticky(tmp_path):
    parent = tmp_path / "shared"
    parent.mkdir()
    os.chmod(parent, 0o777)
    home = parent / "home"
    home.mkdir(mode=0o700)
    assert "lies in" in _forbidden(lambda: st.StateStore(home).list())
    os.chmod(parent, 0o1777)  # like /tmp: nobody else can rename our directory away
    assert st.StateStore(home).list() == []


def test_home_that_is_not_a_directory_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    _forbidden(lambda: st.StateStore(tmp_path / "file").list())


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_home_owned_by_another_user_is_refused(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    os.chown(home, 4242, 4242)
    assert "owned by uid 4242" in _forbidden(lambda: st.StateStore(home).list())
    link = tmp_path / "link"  # a symlink to our own dir, owned by someone else
    home2 = tmp_path / "home2"
    home2.mkdir(mode=0o700)
    link.symlink_to(home2)
    os.lchown(link, 4242, 4242)
    assert "symbolic link owned by uid 4242" in _forbidden(lambda: st.StateStore(link).list())


def test_planted_symlinks_are_never_followed(store, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    store.create({"uid": "u1", "target": "go", "action": "return"})
    state = store.path
    state.unlink()
    state.symlink_to(victim)
    assert "symbolic link" in _forbidden(lambda: store.list())
    state.unlink()
    store.lock_path.unlink()
    store.lock_path.symlink_to(victim)
    assert "symbolic link" in _forbidden(lambda: store.list())
    store.lock_path.unlink()
    # a whole-file write replaces a symlink by rename, never writes through it
    sessions = st.sessions_dir(store.home)
    target = sessions / "42.dlv.pid"
    target.symlink_to(victim)
    st.write_private(target, "123")
    assert target.read_text() == "123" and not target.is_symlink()
    for name in ("42.err", "42.log", "42.life"):
        (sessions / name).symlink_to(victim)
        for mode in ("r", "w", "a", "ab+"):
            with pytest.raises(st.UntrustedPath):
                st.open_private(sessions / name, mode)
    log = st.log_path(store.home)
    log.symlink_to(victim)
    with pytest.raises(PermissionError):  # also a PermissionError for session code
        st.open_private(log, "a")
    assert victim.read_text() == "precious"


def test_hard_links_and_fifos_are_refused(store, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    st.sessions_dir(store.home)
    os.link(victim, store.home / "sessions" / "7.err")
    assert "hard links" in _forbidden(lambda: st.open_private(store.home / "sessions" / "7.err",
                                                              "w"))
    assert victim.read_text() == "precious"  # "w" truncates only after the checks
    os.mkfifo(store.path)  # would block a plain open() for reading forever
    assert "not a regular file" in _forbidden(lambda: store.list())


def test_cli_answers_forbidden_for_a_hostile_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o777)
    os.chmod(home, 0o777)
    env = dict(os.environ, BLADE_GO_HOME=str(home), PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "blade_go", "status", "--type", "create"],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    resp = json.loads(p.stdout)
    assert p.returncode == 1 and resp["code"] == Code.FORBIDDEN and str(home) in resp["error"]
    # --debug must not open the log in a hostile home either
    p = subprocess.run([sys.executable, "-m", "blade_go", "destroy", "nope", "--debug"],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert json.loads(p.stdout)["code"] == Code.FORBIDDEN
    assert not (home / "blade-go.log").exists()


def test_non_utf8_state_is_reported_as_corrupt_not_internal(store):
    store.create({"uid": "u1", "target": "go", "action": "return"})
    store.path.write_bytes(store.path.read_bytes().replace(b'"u1"', b'"u\xff1"', 1))
    with pytest.raises(BladeError) as e:
        store.list()
    assert e.value.code == Code.DATABASE_ERROR and "corrupt" in e.value.message


def test_state_file_text_is_json_one_experiment_per_line(tmp_path):
    import json
    from blade_go.state import StateStore, dump_state
    store = StateStore(tmp_path)
    for uid in ("b", "a"):
        store.create({"uid": uid, "target": "go", "flags": {"value": "1,\n2"}})
    text = (tmp_path / "state.json").read_text()
    data = json.loads(text)
    assert sorted(data["experiments"]) == ["a", "b"] and data["seq"] == 2
    lines = text.splitlines()
    assert lines[1].startswith('"a": {') and lines[2].startswith('"b": {') and len(lines) == 4
    for d in ({"experiments": {}}, {"experiments": {}, "seq": 1, "caves": {"7": [[1, 2]]}}):
        assert json.loads(dump_state(d)) == d
