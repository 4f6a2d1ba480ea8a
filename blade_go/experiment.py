"""Experiment lifecycle: create, destroy, status and listing, as chaosblade models them.

create: validate flags (registry) -> resolve the target process -> state record (Created) ->
executor.create -> Success | Error -> POST to --endpoint. The executor owns the "record" entry
(what destroy needs to restore the process); this module owns everything around it.

One experiment at a time: create and destroy of one uid each hold the uid's lock
(session.records.uid_lock) from start to end, so a destroy that meets a create in progress waits
for it and then restores; a record says Destroyed only once the executor verified the bytes
restored (caves leave the live set, and can be allocated again, only then).
--timeout is an absolute "deadline" in the record. Every command first sweeps: ends dlvs that
dead supervisors left (their targets resume), destroys experiments past their deadline (their
supervisor died), and records what happened to experiments whose process has ended.
"""
from __future__ import annotations

import logging
import os
import secrets
import shlex
import time

from . import state as st
from .actions import Context, executor_for
from .errors import BladeError, Code
from .redact import redact_url, scrub
from .procfs import start_time
from .registry import default_registry
from .session import records as session_records
from .targeting import resolve_process

log = logging.getLogger("blade_go")

EXPIRY_MARGIN = 2.0  # seconds past a deadline before a command (not the supervisor) acts
ENDPOINT_TIMEOUT = 5  # seconds; a slow endpoint must not hold up the experiment
_TARGETING = ("pid", "process", "process-cmd")
_NOT_STORED = ("uid", "debug")  # per-invocation flags, not part of the experiment


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


def _given(value) -> bool:
    """A flag that was set: 0 is a value (`--time 0`), only None and a false bool are not
    (`0 in (None, False)` is true in Python, hence no membership test)."""
    return value is not None and value is not False


def command_line(target: str, action: str, flags: dict) -> str:
    """The canonical command that creates this experiment (stored like blade's `command`)."""
    words = ["create", target, action]
    for name, value in flags.items():
        if value is True:
            words.append(f"--{name}")
        elif _given(value):
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
    destroyed = (rec.get("record") or {}).get("destroyed")
    if destroyed:  # what destroy (or --timeout) restored and how long a drain took
        out["destroyed"] = destroyed
    from .session import reclaim
    kept = reclaim.entries_of(rec)
    if kept:  # value caves the program may still hold, left in place (session/reclaim.py)
        out.update(reclaim.summary(kept))
    return out


def post_endpoint(url: str, rec: dict) -> str | None:
    """POST the experiment to url; returns a warning text on failure, never raises. url is
    the one given on the command line (secrets kept in memory only); warnings show it
    redacted (blade_go/redact.py)."""
    try:
        import requests
        resp = requests.post(url, json=_summary(rec), timeout=ENDPOINT_TIMEOUT)
        if resp.status_code >= 300:
            return f"endpoint {redact_url(url)} answered HTTP {resp.status_code}"
    except Exception as e:  # network, DNS, TLS: reported, never fatal
        return scrub(f"endpoint {url} unreachable: {type(e).__name__}: {e}", url)
    return None


def create(target: str, action: str, flags: dict, registry=None, store=None) -> object:
    """Run `create <target> <action> --flags`; returns the Response result (the uid).

    flags maps flag names to raw command-line values (None or absent when not given).
    """
    registry = registry or default_registry()
    store = store or st.StateStore()
    store.check_home()
    spec = registry.target(target).action(action)
    values = spec.validate(flags)
    uid = values.get("uid") or secrets.token_hex(8)
    sweep(store)
    with session_records.uid_lock(str(store.home), uid):
        return _create_locked(spec, target, values, uid, store)


def _create_locked(spec, target, values, uid, store):
    proc = resolve_process(values.get("pid"), values.get("process"), values.get("process-cmd"),
                           container_id=values.get("container-id"),
                           ns_target=values.get("ns_target"))
    from . import session
    # A supervisor in standby starts (Python, imports) while we analyse; it attaches only when
    # the session is asked for, after the analysis accepted (session/__init__.py).
    standby = session.prestart(proc.pid, str(store.home))
    try:
        return _create_for(spec, target, values, uid, store, proc)
    finally:
        session.discard_standby(standby)


