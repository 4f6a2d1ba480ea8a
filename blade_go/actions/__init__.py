"""Action handlers: one Executor per spec action, looked up by the action's name.

Handlers are registered by module path and imported only when used, so a handler that is missing
or fails to import becomes a chaosblade error (HandlerExecNotFound) instead of a traceback, and
commands that do not need it (status, spec, help) never pay for its imports.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from ..errors import BladeError, Code

# action name -> "module:Class" (or the class itself, e.g. registered by tests)
HANDLERS: dict = {
    "return": "blade_go.actions.return_:ReturnExecutor",
    "delay": "blade_go.actions.delay:DelayExecutor",
    "panic": "blade_go.actions.panic:PanicExecutor",
    "args": "blade_go.actions.args:ArgsExecutor",
}


@dataclass
class Context:
    """What a handler gets: the experiment and its validated flags."""
    uid: str
    target: str  # chaosblade target, "go"
    action: str
    flags: dict  # flag name -> typed value (registry-validated), every flag of the action
    pid: int  # the resolved target process
    exe: str | None
    timeout: int | None  # seconds; the session supervisor enforces it
    store: object  # blade_go.state.StateStore
    debug: bool = False
    extra: dict = field(default_factory=dict)


class Executor:
    """Base class of action handlers.

    create() returns the handler-owned record stored with the experiment (e.g. patches and
    session info: whatever destroy needs to restore the process); its optional "result" entry is
    a dict for the user. destroy() gets that record back and may return a dict of facts to merge
    into it. status() returns live facts (session alive, patch bytes present, ...).
    Failures are raised as BladeError.
    """

    def create(self, ctx: Context) -> dict:
        raise NotImplementedError

    def destroy(self, ctx: Context, record: dict) -> dict | None:
        raise NotImplementedError

    def status(self, ctx: Context, record: dict) -> dict:
        return {}


def executor_for(action: str) -> Executor:
    """An instance of the handler registered for action, or BladeError(HANDLER_EXEC_NOT_FOUND)."""
    entry = HANDLERS.get(action)
    if entry is None:
        raise BladeError(Code.HANDLER_EXEC_NOT_FOUND,
                         f"no executor handles action {action!r} (the spec declares it, but no "
                         "handler is registered)")
    cls = entry
    if isinstance(entry, str):
        module, _, name = entry.partition(":")
        try:
            cls = getattr(importlib.import_module(module), name)
        except Exception as e:  # any import-time failure, reported not raised
            raise BladeError(Code.HANDLER_EXEC_NOT_FOUND,
                             f"executor for action {action!r} ({entry}) cannot be loaded: "
                             f"{type(e).__name__}: {e}")
    if not (isinstance(cls, type) and issubclass(cls, Executor)):
        raise BladeError(Code.HANDLER_EXEC_NOT_FOUND,
                         f"executor for action {action!r} ({entry}) is not an Executor class")
    return cls()
