"""The `args` action: every call of a function runs with some parameters replaced.

`--set 'name=value,...'`: names as DWARF gives them (the receiver included) or `#N` by position
(counting the receiver, not a generic instance's hidden dictionary); values in the --value
grammar, checked against each parameter's type. F's entry becomes a jump to a stub that loads the
values into the parameters' registers or stack slots, runs the displaced entry instructions and
jumps back: the rest of F runs unchanged on the new input.
"""
from dataclasses import replace

from ..errors import BladeError, Code
from ..stubs import values as V
from ..stubs.image import BinaryResolver
from .code_fault import CodeFaultExecutor


def parse_assignments(text: str, params) -> dict:
    """{param index: Value} from 'name=value,...' (commas inside quotes are kept)."""
    visible = [p for p in params if p.name != ".dict"]
    out = {}
    for elem in V.split_elements(text or ""):
        if not elem.strip():
            continue
        name, eq, value = elem.partition("=")
        name = name.strip()
        if not eq or not name:
            raise BladeError(Code.PARAMETER_ILLEGAL, f"--set: {elem.strip()!r} is not name=value")
        if name.startswith("#") and name[1:].isdigit():
            k = int(name[1:])
            if k >= len(visible):
                raise BladeError(Code.PARAMETER_ILLEGAL, f"--set: {name}: the function has "
                                                         f"{len(visible)} parameters")
            loc = visible[k]
        else:
            hits = [p for p in visible if p.name == name]
            if not hits:
                names = ", ".join(p.name for p in visible) or "none"
                raise BladeError(Code.PARAMETER_ILLEGAL, f"--set: no parameter {name!r} "
                                                         f"(parameters: {names})")
            loc = hits[0]
        if loc.index in out:
            raise BladeError(Code.PARAMETER_ILLEGAL, f"--set: {name} is set twice")
        try:
            v = V.parse_element(loc.index, loc.type, value)
        except BladeError as e:  # the grammar speaks of results; here it is a parameter
            raise BladeError(e.code, str(e.message).replace(
                f"--value: result {loc.index} ", f"--set: parameter {name} ")) from None
        out[loc.index] = replace(v, index=loc.index)
    if not out:
        raise BladeError(Code.PARAMETER_ILLEGAL, "--set: give at least one name=value")
    return out


class ArgsExecutor(CodeFaultExecutor):
    fault = "args"

    def plan(self, ctx, target):
        new = parse_assignments(ctx.flags.get("set"), target.params)
        for v in new.values():
            if v.kind == V.VAR:
                var = target.binary.variable(v.data)
                V.check_var_type(v, getattr(var, "type", None))
        return target.impl.plan_args(target.code, target.params, new,
                                     BinaryResolver(target.binary), target.allocate,
                                     target.read_original, conds=target.conds,
                                     counters=target.counters)

    def describe(self, ctx):
        return {"set": ctx.flags.get("set")}
