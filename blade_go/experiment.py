"""Experiment lifecycle: create, destroy, status and listing, as chaosblade models them.

create: validate flags (registry) -> resolve the target process -> state record (Created) ->
executor.create -> Success | Error -> POST to --endpoint. The executor owns the "record" entry
(what destroy needs to restore the process); this module owns everything around it.
"""
from __future__ import annotations

import logging
import secrets
import shlex

from . import state as st
from .actions import Context, executor_for
from .errors import BladeError, Code
from .registry import default_registry
from .targeting import resolve_process

log = logging.getLogger("blade_go")

ENDPOINT_TIMEOUT = 5  # seconds; a slow endpoint must not hold up the experiment
_TARGETING = ("pid", "process", "process-cmd")
_NOT_STORED = ("uid", "debug")  # per-invocation flags, not part of the experiment


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


def command_line(target: str, action: str, flags: dict) -> str:
    """The canonical command that creates this experiment (stored like blade's `command`)."""
    words = ["create", target, action]
    for name, value in flags.items():
        if value is True:
            words.append(f"--{name}")
        elif value not in (None, False):
            value = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
            words += [f"--{name}", str(value)]
    return " ".join(shlex.quote(w) for w in words)


def _context(rec: dict, store, debug=False) -> Context:
    return Context(uid=rec["uid"], target=rec["target"], action=rec["action"],
                   flags=dict(rec.get("flags") or {}), pid=rec.get("pid"), exe=rec.get("exe"),
                   timeout=rec.get("timeout"), store=store, debug=debug)


def _summary(rec: dict) -> dict:
    """The experiment as reported outside (endpoint, listing): everything but handler internals."""
    out = {k: v for k, v in rec.items() if k != "record"}
    result = (rec.get("record") or {}).get("result")
    if result:
        out["result"] = result
    return out


def post_endpoint(url: str, rec: dict) -> str | None:
    """POST the experiment to url; returns a warning text on failure, never raises."""
    try:
        import requests
        resp = requests.post(url, json=_summary(rec), timeout=ENDPOINT_TIMEOUT)
        if resp.status_code >= 300:
            return f"endpoint {url} answered HTTP {resp.status_code}"
    except Exception as e:  # network, DNS, TLS: reported, never fatal
        return f"endpoint {url} unreachable: {type(e).__name__}: {e}"
    return None


def create(target: str, action: str, flags: dict, registry=None, store=None) -> object:
    """Run `create <target> <action> --flags`; returns the Response result (the uid).

    flags maps flag names to raw command-line values (None or absent when not given).
    """
    registry = registry or default_registry()
    store = store or st.StateStore()
    spec = registry.target(target).action(action)
    values = spec.validate(flags)
    uid = values.get("uid") or secrets.token_hex(8)
    proc = resolve_process(values.get("pid"), values.get("process"), values.get("process-cmd"),
                           container_id=values.get("container-id"),
                           ns_target=values.get("ns_target"))
    executor = executor_for(spec.name)
    stored = {k: _jsonable(v) for k, v in values.items()
              if k not in _NOT_STORED and v not in (None, False)}
    timeout = values.get("timeout") or None
    rec = store.create({
        "uid": uid, "target": target, "action": spec.name, "flags": stored,
        "command": command_line(target, spec.name, stored), "pid": proc.pid, "exe": proc.exe,
        "cmdline": proc.cmdline, "timeout": timeout, "record": {}})
    ctx = _context(rec, store, debug=bool(values.get("debug")))
    log.debug("create %s: %s on pid %d (%s)", uid, rec["command"], proc.pid, proc.cmdline)
    try:
        owned = executor.create(ctx) or {}
    except BaseException as e:
        text = e.message if isinstance(e, BladeError) else f"{type(e).__name__}: {e}"
        rec = store.set_status(uid, st.ERROR, text)
        if values.get("endpoint"):
            warning = post_endpoint(values["endpoint"], rec)
            if warning:
                log.warning("%s", warning)
        raise
    rec = store.update(uid, lambda r: r.update(
        status=st.SUCCESS, error="", record={**(r.get("record") or {}), **owned}))
    # A handler's warnings (e.g. inlined call sites a patch cannot reach) reach the user in
    # the create result, as a failing endpoint does.
    warnings = list(owned.get("warnings") or [])
    if values.get("endpoint"):
        warning = post_endpoint(values["endpoint"], rec)
        if warning:
            warnings.append(warning)
    return {"uid": uid, "warnings": warnings} if warnings else uid


def destroy(uid: str, store=None, debug=False) -> dict:
    """Restore what the experiment changed; already destroyed is a success that says so."""
    store = store or st.StateStore()
    rec = store.get(uid)
    if rec["status"] == st.DESTROYED:
        return {"uid": uid, "status": st.DESTROYED,
                "message": f"experiment {uid} was already destroyed at {rec['update_time']}"}
    facts = None
    # a create that failed before the handler stored anything has nothing to restore
    if rec["status"] == st.SUCCESS or rec.get("record"):
        executor = executor_for(rec["action"])
        try:
            facts = executor.destroy(_context(rec, store, debug), rec.get("record") or {})
        except BaseException as e:
            text = e.message if isinstance(e, BladeError) else f"{type(e).__name__}: {e}"
            store.update(uid, lambda r: r.update(error=f"destroy failed: {text}"))
            raise

    def finish(r):
        r.update(status=st.DESTROYED, error="")
        if facts:
            r["record"] = {**(r.get("record") or {}), "destroyed": facts}
    store.update(uid, finish)
    out = {"uid": uid, "status": st.DESTROYED}
    if facts:
        out["restored"] = facts
    return out


def status(uid: str, store=None, debug=False) -> dict:
    """The stored record plus the handler's live facts (for experiments still in effect)."""
    store = store or st.StateStore()
    rec = store.get(uid)
    out = _summary(rec)
    if rec["status"] == st.SUCCESS:
        try:
            out["live"] = executor_for(rec["action"]).status(
                _context(rec, store, debug), rec.get("record") or {})
        except BladeError as e:
            out["live"] = {"error": e.message, "code": e.code}
    return out


def list_status(type: str = "create", status: str | None = None, limit=None,
                store=None) -> list:
    """`status --type create [--status S] [--limit N]`: experiments, newest first."""
    if type != "create":
        raise BladeError(Code.PARAMETER_ILLEGAL,
                         f"illegal value {type!r} for --type: expected create")
    canon = None
    if status is not None:
        canon = next((s for s in st.STATUSES if s.lower() == str(status).lower()), None)
        if canon is None:
            raise BladeError(Code.PARAMETER_ILLEGAL, f"illegal value {status!r} for --status: "
                             "expected one of " + ", ".join(st.STATUSES))
    if limit is not None:
        try:
            limit = int(limit)
            if limit <= 0:
                raise ValueError
        except (TypeError, ValueError):
            raise BladeError(Code.PARAMETER_ILLEGAL,
                             f"illegal value {limit!r} for --limit: expected a positive integer")
    store = store or st.StateStore()
    return [_summary(r) for r in store.list(status=canon, limit=limit)]