def _create_for(spec, target, values, uid, store, proc):
    executor = executor_for(spec.name)
    stored = {k: _jsonable(v) for k, v in values.items()
              if k not in _NOT_STORED and _given(v)}
    if stored.get("endpoint"):  # its secrets stay in memory, for this create's POST only
        stored["endpoint"] = redact_url(stored["endpoint"])
    timeout = values.get("timeout") or None
    rec = store.create({
        "uid": uid, "target": target, "action": spec.name, "flags": stored,
        "command": command_line(target, spec.name, stored), "pid": proc.pid, "exe": proc.exe,
        "cmdline": proc.cmdline, "timeout": timeout, "record": {},
        "target_start_time": start_time(proc.pid),
        # Provisional, on disk before anything is written; the session sets the final one
        # (from the moment the fault is in place) when it starts watching.
        **({"deadline": time.time() + float(timeout)} if timeout else {})})
    ctx = _context(rec, store, debug=bool(values.get("debug")))
    log.debug("create %s: %s on pid %d (%s)", uid, rec["command"], proc.pid, proc.cmdline)
    early = None
    try:
        # Value caves earlier experiments retained on this process: a scan now may free them
        # (the session is attached for this create anyway) before caves are allocated.
        early = _reclaim(proc.pid, store)
        owned = executor.create(ctx) or {}
        log.debug("create %s: applied", uid)
    except BaseException as e:
        if early is not None:  # attached for the reclaim: let it detach if nothing holds it
            _release_quietly(early, uid)
        text = e.message if isinstance(e, BladeError) else f"{type(e).__name__}: {e}"
        text += _undo_after_failed_create(e, executor, uid, store, values)
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
    out = {"uid": uid}
    if warnings:
        out["warnings"] = warnings
    paused = ((owned.get("result") or {}) if isinstance(owned.get("result"), dict) else {}).get(
        "target_paused")
    if paused is not None:  # the tool's own cost to the target, beside the fault (measured)
        out["target_paused"] = paused
    return out if len(out) > 1 else uid


def _reclaim(pid: int, store, session=None):
    """Ask pid's session to reclaim retained value caves (reclaim.py), when there are any;
    the session it used (started when none was attached and session is None), else None.
    Never fails the command: a failure leaves them retained."""
    from .session import ensure_session, reclaim
    if not reclaim.on_process(str(store.home), pid):
        return None
    try:
        session = session or ensure_session(pid, str(store.home))
        res = session.reclaim()
        log.debug("reclaim on %d: %s", pid, res)
        session.last_reclaim = res
    except Exception as e:
        log.warning("reclaiming retained values in %d: %s", pid, e)
    return session


def _release_quietly(session, uid):
    try:
        session.release(uid)
    except Exception as e:
        log.debug("release %s: %s", uid, e)


def _undo_after_failed_create(e, executor, uid, store, values) -> str:
    """A create whose session vanished mid-request may have written its patches: restore them
    now (a failed create leaves nothing behind). Returns a note for the error text."""
    from .session import SessionGone, SessionLost
    if not isinstance(e, (SessionGone, SessionLost)):
        return ""
    rec = store.get(uid)
    if not (rec.get("record") or {}).get("patches"):
        return ""
    try:
        executor.destroy(_context(rec, store, bool(values.get("debug"))), rec["record"])
        return "; whatever was written has been restored"
    except BaseException as undo:
        # Its bytes may be in place: the record keeps its caves reserved until a destroy.
        store.update(uid, lambda r: r.update(restore_pending=True))
        text = undo.message if isinstance(undo, BladeError) else str(undo)
        return f"; restoring failed too ({text}): run destroy {uid}"


def sweep(store, skip: str | None = None):
    """What dead supervisors and interrupted commands left: never fails the command."""
    from .session import sweep as end_orphans
    home = str(store.home)
    try:
        end_orphans(home, log=log.warning)
    except Exception as e:
        log.warning("sweep: %s", e)
    try:
        recs = store.list()
    except Exception as e:
        log.warning("sweep: %s", e)
        return
    now = time.time()
    from .session import reclaim
    for rec in recs:
        uid = rec.get("uid")
        if reclaim.entries_of(rec) and session_records.target_gone(rec):
            try:  # a process that exits takes its retained values with it
                reclaim.drop_exited(home, rec)
            except Exception as e:
                log.warning("sweep of %s: %s", uid, e)
        if uid == skip or rec.get("status") not in (st.CREATED, st.SUCCESS):
            continue
        gone = session_records.target_gone(rec)
        # The margin leaves an expiry to a live supervisor's own timer when there is one.
        expired = bool(rec.get("deadline")) and float(rec["deadline"]) + EXPIRY_MARGIN <= now
        if not (gone or expired or rec.get("status") == st.CREATED):
            continue
        try:
            with session_records.uid_lock(home, uid, wait=0) as got:
                if not got:
                    continue  # a create or destroy of it is running: it decides
                _settle(uid, store, gone, expired)
        except Exception as e:
            log.warning("sweep of %s: %s", uid, e)


def _settle(uid, store, gone, expired):
    rec = store.get(uid)
    if rec.get("status") not in (st.CREATED, st.SUCCESS):
        return
    if gone:
        reason = f"target process {rec.get('pid')} exited; nothing left to restore"
        store.update(uid, lambda r: r.update(status=st.DESTROYED, reason=reason))
    elif expired:
        _destroy_locked(uid, store, reason="destroyed by timeout (enforced by a later "
                                           "blade-go command)",
                        enforced_by="a later blade-go command")
    else:  # Created, nobody holds its lock: the create was killed before it finished
        note = "create was interrupted before it finished"
        pending = False
        if (rec.get("record") or {}).get("patches"):
            try:
                executor_for(rec["action"]).destroy(_context(rec, store), rec["record"])
                note += "; whatever it wrote has been restored"
            except BaseException as e:
                pending = True  # its caves stay reserved until a destroy restores them
                text = e.message if isinstance(e, BladeError) else str(e)
                note += f"; restoring what it wrote failed ({text}): run destroy {uid}"
        store.update(uid, lambda r: r.update(status=st.ERROR, error=note,
                                             restore_pending=pending))


