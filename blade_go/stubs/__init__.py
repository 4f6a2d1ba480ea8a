"""Stubs: the `--value` grammar, value images and the machine code every fault plants.

    values = parse_values('"chaos",error:db is down', binary.result_locations(fn), binary,
                          func=fn.name)
    impl = stub_arch(binary.goarch)   # stubs/select.py: the one place a GOARCH picks its code
    plan = impl.plan_return(results, values, binary.goarch, 8, BinaryResolver(binary),
                            allocate, entry, entry_bytes, read_original=...)
    plan.patches  # [cave patch (stub + data), route patch (the branch at F's entry)]

Core (every arch): values (grammar), image (values -> Go memory images and cave data), planner
(return-stub layout over an encoder), plans (what planners return), placement (sites and the
ArchCode interface), conditions (the in-stub condition prefix). The x86 family (amd64, 386:
iced-x86) is placement_x86, asm, faults, args_stub, conditions_return, conditions_x86,
instance_guard and the *_amd64 / *_386 files; arm64 is the *_arm64 files. arch.py defines the
per-arch interface (StubArch), select.py maps amd64 / 386 / arm64 to theirs.
"""
from .image import BinaryResolver, Resolver
from .planner import StubPlan, plan_return
from .values import Value, parse_values

__all__ = ["parse_values", "plan_return", "StubPlan", "Value", "Resolver", "BinaryResolver"]
