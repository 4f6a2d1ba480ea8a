"""blade-go: a ChaosBlade executor that injects faults into running Go processes via delve."""

__version__ = "0.1.0"


def discover(discover_system: bool = True) -> dict:
    """Chaos Toolkit's entry point (`chaos discover blade-go`): chaoslib looks `discover` up in
    the distribution's top-level package. Needs the extra: pip install 'blade-go[chaostoolkit]'."""
    from .chaostoolkit import discover as _discover
    return _discover(discover_system=discover_system)
