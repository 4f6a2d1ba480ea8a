"""blade-go: a ChaosBlade executor that injects faults into running Go processes via delve."""

__version__ = "0.1.0"
