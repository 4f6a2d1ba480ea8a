"""How blade 1.8 calls an os-spec executor, and what blade-go does about each habit.

blade runs `bin/chaos_os create|destroy <target> <action> --uid=U --k=v ...` and reads stdout
and stderr *combined* as one JSON Response; a non-zero exit status replaces the executor's
message with `63063 command exec failed, exit status 1`. Hence, under blade (the dispatcher
installed by `blade-go chaosblade install` sets BLADE_GO_UNDER_BLADE=1):
  - the process exits 0 whatever happened (`success: false` is the signal, as chaos_os does);
  - stderr is the log file ($BLADE_GO_HOME/blade-go.log): debug output never reaches blade;
  - `--endpoint` is blade's own job (it POSTs its record), so blade-go does not post again.
Everywhere: noArgs flags come as `--flag=true|false`; blade encodes spaces inside recorded flag
values as `@@##` and passes them on; a flag given twice is refused instead of the last winning;
`destroy <target> <action> --uid=unknown --k=v` (destroy by matchers) destroys every live
experiment of that action whose flags match.
"""
from __future__ import annotations

import logging
import os

from ..errors import BladeError, Code

UNDER_BLADE_ENV = "BLADE_GO_UNDER_BLADE"
SPACE = "@@##"
UNKNOWN_UID = "unknown"  # chaosblade-spec-go spec.UnknownUid
TRUE = ("", "true", "1", "yes", "on")
FALSE = ("false", "0", "no", "off")
# per-invocation flags: never part of what an experiment is, so never matched on destroy;
# the last five are `blade destroy`'s own, which it passes on when given
PER_INVOCATION = ("uid", "debug", "timeout", "async", "endpoint", "nohup",
                  "target", "force-remove", "kubeconfig", "kubectl-proxy", "token")

log = logging.getLogger("blade_go")


def under_blade() -> bool:
    return os.environ.get(UNDER_BLADE_ENV) == "1"


def decode_spaces(argv) -> list:
    """blade's `@@##` back to the space it stands for, in every argument."""
    return [a.replace(SPACE, " ") if SPACE in a else a for a in argv]


def bool_value(name: str, value: str) -> bool:
    low = value.strip().lower()
    if low in TRUE:
        return True
    if low in FALSE:
        return False
    raise BladeError(Code.PARAMETER_ILLEGAL, f"illegal value {value!r} for --{name}: expected a "
                     "boolean (true or false)")


def normalize_bools(args, names) -> list:
    """`--name=true` -> `--name`, `--name=false` -> nothing, for the noArgs flags in names."""
    out = []
    for a in args:
        if a.startswith("--") and "=" in a:
            name, _, value = a[2:].partition("=")
            if name in names:
                if bool_value(name, value):
                    out.append(f"--{name}")
                continue
        out.append(a)
    return out


def options(args, valued) -> list:
    """(name, value) of the flags in args, in order; `--name value` consumes the next word for
    valued flags; a bare noArgs flag has the value None."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if a == "--":
            break
        if a.startswith("--") and len(a) > 2:
            name, eq, value = a[2:].partition("=")
            if not eq and name in valued:
                value = args[i + 1] if i + 1 < len(args) else None
                i += 1
            out.append((name, value if eq or name in valued else None))
        i += 1
    return out


# blade's os executor puts --uid=U first and then every flag the user gave, --uid included:
# an imposed uid arrives twice, with one value
SAME_TWICE_OK = ("uid",)


def refuse_repeats(args, valued):
    """A flag given twice is an error: silently taking the last would hide a mistake."""
    seen = {}
    for name, value in options(args, valued):
        seen.setdefault(name, []).append(value)
    twice = sorted(n for n, vs in seen.items() if len(vs) > 1
                   and not (n in SAME_TWICE_OK and len(set(vs)) == 1))
    if twice:
        raise BladeError(Code.PARAMETER_ILLEGAL, "illegal parameters: " + ", ".join(
            f"--{n} given {len(seen[n])} times" for n in twice) + "; give each flag once")


def parse_matchers(args, spec) -> dict:
    """{flag: raw value} from `--k=v` / `--k v` / `--k` words of a destroy by matchers."""
    valued = {f.name for f in spec.flags if not f.no_args} | {
        "uid", "timeout", "endpoint", "target", "kubeconfig", "kubectl-proxy", "token"}
    refuse_repeats(args, valued)
    out, i = {}, 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            raise BladeError(Code.COMMAND_ILLEGAL, f"unexpected argument {a!r}")
        name, eq, value = a[2:].partition("=")
        if not eq and name in valued:
            if i + 1 >= len(args):
                raise BladeError(Code.PARAMETER_LESS, f"less parameter: --{name} needs a value")
            value = args[i + 1]
            i += 1
        elif not eq:
            value = "true"
        out[name] = value
        i += 1
    return out


def destroy_by_matchers(target: str, action: str, args, store=None) -> dict:
    """Destroy every live (Success) experiment of target/action whose stored flags equal the
    given ones; the answer names them. A flag the action does not have is refused."""
    from .. import experiment
    from .. import state as st
    from ..registry import default_registry

    spec = default_registry().target(target).action(action)
    given = parse_matchers(args, spec)
    wanted = {}
    for name, raw in given.items():
        if name in PER_INVOCATION:
            continue
        flag = spec.flag(name)
        if flag is None:
            raise BladeError(Code.COMMAND_ILLEGAL, f"unknown flag --{name} for {target} "
                             f"{spec.name}")
        value = flag.convert(raw)
        if flag.no_args and not value:
            continue
        wanted[name] = list(value) if isinstance(value, tuple) else value
    store = store or st.StateStore()
    matching = [r for r in store.list(status=st.SUCCESS)
                if r.get("target") == target and r.get("action") == spec.name
                and all((r.get("flags") or {}).get(k) == v for k, v in wanted.items())]
    destroyed, failed = [], []
    for rec in matching:
        try:
            experiment.destroy(rec["uid"], store=store)
            destroyed.append(rec["uid"])
        except BladeError as e:
            failed.append((rec["uid"], e))
    shown = {k: v for k, v in wanted.items()}
    log.info("destroy %s %s by matchers %s: destroyed %s, failed %s", target, spec.name, shown,
             destroyed, [u for u, _ in failed])
    if failed:
        raise BladeError(failed[0][1].code, f"destroy by matchers {shown}: destroyed "
                         f"{destroyed or 'none'}; failed: " + "; ".join(
                             f"{u}: {e.message}" for u, e in failed))
    return {"target": target, "action": spec.name, "matchers": shown, "destroyed": destroyed,
            "message": (f"destroyed {len(destroyed)} experiment(s): " + ", ".join(destroyed))
            if destroyed else "no live experiment matches"}
