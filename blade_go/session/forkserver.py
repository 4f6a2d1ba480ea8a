"""The fork server: later creates on an attached process start warm.

    python -m blade_go.session.forkserver --pid P --home DIR     (started by the supervisor)

A fresh `blade-go create` spends most of its time before it does anything: the interpreter,
then importing click, pyelftools, the inspector, the stub planner (about 100 ms on a quiet
machine, more than the analysis and the apply together). Once a supervisor holds a target, it
starts this process beside it: single-threaded, every module a create needs imported, listening
on $home/sessions/<pid>.fork.sock (the 0700 session directory; peers must be our own uid).

`blade_go/fastpath.py`, the console script's first step, sends a `create ... --pid P` there:
its argv, environment, working directory and its stdin/stdout/stderr (SCM_RIGHTS). The server
forks; the child becomes that command (same descriptors, environment and directory) and runs
the very CLI code a fresh process would (`cli.run`), so every check, lock and record is the
same; it writes the Response itself and reports the exit status to the client.

Wire protocol (client -> server): 4-byte big-endian length + JSON {"argv", "env", "cwd",
"package"}, with the three descriptors attached to the first bytes; a request from another copy
of blade-go ("package": its directory) is closed unanswered, and that client runs it itself.
Server child -> client: b"S" (STARTED), and only if that could be sent does it run the
command; then 4 bytes of exit status. The constants are fastpath.py's, the client's side.

It runs at nice +10 (its imports and read-ahead must not take CPU from the target); a forked
command gets back the priority it was started with (root; others keep +10).

It exits when the supervisor does (EOF on stdin, a pipe from the supervisor, so also on a
SIGKILL of the supervisor) or when the target is gone, and removes its socket if still its own.
"""
import argparse
import array
import gc
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys

from ..fastpath import PACKAGE, STARTED
from .. import procfs

MAX_REQUEST = 1 << 20
ENV_OFF = "BLADE_GO_FORKSERVER"  # "0": the supervisor starts none (benchmarks compare)


def start(home: str, pid: int, log_path: str, package_root: str):
    """Spawn it (from the supervisor, once attached). Returns the Popen or None; never raises:
    without it every create simply runs cold."""
    if os.environ.get(ENV_OFF) == "0":
        return None
    env = dict(os.environ)
    env["PYTHONPATH"] = package_root + os.pathsep + env.get("PYTHONPATH", "")
    try:
        with open(log_path, "ab") as log:  # the supervisor's own log, opened by it already
            return subprocess.Popen(
                [sys.executable, "-m", "blade_go.session.forkserver", "--pid", str(pid),
                 "--home", home], stdin=subprocess.PIPE, stdout=log, stderr=log, cwd="/",
                env=env, start_new_session=True)
    except OSError:
        return None


def stop(proc):
    """EOF on its stdin: it removes its socket and exits."""
    if proc is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass


# -- the server process ------------------------------------------------------------------------
def _warm():
    """Import what a create imports, and the parsed spec registry."""
    from .. import cli, experiment  # noqa: F401
    from ..actions import HANDLERS
    for name in HANDLERS:
        experiment.executor_for(name)
    from ..denylist import check_injectable  # noqa: F401
    from ..inspector.typed import open_typed_binary  # noqa: F401
    from ..stubs import conditions, conditions_data, placement  # noqa: F401
    from ..stubs.select import for_elf_machine
    try:  # the host's arch: its stubs are what a create most likely plans (others on use)
        with open("/proc/self/exe", "rb") as f:
            host = for_elf_machine(int.from_bytes(f.read(20)[18:20], "little"))
    except OSError:
        host = None
    for part in ("code", "plan_return", "plan_conditional_return", "plan_delay"):
        if host is not None and host.supports(part):
            getattr(host, part)
    from .. import container  # noqa: F401
    from .. import registry
    registry.default_registry()  # parsed from this process's BLADE_GO_SPECS (see _run_child)


def _open_target(pid: int):
    """The target's executable, opened and read ahead the way a create reads it (a function
    looked up, its compile unit, signature and inlined sites, the caves): a forked create takes
    it as it is (inspector/binary.py open_ahead). Best effort: a create opens the file itself
    otherwise."""
    from ..denylist import check_injectable
    from ..inspector import binary

    def quietly(step):
        try:
            return step()
        except Exception:
            return None

    def warm(b):
        quietly(lambda: b.caves(int3=False))  # what a create allocates from (no INT3 runs)
        # every compile unit's header and code ranges: a forked create finds the unit of its
        # function by bisection and searches only that unit's bytes
        quietly(lambda: b.has_dwarf and b.dwarf.index_units())
        fn = quietly(lambda: b.find_function("main.main"))
        if fn is not None:
            quietly(lambda: check_injectable(b, fn, fn.name))
            quietly(lambda: b.result_locations(fn))
            quietly(lambda: b.inlined_sites(fn.name))
    try:
        binary.open_ahead(pid, warm)
    except Exception as e:
        _log(f"executable not opened ahead: {e}")


