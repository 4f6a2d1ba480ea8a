"""Chaos Toolkit probes for blade-go (module `blade_go.chaostoolkit.probes`).

No `from __future__ import annotations`: chaoslib's discovery reads annotations as types.
"""
import secrets as _secrets

from .. import experiment
from .. import state as st
from ..errors import BladeError
from ._errors import activity_failed

__all__ = ["experiment_status", "active_experiments", "active_experiment_count", "function_info",
           "new_experiment_uid"]


def experiment_status(uid: str) -> dict:
    """What `blade-go status <uid>` says: the experiment record (status Created, Success, Error
    or Destroyed, flags, pid, error) plus, while it is in effect, the handler's live facts.
    """
    try:
        return experiment.status(str(uid))
    except BladeError as e:
        raise activity_failed(f"status {uid}", e) from None


def active_experiments(pid: int = None, process: str = None) -> list:
    """Experiments in effect (status Success) in this state directory, optionally only those on
    process `pid` or on processes whose command line contains `process`; newest first. An empty
    list is the steady state "blade-go changes nothing".
    """
    return [r for r in experiment.list_status(status=st.SUCCESS)
            if (pid is None or r.get("pid") == int(pid))
            and (process is None or process in (r.get("cmdline") or ""))]


def active_experiment_count(pid: int = None, process: str = None) -> int:
    """How many experiments are in effect (as active_experiments counts them): a steady-state
    probe with tolerance 0 says "blade-go changes nothing in this process".
    """
    return len(active_experiments(pid=pid, process=process))


def function_info(func: str, pid: int = None, binary: str = None) -> dict:
    """What `blade-go inspect --func F` says about a function, read from the executable of
    process `pid` (or the file `binary`) without touching the process: Go version, ABI, address,
    signature, where each result travels, inlined call sites, caves near it.
    """
    if (pid is None) == (binary is None):
        from ..errors import Code
        raise activity_failed("inspect", BladeError(
            Code.PARAMETER_LESS, "less parameter: exactly one of pid, binary"))
    from ..inspector.report import inspect_report
    try:
        return inspect_report(pid=None if pid is None else int(pid), binary=binary, func=func)
    except BladeError as e:
        raise activity_failed(f"inspect {func}", e) from None


def new_experiment_uid(prefix: str = "ctk") -> str:
    """A fresh experiment uid (prefix + 12 hex characters). Meant for the experiment's
    configuration (a dynamic `"type": "probe"` entry), so the method's inject_* and the
    rollback's destroy name the same experiment and a second run never collides with the first.
    """
    return f"{prefix}-{_secrets.token_hex(6)}"
