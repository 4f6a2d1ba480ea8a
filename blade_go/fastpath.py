"""The console script's first step: hand `create ... --pid P` to P's warm fork server.

Standard library only, imported before click or anything else of blade-go: when the target is
already attached, its supervisor keeps a fork server (session/forkserver.py) with every module
loaded; this process passes it the command (argv, environment, working directory, stdio) and
exits with the status the forked command reports. Anything else, or no usable server, runs
the CLI here as always (blade_go/cli.py). Nothing is run twice: before the server says it took
the command, nothing has run; after, only its status is awaited.
"""
import json
import os
import socket
import stat
import struct
import sys

# The protocol's constants, shared with session/forkserver.py (the server's side).
STARTED = b"S"
STARTED_WAIT = 30.0
# Only a server running this very copy of blade-go takes the command (another installation,
# another checkout: this process runs it).
PACKAGE = os.path.dirname(os.path.abspath(__file__))


def _pid_flag(argv) -> int | None:
    """The value of the one --pid (either spelling), ASCII digits only; None otherwise."""
    found = []
    for i, a in enumerate(argv):
        if a == "--pid" and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif a.startswith("--pid="):
            found.append(a[len("--pid="):])
    if len(found) != 1 or not (found[0].isascii() and found[0].isdigit()):
        return None
    return int(found[0])


def _home() -> str:
    """As state.home(), without importing it (this module loads before anything else)."""
    env = os.environ.get("BLADE_GO_HOME")
    if env:
        return env
    return "/var/run/blade-go" if os.geteuid() == 0 else os.path.expanduser("~/.blade-go")


def _trusted_dir(path: str) -> bool:
    """Ours, a real directory, writable by nobody else (state.py refuses the rest, loudly)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def server_for(argv) -> str | None:
    """The fork server socket that may run this command, or None."""
    if len(argv) < 3 or argv[0] != "create" or "-h" in argv or "--help" in argv:
        return None
    pid = _pid_flag(argv)
    if pid is None:
        return None
    home = _home()
    sessions = os.path.join(home, "sessions")
    if not (_trusted_dir(home) and _trusted_dir(sessions)):
        return None
    path = os.path.join(sessions, f"{pid}.fork.sock")  # session/paths.py fork_sock
    return path if os.path.exists(path) else None


def delegate(argv) -> int | None:
    """The command's exit status once the fork server ran it; None: run it here."""
    path = server_for(argv)
    if path is None:
        return None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(2.0)
        s.connect(path)
        creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        if struct.unpack("3i", creds)[1] != os.geteuid():
            s.close()
            return None
        # ensure_ascii: bytes that are not UTF-8 (surrogate escapes) travel as \udcXX
        body = json.dumps({"argv": list(argv), "env": dict(os.environ), "cwd": os.getcwd(),
                           "package": PACKAGE}, ensure_ascii=True).encode()
        msg = struct.pack(">I", len(body)) + body
        sent = s.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                  struct.pack("3i", 0, 1, 2))])
        s.sendall(msg[sent:])
    except (OSError, ValueError, TypeError):
        s.close()
        return None
    try:
        # The forked command first says it started, and runs only if that could be sent: once
        # we stop waiting (and close), it cannot start any more.
        s.settimeout(STARTED_WAIT)
        first = s.recv(1)
    except TimeoutError:
        s.close()
        return _report(f"the fork server of process {_pid_flag(argv)} took no command within "
                       f"{STARTED_WAIT:.0f}s; nothing was run: try again")
    except OSError:
        # Reset: the server closed our connection unread (it was exiting with us in its
        # backlog) and no forked command holds it; a queued "started" would have come first.
        first = b""
    if first != STARTED:
        s.close()
        return None  # turned away, or the server ended before it forked: nothing ran
    s.settimeout(None)  # the command runs; it takes as long as it takes
    got = b""
    while len(got) < 4:
        more = s.recv(4 - len(got))
        if not more:
            break
        got += more
    s.close()
    if len(got) < 4:
        # It ran (or started to) and ended without a status: report, never run it again.
        return _report("the forked create ended without reporting its status; see "
                       "`blade-go status --type create`")
    return struct.unpack(">i", got)[0]


def _report(message: str) -> int:
    """One chaosblade Response for a failure of the hand-over itself (54000)."""
    sys.stdout.write(json.dumps({"code": 54000, "success": False, "error": message}) + "\n")
    sys.stdout.flush()
    return 0 if os.environ.get("BLADE_GO_UNDER_BLADE") == "1" else 1


def load_site():
    """Started with -S (chaosblade's dispatcher, chaosblade/install.py; the standby supervisor,
    session/standby.py): site-packages and their .pth hooks, tens of ms, are skipped where only
    the standard library is needed (a hand-over to a fork server; a supervisor up to dlv's
    attach). Add them once a dependency (click, yaml, pyelftools) may be imported, as start-up
    would have."""
    if sys.flags.no_site and "site" not in sys.modules:
        import site
        site.main()


def main():
    argv = sys.argv[1:]
    status = delegate(argv)
    if status is None:
        load_site()
        from .cli import main as cli_main
        cli_main()
        return
    sys.stdout.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
