"""Experiment state: one small JSON file in the state directory, shared by every CLI process.

Writes are read-modify-write transactions under an fcntl lock on a separate lock file, and the
file is replaced atomically (temp file + rename), so parallel `blade-go` processes never lose an
update and a crash never leaves half a file. Unreadable or corrupt state is an error, never reset:
it may hold the original bytes needed to restore a process.

Trust: the state decides which bytes root writes into a process, so the home is used only when
it is a real directory owned by the invoking user and writable by nobody else (its ancestors
owned by root or the user and not writable by others unless sticky, like OpenSSH's
StrictModes); anything else is refused with 43000 Forbidden. Files in it are opened with
O_NOFOLLOW and must be regular files of ours with a single link (`open_private`), and whole
files are replaced by create-then-rename (`write_private`), so a planted symlink or hard link
never redirects a write elsewhere. Session code opens its files through the same helpers.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import stat
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


class UntrustedPath(BladeError, PermissionError):
    """A state path blade-go refuses to use (43000). Also a PermissionError, so code that
    treats an unreadable file as absent stays safe: it then neither reads nor writes it."""

    def __init__(self, message: str):
        BladeError.__init__(self, Code.FORBIDDEN, message)


def _refuse(path, why: str):
    raise UntrustedPath(f"forbidden: blade-go state path {path} {why}; blade-go keeps the "
                        "bytes it writes into processes there and uses only a directory owned "
                        f"by uid {os.geteuid()} and writable by nobody else")


def check_trusted_dir(path: Path) -> Path:
    """Refuse (UntrustedPath) a directory that someone other than us (or root) could change."""
    uid = os.geteuid()
    absolute = Path(os.path.abspath(path))
    # a symlink on the way must not be re-pointable by someone else
    for p in [*reversed(absolute.parents), absolute]:
        try:
            st = os.lstat(p)
        except OSError as e:
            _refuse(p, f"cannot be examined ({e.strerror})")
        if stat.S_ISLNK(st.st_mode) and st.st_uid not in (0, uid):
            _refuse(p, f"is a symbolic link owned by uid {st.st_uid}")
    real = Path(os.path.realpath(absolute))
    st = os.stat(real)
    if not stat.S_ISDIR(st.st_mode):
        raise UntrustedPath(
            f"forbidden: blade-go state path {real} is {_kind(st)}, not a directory; point "
            "BLADE_GO_HOME at a directory (blade-go creates it, mode 0700, when it is "
            "missing) or move that file away")
    if st.st_uid != uid:
        _refuse(real, f"is owned by uid {st.st_uid}")
    if st.st_mode & 0o022:
        _refuse(real, f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})")
    for parent in real.parents:
        pst = os.stat(parent)
        if pst.st_uid not in (0, uid):
            _refuse(real, f"lies in {parent}, owned by uid {pst.st_uid}")
        if pst.st_mode & 0o022 and not pst.st_mode & stat.S_ISVTX:
            _refuse(real, f"lies in {parent}, writable by group or others without the sticky "
                          "bit")
    return path


def _kind(st) -> str:
    return ("a regular file" if stat.S_ISREG(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
            else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a directory")


_WHY_UNWRITABLE = {
    errno.EPERM: "the operation is not permitted (an immutable directory, `chattr +i`? "
                 "`lsattr -d` shows it; `chattr -i` undoes it)",
    errno.EROFS: "it is on a read-only file system (a read-only mount)",
    errno.EACCES: "permission denied",
    errno.ENOSPC: "the file system is full",
    errno.EDQUOT: "the disk quota is exhausted",
}


def _unwritable(path, e: OSError):
    why = _WHY_UNWRITABLE.get(e.errno, e.strerror or str(e))
    raise UntrustedPath(f"forbidden: blade-go cannot write its state directory {path}: {why}; "
                        "blade-go must record there the bytes it writes into processes before "
                        "writing them: make it writable or point BLADE_GO_HOME at a writable "
                        "directory")


def _check_writable(path: Path):
    """Refuse (43000, saying why) a home blade-go could not write records into."""
    if os.access(path, os.W_OK | os.X_OK):
        return
    probe = path / f".blade-go-probe-{os.getpid()}"
    try:
        os.mkdir(probe, 0o700)  # what fails tells why (EPERM, EROFS, EACCES ...)
    except FileExistsError:
        return
    except OSError as e:
        _unwritable(path, e)
    os.rmdir(probe)


def _ensure_dir(path: Path) -> Path:
    """The directory, created 0700 when missing, then checked (check_trusted_dir) and found
    writable; anything else is a 43000 that says what is wrong with the path."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        pass  # not a directory: refused below
    except NotADirectoryError:  # a component on the way is a file
        parent = next((p for p in Path(os.path.abspath(path)).parents
                       if os.path.exists(p) and not os.path.isdir(p)), path)
        raise UntrustedPath(f"forbidden: blade-go state path {path} cannot be created: {parent} "
                            "is a file, not a directory; point BLADE_GO_HOME at a directory")
    except OSError as e:
        if e.errno in _WHY_UNWRITABLE:
            _unwritable(path.parent if not path.exists() else path, e)
        raise BladeError(Code.DATABASE_ERROR, f"cannot create state directory {path}: {e}")
    check_trusted_dir(path)
    _check_writable(path)
    return path


