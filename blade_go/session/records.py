"""What the supervisor reads and writes outside dlv: experiment records and process facts.

Experiment records belong to blade_go.state.StateStore; this module is the only place the
session layer touches them, so a change of the store's shape is a change here only.
Assumed store API: StateStore(home).get(uid) -> dict | None; .update(uid, fn) where fn gets the
record dict (mutated in place and returned); .list() -> iterable of records. A record holds
"uid", "status" (Created|Success|Error|Destroyed), "patches" (Patch.to_json dicts) and the
target pid as "pid" (or "flags"["pid"]).
"""
import contextlib
import fcntl
import hashlib
import json
import os
import re
import time

from .. import procfs
from ..errors import BladeError, Code
from ..state import CREATED, DESTROYED, ERROR, SUCCESS
from ..state import open_private, write_private

LIVE = (SUCCESS, CREATED)
ALIVE_OR_FAILED = (SUCCESS, CREATED, ERROR)  # an Error may still hold bytes it wrote


def _store(home: str):
    # BLADE_GO_SESSION_STORE=module:Class substitutes the store (tests of this layer alone).
    alt = os.environ.get("BLADE_GO_SESSION_STORE")
    if alt:
        import importlib
        mod, cls = alt.split(":")
        return getattr(importlib.import_module(mod), cls)(home)
    from ..state import StateStore
    return StateStore(home)


def get(home: str, uid: str) -> dict | None:
    try:
        return _store(home).get(uid)
    except BladeError as e:
        if e.code == Code.DATA_NOT_FOUND:
            return None
        raise


# -- one experiment at a time ----------------------------------------------------------------
# create and destroy of one uid (and the supervisor's timeout expiry) hold this lock for their
# whole run, so a destroy never sees a create half done, and a create's Success never overwrites
# a Destroyed. flock: released by the kernel when its holder dies, however it dies.
LOCK_WAIT = 300.0  # a create attaches dlv and may wait for a safe moment: minutes at worst


def _uid_lock_path(home: str, uid: str) -> str:
    d = os.path.join(home, "sessions")
    os.makedirs(d, mode=0o700, exist_ok=True)
    return os.path.join(d, "uid-" + hashlib.sha256(uid.encode()).hexdigest()[:32] + ".lock")


