"""Experiment state: one small JSON file in the state directory, shared by every CLI process.

Writes are read-modify-write transactions under an fcntl lock on a separate lock file, and the
file is replaced atomically (temp file + rename), so parallel `blade-go` processes never lose an
update and a crash never leaves half a file. Unreadable or corrupt state is an error, never reset:
it may hold the original bytes needed to restore a process.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import tempfile
import threading
from pathlib import Path

from .errors import BladeError, Code

STATE_FILE = "state.json"
LOCK_FILE = "state.lock"
LOG_FILE = "blade-go.log"
SCHEMA = 1

CREATED, SUCCESS, ERROR, DESTROYED = "Created", "Success", "Error", "Destroyed"
STATUSES = (CREATED, SUCCESS, ERROR, DESTROYED)

class _Active(threading.local):
    def __init__(self):
        self.by_lock = {}  # lock path -> state dict of this thread's open transaction


_ACTIVE_TLS = _Active()


def home() -> Path:
    """$BLADE_GO_HOME, else /var/run/blade-go for root, else ~/.blade-go (not created here)."""
    env = os.environ.get("BLADE_GO_HOME")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/run/blade-go")
    return Path.home() / ".blade-go"


def _ensure_dir(path: Path) -> Path:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise BladeError(Code.DATABASE_ERROR, f"cannot create state directory {path}: {e}")
    return path


def sessions_dir(base: Path | None = None) -> Path:
    """Per-target-pid sockets and locks live here."""
    return _ensure_dir(_ensure_dir(Path(base) if base else home()) / "sessions")


def log_path(base: Path | None = None) -> Path:
    return _ensure_dir(Path(base) if base else home()) / LOG_FILE


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


class StateStore:
    def __init__(self, home_dir=None):
        self.home = Path(home_dir) if home_dir else home()
        self.path = self.home / STATE_FILE
        self.lock_path = self.home / LOCK_FILE

    # ---- low level ------------------------------------------------------------------------
    def _read(self) -> dict:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {"schema": SCHEMA, "experiments": {}}
        except OSError as e:
            raise BladeError(Code.DATABASE_ERROR, f"cannot read state file {self.path}: {e}")
        try:
            data = json.loads(text)
        except ValueError as e:
            raise BladeError(Code.DATABASE_ERROR, f"state file {self.path} is corrupt ({e}); "
                             "it was left untouched: fix or move it away by hand")
        if not isinstance(data, dict) or not isinstance(data.get("experiments"), dict):
            raise BladeError(Code.DATABASE_ERROR, f"state file {self.path} is corrupt (no "
                             "'experiments' mapping); it was left untouched")
        return data

    def _write(self, data: dict) -> None:
        try:
            fd, tmp = tempfile.mkstemp(dir=self.home, prefix=".state.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as f:
                    os.fchmod(f.fileno(), 0o600)
                    json.dump(data, f, indent=1, sort_keys=True, default=str)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except (OSError, TypeError, ValueError) as e:
            raise BladeError(Code.DATABASE_ERROR, f"cannot write state file {self.path}: {e}")

    @contextlib.contextmanager
    def _locked(self, exclusive: bool):
        _ensure_dir(self.home)
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise BladeError(Code.DATABASE_ERROR, f"cannot open lock file {self.lock_path}: {e}")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock

    # ---- transactions ---------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self):
        """The whole state dict under the exclusive lock; written back if the block succeeds.

        For handlers that allocate shared resources atomically (e.g. cave ranges per target pid);
        they may keep their own top-level keys next to "experiments".
        """
        key, active = str(self.lock_path), _ACTIVE_TLS.by_lock
        if key in active:  # nested in this process: flock would deadlock on a second fd
            yield active[key]
            return
        with self._locked(exclusive=True):
            data = self._read()
            active[key] = data
            try:
                yield data
            finally:
                del active[key]
            self._write(data)

    def snapshot(self) -> dict:
        open_tx = _ACTIVE_TLS.by_lock.get(str(self.lock_path))
        if open_tx is not None:
            return open_tx
        with self._locked(exclusive=False):
            return self._read()

    # ---- experiment records ---------------------------------------------------------------
    def create(self, record: dict) -> dict:
        """Insert a new record (must carry "uid"); a uid already present is an error."""
        uid = record["uid"]
        with self.transaction() as data:
            if uid in data["experiments"]:
                raise BladeError(Code.PARAMETER_ILLEGAL,
                                 f"illegal value for --uid: experiment {uid} already exists")
            stamp = now()
            data["seq"] = data.get("seq", 0) + 1  # orders records created in the same ms
            rec = {"seq": data["seq"], "status": CREATED, "error": "", "create_time": stamp, "update_time": stamp,
                   "record": {}, **record}
            data["experiments"][uid] = rec
        return rec

    def get(self, uid: str) -> dict:
        rec = self.snapshot()["experiments"].get(uid)
        if rec is None:
            raise BladeError(Code.DATA_NOT_FOUND, f"data not found: no experiment with uid {uid}")
        return rec

    def update(self, uid: str, fn) -> dict:
        """Transactional read-modify-write of one record: fn(record) mutates it or returns a new
        one. update_time is refreshed. Returns the stored record."""
        with self.transaction() as data:
            rec = data["experiments"].get(uid)
            if rec is None:
                raise BladeError(Code.DATA_NOT_FOUND,
                                 f"data not found: no experiment with uid {uid}")
            new = fn(rec)
            rec = rec if new is None else new
            rec["update_time"] = now()
            data["experiments"][uid] = rec
        return rec

    def set_status(self, uid: str, status: str, error: str = "", **fields) -> dict:
        def change(rec):
            rec["status"] = status
            rec["error"] = error
            rec.update(fields)
        return self.update(uid, change)

    def list(self, status: str | None = None, limit: int | None = None,
             target: str | None = None, action: str | None = None) -> list:
        """Records newest first, optionally filtered by status/target/action and truncated."""
        recs = list(self.snapshot()["experiments"].values())
        recs = [r for r in recs if (status is None or r.get("status") == status)
                and (target is None or r.get("target") == target)
                and (action is None or r.get("action") == action)]
        recs.sort(key=lambda r: (r.get("create_time", ""), r.get("seq", 0)), reverse=True)
        return recs[:limit] if limit is not None else recs