_OPEN_FLAGS = {"r": os.O_RDONLY, "r+": os.O_RDWR, "w": os.O_WRONLY | os.O_CREAT,
               "w+": os.O_RDWR | os.O_CREAT, "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
               "a+": os.O_RDWR | os.O_CREAT | os.O_APPEND,
               "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL}


def open_private_fd(path, mode: str = "r", perms: int = 0o600) -> int:
    """os.open for a file in the state home: never follows a symlink, never blocks on a FIFO,
    and refuses (UntrustedPath) anything but a regular file owned by us with one link.
    "w" truncates only after those checks. FileNotFoundError passes through for "r"."""
    key = mode.replace("b", "").replace("t", "")
    if key not in _OPEN_FLAGS:
        raise ValueError(f"unsupported mode {mode!r}")
    flags = _OPEN_FLAGS[key] | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, perms)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK):
            _refuse(path, "is a symbolic link")
        if e.errno == errno.ENXIO:  # a FIFO without a reader
            _refuse(path, "is not a regular file")
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            _refuse(path, "is not a regular file")
        if st.st_uid != os.geteuid():
            _refuse(path, f"is owned by uid {st.st_uid}")
        if st.st_nlink != 1:
            _refuse(path, f"has {st.st_nlink} hard links")
        os.set_blocking(fd, True)
        if key.startswith("w"):
            os.ftruncate(fd, 0)
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_private(path, mode: str = "r", perms: int = 0o600, **kw):
    """open() for a file in the state home (see open_private_fd); same modes as open()."""
    fd = open_private_fd(path, mode, perms)
    try:
        return os.fdopen(fd, mode, **kw)
    except BaseException:
        os.close(fd)
        raise


def write_private(path, data, perms: int = 0o600) -> None:
    """Replace a whole file in a trusted directory: temp file + fsync + rename. rename replaces
    a symlink itself, never what it points to."""
    path = Path(path)
    import tempfile  # (shutil, random, bz2, lzma: only for commands that write)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            os.fchmod(f.fileno(), perms)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def sessions_dir(base: Path | None = None) -> Path:
    """Per-target-pid sockets and locks live here."""
    return _ensure_dir(_ensure_dir(Path(base) if base else home()) / "sessions")


def log_path(base: Path | None = None) -> Path:
    return _ensure_dir(Path(base) if base else home()) / LOG_FILE


def dump_state(data: dict) -> str:
    """The state file's text: JSON, one experiment per line. json's `indent` would force its
    pure-Python encoder, ~10x slower: on a long history that was most of a command's writes."""
    exps = data.get("experiments")
    if not isinstance(exps, dict):
        return json.dumps(data, sort_keys=True, default=str)
    rest = {k: v for k, v in data.items() if k != "experiments"}
    head = json.dumps(rest, sort_keys=True, default=str)[:-1]  # "{...", without its "}"
    lines = [json.dumps(str(uid)) + ": " + json.dumps(exps[uid], sort_keys=True, default=str)
             for uid in sorted(exps, key=str)]
    body = '"experiments": {' + ("\n" + ",\n".join(lines) + "\n" if lines else "") + "}"
    return head + (", " if rest else "") + body + "}\n"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


