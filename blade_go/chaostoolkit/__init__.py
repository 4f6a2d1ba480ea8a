"""Chaos Toolkit extension: blade-go faults as actions, probes and rollbacks of `chaos run`.

Experiments name the activities by module path:

- `blade_go.chaostoolkit.actions`: `inject_<action>` for each action of specs/go.yaml (each
  returns the experiment uid), and the rollbacks `destroy` and `destroy_all`;
- `blade_go.chaostoolkit.probes`: `experiment_status`, `active_experiments`, `function_info`
  (what `blade-go inspect` says) and `new_experiment_uid` (for the experiment's configuration).

The activities call blade-go's Python API (blade_go.experiment, the inspector's report) in the
`chaos` process itself: no CLI round trip, and a refusal keeps its message and chaosblade code
(raised as chaoslib's ActivityFailed). State lives where the CLI keeps it ($BLADE_GO_HOME), so
`blade-go status` and `blade-go destroy` see experiments created by `chaos run` and vice versa.

`chaos discover blade-go --no-install` finds `discover` below through `blade_go.discover`
(chaoslib looks the function up in the distribution's top-level package).
"""
try:
    from chaoslib.discovery.discover import (discover_actions, discover_probes,
                                             initialize_discovery_result)
except ImportError as e:  # the extra is not installed
    raise ImportError("blade_go.chaostoolkit needs chaostoolkit-lib: "
                      "pip install 'blade-go[chaostoolkit]'") from e

from .. import __version__

__all__ = ["discover"]


def discover(discover_system: bool = True) -> dict:
    """The activities of this extension and, with discover_system, what blade-go can use here."""
    discovery = initialize_discovery_result("blade-go", __version__, "go")
    discovery["activities"].extend(discover_actions("blade_go.chaostoolkit.actions"))
    discovery["activities"].extend(discover_probes("blade_go.chaostoolkit.probes"))
    if discover_system:
        discovery["system"] = _system()
    return discovery


def _system() -> dict:
    """Facts that decide whether injections can work on this machine; never raises."""
    from .. import state
    from ..errors import BladeError
    from ..registry import default_registry
    from ..session.launcher import find_dlv

    out = {"actions": list(default_registry().target("go").actions),
           "state_home": str(state.home())}
    try:
        out["dlv"] = find_dlv()
    except BladeError as e:
        out["dlv"], out["dlv_error"] = None, e.message
    out["ptrace_scope"] = _read("/proc/sys/kernel/yama/ptrace_scope")
    return out


def _read(path: str):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None