def destroy(uid: str, store=None, debug=False) -> dict:
    """Restore what the experiment changed; already destroyed is a success that says so.
    Waits for a create of the same uid that is still running."""
    store = store or st.StateStore()
    store.check_home()
    sweep(store, skip=uid)
    with session_records.uid_lock(str(store.home), uid):
        return _destroy_locked(uid, store, debug)


def _destroy_locked(uid: str, store, debug=False, reason: str | None = None,
                    enforced_by: str | None = None) -> dict:
    rec = store.get(uid)
    if rec["status"] == st.DESTROYED:
        out = {"uid": uid, "status": st.DESTROYED,
               "message": f"experiment {uid} was already destroyed at {rec['update_time']}"}
        from .session import reclaim
        if reclaim.entries_of(rec) and not session_records.target_gone(rec):
            # it still retains value caves: try to reclaim them (a scan proves them free)
            session = _reclaim(int(rec["pid"]), store)
            if session is not None:
                out["reclaim"] = getattr(session, "last_reclaim", None) or {
                    "error": "the session could not scan; values stay retained"}
                _release_quietly(session, uid)
            out.update(reclaim.summary(reclaim.entries_of(store.get(uid))))
        return out
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
        r.update(status=st.DESTROYED, error="", restore_pending=False)
        if reason:
            r["reason"] = reason
        if enforced_by:
            r["deadline_enforced_by"] = enforced_by
        if facts:
            r["record"] = session_records.with_destroy_facts(r.get("record") or {}, facts)
    store.update(uid, finish)
    out = {"uid": uid, "status": st.DESTROYED}
    if facts:
        out["restored"] = facts
        if facts.get("retained"):
            out["note"] = (f"{facts['retained_bytes']} bytes of values the program may still "
                           "hold are retained (inert, in padding outside every function; the "
                           "fault is gone and every byte of code is restored); a later "
                           f"command on process {rec.get('pid')} (`destroy {uid}` again, a "
                           "create) reclaims them once no reference is left")
    return out


def status(uid: str, store=None, debug=False) -> dict:
    """The stored record plus the handler's live facts (for experiments still in effect)."""
    store = store or st.StateStore()
    store.check_home()
    sweep(store)
    rec = store.get(uid)
    out = _summary(rec)
    if rec["status"] == st.SUCCESS:
        try:
            out["live"] = executor_for(rec["action"]).status(
                _context(rec, store, debug), rec.get("record") or {})
        except BladeError as e:
            out["live"] = {"error": e.message, "code": e.code}
        out["dlv"] = _dlv_status(rec, out["live"])
    return out


def _dlv_status(rec: dict, live: dict) -> dict:
    """Which dlv holds (or would hold) this target, and the pause its first attach costs; the
    measured pause of this experiment is in its result's target_paused."""
    from .session import dlvinfo, launcher
    path = live.get("dlv_path")
    try:
        exe = f"/proc/{rec['pid']}/exe"
        size = os.stat(exe).st_size
        path = path or launcher.find_dlv(launcher.target_machine(rec["pid"]))
    except (OSError, BladeError) as e:
        if not path:
            return {"error": getattr(e, "message", None) or str(e)}
        size = None
    out = dlvinfo.describe(path, size)
    out["in_use"] = bool(live.get("dlv_path"))
    return out


def process_status(pid, store=None) -> dict:
    """`status --pid P`: the experiments live in process P and the value bytes destroyed
    experiments retained there (session/reclaim.py), until they are reclaimed or P exits."""
    try:
        pid = int(pid)
        if pid <= 0:
            raise ValueError
    except (TypeError, ValueError):
        raise BladeError(Code.PARAMETER_ILLEGAL,
                         f"illegal value {pid!r} for --pid: expected a process id")
    store = store or st.StateStore()
    store.check_home()
    sweep(store)
    from .session import reclaim
    started = start_time(pid)
    live, kept = [], []
    for rec in store.list():
        if rec.get("pid") != pid or started is None \
                or session_records.target_start_time(rec) != started:
            continue
        if rec.get("status") in (st.CREATED, st.SUCCESS):
            live.append(rec["uid"])
        for item in reclaim.summary(reclaim.entries_of(rec))["retained"]:
            kept.append({"uid": rec["uid"], **item})
    return {"pid": pid, "alive": started is not None, "experiments": live, "retained": kept,
            "retained_bytes": sum(k["size"] for k in kept)}


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
    store.check_home()
    sweep(store)
    return [_summary(r) for r in store.list(status=canon, limit=limit)]
