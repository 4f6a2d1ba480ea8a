"""Retained values: value caves a destroy left in place because the program may still hold them.

A destroy restores every byte of code at once (routes, stub instructions, arm bytes). A value
cave (patch.VALUE: a returned string's bytes, an `error:` value's errorString, an args string,
a panic value) goes back to the file's bytes only in a stop where nothing points into it
(session/references.py); otherwise it is *retained*: left in place (inert bytes in padding
outside every function, never executed), listed in the destroy's result and kept in the
experiment's record:

    record["retained"] = [{"addr": 4198448, "original": "0000...", "replacement": "6368...",
                           "role": "value", "reason": "references found: the word at ...",
                           "since": 1765140000.0}]

While retained, the cave allocator never hands those bytes out (actions/return_._taken_ranges).
They are reclaimed only when a scan proves them free, never on a timer or a guess:
- by the process's supervisor while it is attached anyway: every RECLAIM_EVERY seconds, at a
  `reclaim` request (a later create, or `destroy <uid>` of a destroyed experiment that still
  retains bytes) and before it detaches (its exit);
- a process that exits takes them with it (the sweep of any later command records that).
Reclaiming writes the file's bytes back (the patches are checked against the executable first,
trust.py) and only then removes them from the record, so they are never handed out while set.
"""
import time

from ..patch import VALUE, Patch
from . import records

RECLAIM_EVERY = 5.0  # seconds between a supervisor's attempts while it is attached anyway


def retained_entries(patches: list, facts: dict | None) -> list:
    """The record's `retained` list for a revert's result: the value patches (as JSON) whose
    addresses the result lists as retained, each with its reason."""
    reasons = {int(r["addr"], 16): r.get("reason", "") for r in (facts or {}).get("retained") or []}
    if not reasons:
        return []
    now = time.time()
    out = []
    for d in patches:
        p = d if isinstance(d, Patch) else Patch.from_json(d)
        if p.role == VALUE and p.addr in reasons:
            out.append(dict(p.to_json(), reason=reasons[p.addr], since=now))
    return out


def summary(entries: list) -> dict:
    """{"retained": [{"addr", "size", "reason"}], "retained_bytes": n} for status output."""
    items = [{"addr": hex(int(e["addr"])), "size": len(e["replacement"]) // 2,
              "reason": e.get("reason", "")} for e in entries or []]
    return {"retained": items, "retained_bytes": sum(i["size"] for i in items)}


def entries_of(rec: dict) -> list:
    return (rec.get("record") or {}).get("retained") or []


def on_process(home: str, pid: int) -> list:
    """[(uid, record)] of experiments that retain value caves in this very process (same
    start time: a reused pid is another process)."""
    started = records.start_time(pid)
    if started is None:
        return []
    try:
        recs = list(records._store(home).list())
    except Exception:
        return []
    return [(r["uid"], r) for r in recs if entries_of(r) and records._record_pid(r) == pid
            and records.target_start_time(r) == started]


def forget(home: str, uid: str, addrs: set, note: str):
    """Remove the entries at `addrs` from uid's retained list (their bytes are the file's
    again, or their process is gone) and say so in the record."""
    def fn(rec):
        r = rec.get("record") or {}
        left = [e for e in r.get("retained") or [] if int(e["addr"]) not in addrs]
        gone = len(r.get("retained") or []) - len(left)
        if gone:
            r["retained"] = left
            r.setdefault("reclaimed", []).append({"count": gone, "at": time.time(),
                                                   "how": note})
            rec["record"] = r
        return rec
    records._store(home).update(uid, fn)


def reclaim_process(patcher, home: str, pid: int, log, how: str) -> dict:
    """One scan over every value cave retained in pid: restore those nothing points to and
    forget them; {"reclaimed": bytes, "retained_bytes": left, "retained": [...]}."""
    from ..trust import trusted_patches
    total, left = 0, []
    for uid, rec in on_process(home, pid):
        entries = entries_of(rec)
        try:
            values = trusted_patches(pid, {"patches": [{k: e[k] for k in (
                "addr", "original", "replacement", "role")} for e in entries],
                "target_start_time": records.target_start_time(rec)}, uid)
        except Exception as e:  # a forged record: reported, nothing written
            log(f"{uid}: retained values not reclaimed: {e}")
            left += entries
            continue
        res = patcher.reclaim([p for p in values if p.role == VALUE])
        freed = {int(a, 16) for a in res["reclaimed_at"]}
        if freed:
            forget(home, uid, freed, how)
            log(f"{uid}: reclaimed {res['reclaimed']} bytes of retained values")
        total += res["reclaimed"]
        left += [e for e in entries if int(e["addr"]) not in freed]
    return {"reclaimed": total, **summary(left)}


def drop_exited(home: str, rec: dict):
    """The record's process has exited: its retained values went with it."""
    forget(home, rec["uid"], {int(e["addr"]) for e in entries_of(rec)},
           "the process exited (its memory went with it)")
