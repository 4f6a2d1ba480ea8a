"""Return stubs: the `--value` grammar, value images and the machine code that returns them.

    values = parse_values('"chaos",error:db is down', binary.result_locations(fn), binary,
                          func=fn.name)
    plan = plan_return(results, values, "amd64", 8, BinaryResolver(binary), allocate, entry,
                       entry_bytes, read_original=...)
    plan.patches  # [cave patch (stub + data), route patch (jmp at F's entry)]

Modules: values (grammar), image (values -> Go memory images and cave data), encoder_amd64 /
encoder_386 (instruction encodings behind one interface), planner (stub layout and patches).

Faults that keep F running: placement (where a patch goes in F and how displaced instructions
are relocated; placement_amd64 / placement_386 hold the prologue shapes), asm (a two-pass
assembler over iced-x86), faults (delay and panic: `call H; jmp H2` after the frame setup, tail
calls of time.Sleep / runtime.gopanic) and args_stub (an entry stub setting parameters).
"""
from .image import BinaryResolver, Resolver
from .planner import StubPlan, plan_return
from .values import Value, parse_values

__all__ = ["parse_values", "plan_return", "StubPlan", "Value", "Resolver", "BinaryResolver"]