@contextlib.contextmanager
def uid_lock(home: str, uid: str, wait: float | None = LOCK_WAIT):
    """Exclusive lock of experiment uid. wait=0: try once; yields False when it is busy."""
    fd = os.open(_uid_lock_path(home, uid), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        deadline = time.monotonic() + (wait or 0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                if time.monotonic() > deadline:
                    raise BladeError(Code.UNEXPECTED_STATUS,
                                     f"experiment {uid} is still being created or destroyed by "
                                     f"another blade-go process after {wait:.0f}s; try again")
                time.sleep(0.05)
        yield True
    finally:
        os.close(fd)


def uid_busy(home: str, uid: str) -> bool:
    with uid_lock(home, uid, wait=0) as got:
        return not got


def target_start_time(rec: dict):
    return rec.get("target_start_time") or (rec.get("record") or {}).get("target_start_time")


def target_gone(rec: dict) -> bool:
    """The record's process has ended (its pid is free or names another process now)."""
    pid = _record_pid(rec)
    if pid is None:
        return False
    started = target_start_time(rec)
    now = procfs.start_time(pid)
    return now is None or (started is not None and now != started)


def set_deadline(home: str, uid: str, deadline: float):
    def fn(rec):
        rec["deadline"] = deadline
        return rec
    _store(home).update(uid, fn)


def patches_of(rec: dict) -> list:
    """The experiment's patches: kept in the handler-owned "record" by blade_go.experiment."""
    return (rec.get("record") or {}).get("patches") or rec.get("patches") or []


def _record_pid(rec: dict):
    pid = rec.get("pid") or (rec.get("flags") or {}).get("pid")
    try:
        return int(pid)
    except (TypeError, ValueError):
        return None


def live_uids(home: str, pid: int, exclude: str | None = None) -> set[str]:
    try:
        recs = list(_store(home).list())
    except Exception:
        return set()
    return {r["uid"] for r in recs if r.get("status") in LIVE and _record_pid(r) == pid
            and r.get("uid") != exclude}


def live_records(home: str, pid: int) -> list:
    try:
        recs = list(_store(home).list())
    except Exception:
        return []
    return [r for r in recs if r.get("status") in LIVE and _record_pid(r) == pid]


def mark_destroyed(home: str, uid: str, reason: str, facts: dict | None = None,
                   enforced_by: str | None = None):
    """facts: what the revert reported (restored, drain_ms, retained ...), kept as a CLI
    destroy keeps it; value caves it retained go into the record's `retained` (reclaim.py)."""
    def fn(rec):
        if rec.get("status") in LIVE:
            rec["status"] = DESTROYED
            rec["reason"] = reason
            if enforced_by:  # who ended it at its deadline (issue 16)
                rec["deadline_enforced_by"] = enforced_by
            if facts is not None:
                rec["record"] = with_destroy_facts(rec.get("record") or {}, facts)
        return rec
    try:
        _store(home).update(uid, fn)
    except Exception as e:
        print(f"cannot mark {uid} destroyed: {e}", flush=True)


def with_destroy_facts(record: dict, facts: dict) -> dict:
    """The handler's record after a revert: its facts, and the value caves it retained."""
    from .reclaim import retained_entries
    out = {**record, "destroyed": facts}
    kept = retained_entries(record.get("patches") or [], facts)
    if kept:
        out["retained"] = kept
    return out


def note_error(home: str, uid: str, message: str):
    def fn(rec):
        rec["error"] = message
        return rec
    try:
        _store(home).update(uid, fn)
    except Exception:
        pass


process_alive = procfs.alive


def exit_reason(pid: int, dlv_status) -> str:
    """The record's reason once the target exited, from dlv's exit status.

    dlv answers status 0 when the exit races its own stop of the threads (it cannot wait for a
    process it did not start): a zombie's own exit code is the better witness, and a 0 nobody
    confirms is not reported as a clean exit.
    """
    status = procfs.zombie_exit_status(pid)
    if status is None and dlv_status != 0:
        status = dlv_status
    return f"target process exited (status {status if status is not None else 'not known'})"


def wait_untraced(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/status") as f:
                if "TracerPid:\t0\n" in f.read():
                    return True
        except FileNotFoundError:
            return False
        time.sleep(0.05)
    return False


start_time = procfs.start_time


def exit_status_from(text: str):
    m = re.search(r"exited with status (-?\d+)", text)
    return int(m.group(1)) if m else None


# -- async preemption ------------------------------------------------------------------------
# Some dlv versions set runtime.debug.asyncpreemptoff=1 while attached and restore the value
# they read on Detach; a SIGKILLed dlv restores nothing. (dlv 1.20.2 and 1.27.2 were measured
# not to change it on attach.) The first session on a pid records the value and its address;
# a later session that finds 1 where the record says 0 writes 0 back before attaching.
VAR = "runtime.debug.asyncpreemptoff"


def _load_preempt(p, pid: int):
    try:
        rec = json.load(open_private(p.preempt))
        return rec if rec.get("start_time") == start_time(pid) else None  # else: pid reused
    except (OSError, ValueError, KeyError):
        return None


def fix_async_preempt(p, pid: int, log):
    """Before attaching: undo a value left stuck at 1 by a killed dlv (root: /proc/PID/mem)."""
    rec = _load_preempt(p, pid)
    if not rec or rec.get("original") != 0:
        return
    try:
        with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
            mem.seek(rec["addr"])
            if int.from_bytes(mem.read(4), "little") == 1:
                mem.seek(rec["addr"])
                mem.write((0).to_bytes(4, "little"))
                log(f"{VAR} was stuck at 1 (an earlier dlv was killed): restored 0")
    except OSError as e:
        log(f"cannot check {VAR}: {e}")


def record_async_preempt(client, p, pid: int, log):
    """After the first attach on this process: remember the value and where it lives."""
    if _load_preempt(p, pid):
        return
    try:
        var = client.eval(VAR)
        write_private(p.preempt, json.dumps({"start_time": start_time(pid),
                                             "addr": int(var["addr"]),
                                             "original": int(var["value"])}))
    except Exception as e:
        log(f"cannot record {VAR}: {e}")