def _read_request(conn: socket.socket):
    """(request dict, [fd, fd, fd]) or (None, fds) on a malformed request."""
    fds = array.array("i")
    data, anc, _, _ = conn.recvmsg(MAX_REQUEST, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, typ, blob in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds.frombytes(blob[:len(blob) - len(blob) % fds.itemsize])
    fds = list(fds)
    if len(data) < 4:
        return None, fds
    need = struct.unpack(">I", data[:4])[0]
    if need > MAX_REQUEST:
        return None, fds
    body = data[4:]
    while len(body) < need:
        more = conn.recv(need - len(body))
        if not more:
            return None, fds
        body += more
    try:
        req = json.loads(body)
    except ValueError:
        return None, fds
    ok = isinstance(req.get("argv"), list) and isinstance(req.get("env"), dict) \
        and len(fds) == 3 and req.get("package") == PACKAGE
    return (req if ok else None), fds


def _run_child(conn: socket.socket, req: dict, fds: list) -> int:
    """In the forked child: become the client's command and run it."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, _priority)  # as the command would have run
    except OSError:
        pass  # raising a priority needs CAP_SYS_NICE: the command runs niced then
    from ..inspector import binary
    binary.after_fork()
    for i, fd in enumerate(fds):
        os.dup2(fd, i)
        os.close(fd)
    specs = os.environ.get("BLADE_GO_SPECS")
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in req["env"].items()})
    if os.environ.get("BLADE_GO_SPECS") != specs:  # another spec directory: parse that one
        from .. import registry
        registry._cached = None
    try:
        os.chdir(req.get("cwd") or "/")
    except OSError:
        os.chdir("/")
    conn.sendall(STARTED)
    # stdio objects onto the new descriptors (the server's were its log file)
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)
    from .. import cli
    argv = [str(a) for a in req["argv"]]
    sys.argv = ["blade-go", *argv]
    try:
        status = cli.run(argv)
    except BaseException:
        status = 1
    return cli.flush(status)


def _serve_one(lsock: socket.socket, others: list):
    conn, _ = lsock.accept()
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        if uid != os.geteuid():
            return
        conn.settimeout(5)
        req, fds = _read_request(conn)
        if req is None:
            for fd in fds:
                os.close(fd)
            return
        child = os.fork()
        if child == 0:
            status = 1
            try:
                lsock.close()
                for f in others:
                    os.close(f)
                conn.settimeout(None)
                status = _run_child(conn, req, fds)
                conn.sendall(struct.pack(">i", status))
            finally:
                os._exit(status)
        for fd in fds:
            os.close(fd)
        _log(f"forked {child} for: {' '.join(map(str, req['argv'][:3]))}")
    except OSError:
        pass
    finally:
        conn.close()


def _log(msg: str):
    from .monitoring import log  # the supervisor's log line format (same file)
    log(f"fork server: {msg}")


def _bind(path: str) -> tuple:
    """Bind beside the final name and rename over it (a stale socket of a dead server goes)."""
    tmp = f"{path}.{os.getpid()}"
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        lsock.bind(tmp)
    finally:
        os.umask(old)
    lsock.listen(16)
    os.rename(tmp, path)
    st = os.lstat(path)
    return lsock, (st.st_dev, st.st_ino)


def _unlink_if_ours(path: str, ident: tuple):
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == ident:
            os.unlink(path)
    except OSError:
        pass


NICE = 10  # its imports and read-ahead take CPU the target may need: it yields to everyone
_priority = 0  # the priority it was started with; a forked command runs with it again


def serve(home: str, pid: int) -> int:
    global _priority
    _priority = os.getpriority(os.PRIO_PROCESS, 0)
    os.nice(NICE)
    from .paths import SessionPaths
    path = SessionPaths(home, pid).fork_sock  # the directory is refused unless trusted
    _warm()
    _open_target(pid)
    # What the warm-up built stays for good: frozen out of the collector's sight, so that a
    # forked command's collections walk (and write to, copy-on-write) only its own objects.
    gc.collect()
    gc.freeze()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reaped by the kernel
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    lsock, ident = _bind(path)
    _log(f"{os.getpid()} for {pid} on {path}")
    try:
        while True:
            ready, _, _ = select.select([lsock, 0], [], [], 1.0)
            if 0 in ready and not os.read(0, 64):
                _log("the supervisor ended: exiting")
                return 0
            if not procfs.alive(pid):
                _log("the target ended: exiting")  # its supervisor follows
                return 0
            if lsock in ready:
                _serve_one(lsock, [0])
    finally:
        _unlink_if_ours(path, ident)
        lsock.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="blade-go-forkserver")
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--home", required=True)
    a = ap.parse_args(argv)
    return serve(a.home, a.pid)


if __name__ == "__main__":
    sys.exit(main())