REQUIRED = {"status": str}  # without it, destroy cannot know whether bytes are still patched
DEFAULTS = {"target": "", "action": "", "error": "", "create_time": "", "update_time": "", "flags": {}, "record": {},
            "timeout": None, "pid": None, "exe": None, "cmdline": ""}


def _with_defaults(uid: str, rec: dict) -> dict:
    """A copy of rec with every optional field present (a hand-edited or older record may lack
    some; readers must not fail with KeyError on them)."""
    out = {"uid": uid, **rec}
    for k, v in DEFAULTS.items():
        if out.get(k) is None or not isinstance(out[k], type(v) if v is not None else object):
            out[k] = v.copy() if isinstance(v, dict) else v
    return out


def checked_record(uid: str, rec) -> dict:
    """The record with defaults filled in, or a clear 67001 naming what is missing."""
    if not isinstance(rec, dict):
        raise BladeError(Code.DATABASE_ERROR, f"the record of experiment {uid} in the state file "
                         "is not an object; fix or remove it by hand")
    bad = [k for k, t in REQUIRED.items() if not isinstance(rec.get(k), t)]
    if rec.get("status") not in STATUSES and "status" not in bad:
        bad.append("status")
    if bad:
        raise BladeError(Code.DATABASE_ERROR, f"the record of experiment {uid} in the state file "
                         "lacks or has invalid field(s) " + ", ".join(bad)
                         + "; fix or remove it by hand")
    return _with_defaults(uid, rec)


class StateStore:
    def __init__(self, home_dir=None):
        self.home = Path(home_dir) if home_dir else home()
        self.path = self.home / STATE_FILE
        self.lock_path = self.home / LOCK_FILE

    def check_home(self) -> Path:
        """The home is usable: a directory of ours (created when missing), writable by nobody
        else, writable by us; else a 43000 saying what is wrong and what to do. Commands call
        this first, so no later step fails on the path with an internal error."""
        return _ensure_dir(self.home)

    # ---- low level ------------------------------------------------------------------------
    def _read(self) -> dict:
        try:
            with open_private(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return {"schema": SCHEMA, "experiments": {}}
        except UntrustedPath:
            raise
        except OSError as e:
            raise BladeError(Code.DATABASE_ERROR, f"cannot read state file {self.path}: {e}")
        try:
            # bytes that are not UTF-8 are corruption like any other, never an internal error
            data = json.loads(raw.decode("utf-8"))
        except ValueError as e:
            raise BladeError(Code.DATABASE_ERROR, f"state file {self.path} is corrupt ({e}); "
                             "it was left untouched: fix or move it away by hand")
        if not isinstance(data, dict) or not isinstance(data.get("experiments"), dict):
            raise BladeError(Code.DATABASE_ERROR, f"state file {self.path} is corrupt (no "
                             "'experiments' mapping); it was left untouched")
        return data

    def _write(self, data: dict) -> None:
        try:
            write_private(self.path, dump_state(data))
        except (OSError, TypeError, ValueError) as e:
            raise BladeError(Code.DATABASE_ERROR, f"cannot write state file {self.path}: {e}")

    @contextlib.contextmanager
    def _locked(self, exclusive: bool):
        _ensure_dir(self.home)
        try:
            fd = open_private_fd(self.lock_path, "a+")
        except UntrustedPath:
            raise
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
        return checked_record(uid, rec)

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
        recs = [_with_defaults(k, r) for k, r in self.snapshot()["experiments"].items()
                if isinstance(r, dict)]
        recs = [r for r in recs if (status is None or r.get("status") == status)
                and (target is None or r.get("target") == target)
                and (action is None or r.get("action") == action)]
        recs.sort(key=lambda r: (r.get("create_time", ""), r.get("seq", 0)), reverse=True)
        return recs[:limit] if limit is not None else recs
