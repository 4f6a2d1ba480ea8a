"""Where a target's session files live: $home/sessions/<pid>.{sock,lock,log,life,dlv.sock,
dlv.log,dlv.pid,err,preempt.json,fork.sock}."""
import os

from ..state import sessions_dir


class SessionPaths:
    def __init__(self, home: str, pid: int):
        self.dir = str(sessions_dir(home))  # created 0700, refused unless trusted
        base = os.path.join(self.dir, str(pid))
        self.sock = base + ".sock"
        self.lock = base + ".lock"
        self.log = base + ".log"  # the supervisor's stdout/stderr
        self.dlv_log = base + ".dlv.log"
        self.err = base + ".err"  # why the last supervisor could not attach (JSON)
        self.preempt = base + ".preempt.json"
        self.life = base + ".life"  # flock-ed by the supervisor for its whole life
        self.dlv_pid = base + ".dlv.pid"  # ownership record of the dlv (guard.py)
        self.dlv_sock = base + ".dlv.sock"  # dlv's API (unix socket, this 0700 directory)
        self.fork_sock = base + ".fork.sock"  # the fork server (forkserver.py; fastpath.py)
