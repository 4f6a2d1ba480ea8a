"""Chaos Toolkit actions and rollbacks for blade-go (module `blade_go.chaostoolkit.actions`).

Every `inject_*` maps onto blade-go's generic experiment layer: `experiment.create("go", action,
flags)`, the same call as `blade-go create go <action> --flag value...`, so validation, targeting,
state and `timeout` behave exactly as on the command line. Each returns the experiment uid.

Only the inject_* functions whose action exists in specs/go.yaml are exported (`__all__`, which
`chaos discover` lists); calling one whose action is not in the spec fails with blade-go's
"unknown action" error. Rollbacks (`destroy`, `destroy_all`) never fail when there is nothing
left to destroy.

No `from __future__ import annotations` here: chaoslib's discovery reads the annotations as
types (int -> "integer"), and strings would all read as "object".
"""
import logging

from .. import experiment
from .. import state as st
from ..errors import BladeError, Code
from ..registry import default_registry
from ._errors import activity_failed

logger = logging.getLogger("chaostoolkit")
TARGET = "go"


def inject_return(func: str, value: str, pid: int = None, process: str = None,
                  process_cmd: str = None, timeout: int = None, uid: str = None,
                  caller: str = None, caller_depth: int = None) -> str:
    """Make every call of a Go function return the given values (blade-go `return`).

    func: function as Go names it, e.g. main.(*Store).GetUser. value: one comma-separated element
    per result: literals, nil, zero, error:<message>, var:<pkg>.<Name>
    (e.g. "nil,error:db is down"). Target exactly one process by pid, process (substring of its
    command line) or process_cmd (exact process name). timeout: seconds after which blade-go
    destroys the experiment on its own. uid: the experiment uid to use (default: random).
    caller: fault only calls made from these functions' code (comma-separated, like func),
    found within the first caller_depth frames (default 1: the direct caller).
    Returns the experiment uid.
    """
    return _create("return", dict(func=func, value=value), pid, process, process_cmd,
                   timeout, uid, caller, caller_depth)


def inject_delay(func: str, time: int, offset: int = None, pid: int = None,
                 process: str = None, process_cmd: str = None, timeout: int = None,
                 uid: str = None, caller: str = None, caller_depth: int = None) -> str:
    """Make every call of a Go function first wait `time` milliseconds (+- `offset`) in the
    calling goroutine only (blade-go `delay`). Targeting, timeout, uid, caller and
    caller_depth as for inject_return. Returns the experiment uid.
    """
    return _create("delay", dict(func=func, time=time, offset=offset), pid, process,
                   process_cmd, timeout, uid, caller, caller_depth)


def inject_panic(func: str, value: str, pid: int = None, process: str = None,
                 process_cmd: str = None, timeout: int = None, uid: str = None,
                 caller: str = None, caller_depth: int = None) -> str:
    """Make every call of a Go function panic with `value` ("text", error:<message> or
    var:<pkg>.<Name>) (blade-go `panic`). Targeting, timeout, uid, caller and caller_depth
    as for inject_return. Returns the experiment uid.
    """
    return _create("panic", dict(func=func, value=value), pid, process, process_cmd,
                   timeout, uid, caller, caller_depth)


def inject_args(func: str, set: str, pid: int = None, process: str = None,
                process_cmd: str = None, timeout: int = None, uid: str = None,
                caller: str = None, caller_depth: int = None) -> str:
    """Run every call of a Go function with some parameters replaced (blade-go `args`).

    set: "name=value,..." (names from DWARF or #0, #1 by position; values in the return
    grammar). Targeting, timeout, uid, caller and caller_depth as for inject_return. Returns
    the experiment uid.
    """
    return _create("args", {"func": func, "set": set}, pid, process, process_cmd, timeout,
                   uid, caller, caller_depth)


def destroy(uid: str) -> dict:
    """Restore what experiment `uid` changed (rollback). An experiment already destroyed, or
    never created (its injection was refused before blade-go recorded it), is reported in the
    result, not raised. Returns blade-go's destroy result ({uid, status, restored|message}).
    """
    try:
        return experiment.destroy(str(uid))
    except BladeError as e:
        if e.code == Code.DATA_NOT_FOUND:
            return {"uid": uid, "status": "NotFound", "message": e.message}
        raise activity_failed(f"destroy {uid}", e) from None


def destroy_all(pid: int = None, process: str = None) -> list:
    """Destroy every experiment still recorded as in effect (rollback): those on process `pid`,
    or on processes whose command line contains `process`, or, with neither, all of them in this
    state directory ($BLADE_GO_HOME). Nothing to destroy is an empty list, not a failure; a
    destroy that fails is raised after the others were tried. Returns the destroy results.
    """
    store = st.StateStore()
    pending = [r for r in store.list()
               if r.get("status") in (st.SUCCESS, st.ERROR)  # Created: a create still running
               and (pid is None or r.get("pid") == int(pid))
               and (process is None or process in (r.get("cmdline") or ""))]
    results, failures = [], []
    for rec in pending:
        try:
            results.append(experiment.destroy(rec["uid"], store=store))
        except BladeError as e:
            if e.code != Code.DATA_NOT_FOUND:  # removed meanwhile: nothing left
                failures.append(f"{rec['uid']}: {e.message} (code {e.code})")
    if failures:
        from chaoslib.exceptions import ActivityFailed
        raise ActivityFailed("blade-go destroy_all: " + "; ".join(failures))
    return results


def _create(action: str, own: dict, pid, process, process_cmd, timeout, uid, caller=None,
            caller_depth=None) -> str:
    flags = {**own, "pid": pid, "process": process, "process-cmd": process_cmd,
             "timeout": timeout, "uid": uid, "caller": caller, "caller-depth": caller_depth}
    # the registry converts and checks raw values exactly as it does command-line text
    flags = {k: str(v) for k, v in flags.items() if v is not None}
    try:
        result = experiment.create(TARGET, action, flags)
    except BladeError as e:
        raise activity_failed(f"create go {action} refused", e) from None
    if isinstance(result, dict):  # {uid, warnings}: e.g. inlined call sites left unchanged
        for w in result.get("warnings") or []:
            logger.warning("blade-go %s %s: %s", action, result["uid"], w)
        return result["uid"]
    return result


def _exported() -> list:
    """The inject_* functions whose action the spec registry has, then the rollbacks."""
    try:
        actions = default_registry().target(TARGET).actions
    except BladeError as e:  # an unreadable spec: still offer the rollbacks
        logger.warning("blade-go specs unreadable, no inject_* activity offered: %s", e)
        actions = {}
    names = [f"inject_{a}" for a in actions if callable(globals().get(f"inject_{a}"))]
    return names + ["destroy", "destroy_all"]


__all__ = _exported()
