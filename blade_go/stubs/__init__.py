"""Return stubs: the `--value` grammar, value images and the machine code that returns them.

    values = parse_values('"chaos",error:db is down', binary.result_locations(fn), binary,
                          func=fn.name)
    plan = plan_return(results, values, "amd64", 8, BinaryResolver(binary), allocate, entry,
                       entry_bytes, read_original=...)
    plan.patches  # [cave patch (stub + data), route patch (jmp at F's entry)]

Modules: values (grammar), image (values -> Go memory images and cave data), encoder_amd64 /
encoder_386 (instruction encodings behind one interface), planner (stub layout and patches).
"""
from .image import BinaryResolver, Resolver
from .planner import StubPlan, plan_return
from .values import Value, parse_values

__all__ = ["parse_values", "plan_return", "StubPlan", "Value", "Resolver", "BinaryResolver"]
