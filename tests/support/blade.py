"""Running the blade-go CLI the way chaosblade does: a subprocess printing one JSON Response."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class Blade:
    """The CLI bound to one state directory (BLADE_GO_HOME) and dlv choice."""

    def __init__(self, home, env=None, python_opts=()):
        self.home = str(home)
        self.python_opts = list(python_opts)  # e.g. ["-S"], as chaosblade's dispatcher runs it
        self.env = dict(os.environ, BLADE_GO_HOME=self.home, **(env or {}))
        self.env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + self.env.get("PYTHONPATH", "")

    def run(self, *args, timeout=120):
        """(exit status, parsed Response). The Response must be the whole of stdout."""
        p = subprocess.run([sys.executable, *self.python_opts, "-m", "blade_go", *map(str, args)], env=self.env,
                           capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
        try:
            resp = json.loads(p.stdout)
        except ValueError:
            raise AssertionError(f"stdout is not one JSON object: {p.stdout!r}\n"
                                 f"stderr: {p.stderr[-3000:]}")
        return p.returncode, resp

    def ok(self, *args, **kw):
        code, resp = self.run(*args, **kw)
        assert code == 0 and resp["success"], f"blade-go {' '.join(map(str, args))}: {resp}"
        return resp.get("result")

    def fail(self, *args, **kw):
        code, resp = self.run(*args, **kw)
        assert code == 1 and not resp["success"], f"expected failure, got {resp}"
        return resp

    def create_response(self, pid, func, value, *extra):
        """A successful `create go return`'s whole Response: `result` (always the uid) and
        `warnings` when there are any."""
        code, resp = self.run("create", "go", "return", "--pid", pid, "--func", func,
                              "--value", value, *extra)
        assert code == 0 and resp["success"] and isinstance(resp["result"], str), resp
        return resp

    def create_return(self, pid, func, value, *extra):
        return self.ok("create", "go", "return", "--pid", pid, "--func", func, "--value", value,
                       *extra)
