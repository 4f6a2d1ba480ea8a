"""The spec registry: targets, actions and flags read from the YAML files under specs/.

Everything user-facing about an action (CLI options, validation, help, chaosblade-exec-go.yaml)
comes from here, so the YAML stays the single source of truth.
"""
from __future__ import annotations

import os
import re
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BladeError, Code

FLAG_TYPES = ("string", "int", "bool", "seconds", "pid", "url")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_UNITS = {"s": 1, "m": 60, "h": 3600}


class SpecError(BladeError):
    """A spec file that cannot be used; the message names the file and the field."""

    def __init__(self, path, where: str, problem: str):
        super().__init__(Code.RESULT_UNMARSHAL_FAILED, f"spec file {path}: {where}: {problem}")


def specs_dir() -> Path:
    """Where the spec YAML lives: $BLADE_GO_SPECS, the source checkout, or the installed copy."""
    env = os.environ.get("BLADE_GO_SPECS")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent / "specs"
    if checkout.is_dir():  # source checkout and `pip install -e .`
        return checkout
    # a regular install ships the files as data_files under <prefix>/share/blade-go/specs
    return Path(sys.prefix) / "share" / "blade-go" / "specs"


MAX_VALUE = 1 << 16  # no flag value blade-go can use is longer (a stub lives in a few KB)
SHOWN = 200  # characters of a value echoed in a message


def shown(text: str, limit: int = SHOWN) -> str:
    """repr of text for messages, cut to `limit` characters with the full length said."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"... ({len(text)} characters)"


@dataclass(frozen=True)
class FlagSpec:
    name: str
    desc: str
    type: str = "string"
    required: bool = False
    default: str | None = None
    min: int | None = None
    max: int | None = None
    pattern: str | None = None
    matcher: bool = False
    plugin: bool = True  # False: blade itself provides it; kept out of the plugin YAML

    @property
    def no_args(self) -> bool:
        return self.type == "bool"

    def expected(self) -> str:
        """What a valid value looks like, for error messages and help."""
        bounds = ""
        if self.min is not None and self.max is not None:
            bounds = f" between {self.min} and {self.max}"
        elif self.min is not None:
            bounds = f" >= {self.min}"
        elif self.max is not None:
            bounds = f" <= {self.max}"
        return {
            "string": "a string" + (f" matching {self.pattern}" if self.pattern else ""),
            "int": "an integer" + bounds,
            "bool": "a boolean (true or false)",
            "seconds": "whole seconds" + bounds + " (e.g. 60, 90s, 5m)",
            "pid": "a process id (positive integer) or a comma list of them",
            "url": "an http:// or https:// URL",
        }[self.type]

    def convert(self, raw):
        """The typed value of a raw command-line value; BladeError(PARAMETER_ILLEGAL) if invalid."""
        text = raw if isinstance(raw, str) else str(raw)
        if len(text) > MAX_VALUE:
            raise BladeError(Code.PARAMETER_ILLEGAL,
                             f"illegal value {shown(text)} for --{self.name}: longer than "
                             f"{MAX_VALUE} characters")
        value = _CONVERTERS[self.type](self, text.strip())
        if value is None:
            if self.type == "url":  # may carry credentials: never echoed in clear
                from .redact import redact_url
                text = redact_url(text)
            raise BladeError(Code.PARAMETER_ILLEGAL, f"illegal value {shown(text)} for "
                                                     f"--{self.name}: expected {self.expected()}")
        return value

    def _in_bounds(self, n: int) -> bool:
        return (self.min is None or n >= self.min) and (self.max is None or n <= self.max)


def _to_string(flag, text):
    if flag.pattern and not re.fullmatch(flag.pattern, text):
        return None
    return text


def _to_int(flag, text):
    if not re.fullmatch(r"[+-]?[0-9]{1,30}", text):  # \d would accept any Unicode digit
        return None
    n = int(text)
    return n if flag._in_bounds(n) else None


def _to_bool(flag, text):
    low = text.lower()
    return True if low in _TRUE else False if low in _FALSE else None


def _to_seconds(flag, text):
    m = re.fullmatch(r"([0-9]{1,30})[ \t]*([smh]?)", text.lower())
    if not m:
        return None
    n = int(m.group(1)) * _UNITS.get(m.group(2) or "s")
    return n if flag._in_bounds(n) else None


def _to_pids(flag, text):
    parts = [p.strip() for p in text.split(",")]
    if not parts or not all(re.fullmatch(r"[0-9]{1,30}", p) and int(p) > 0 for p in parts):
        return None
    return tuple(dict.fromkeys(int(p) for p in parts))


def _to_url(flag, text):
    u = urllib.parse.urlparse(text)
    return text if u.scheme in ("http", "https") and u.netloc else None


_CONVERTERS = {"string": _to_string, "int": _to_int, "bool": _to_bool,
               "seconds": _to_seconds, "pid": _to_pids, "url": _to_url}


@dataclass
class ActionSpec:
    name: str
    aliases: tuple
    short_desc: str
    long_desc: str
    example: str
    categories: tuple
    programs: tuple
    process_hang: bool
    own_flags: tuple  # declared on the action
    target: "TargetSpec" = field(repr=False, default=None)

    @property
    def flags(self) -> tuple:
        """The action's own flags followed by the target's common flags."""
        return self.own_flags + self.target.flags

    def flag(self, name: str) -> FlagSpec | None:
        return next((f for f in self.flags if f.name == name), None)

    def validate(self, raw: dict) -> dict:
        """Typed values for every flag of this action from {name: raw value or None}.

        Missing required flags -> ParameterLess naming the flag; bad values -> ParameterIllegal
        naming the flag and the expected type; unknown names -> CommandIllegal.
        """
        unknown = sorted(k for k in raw if self.flag(k) is None)
        if unknown:
            raise BladeError(Code.COMMAND_ILLEGAL, "unknown flag(s) for go "
                             f"{self.name}: " + ", ".join("--" + k for k in unknown))
        given = {k: v for k, v in raw.items() if v is not None and v != ""}
        for f in self.flags:
            if f.required and f.name not in given:
                raise BladeError(Code.PARAMETER_LESS, f"less parameter: --{f.name} is required "
                                 f"({f.desc})")
        group = self.target.require_one_of
        if group and not any(n in given for n in group):
            raise BladeError(Code.PARAMETER_LESS,
                             "less parameter: " + "|".join(group) + " (one of "
                             + ", ".join("--" + n for n in group) + " is required)")
        values = {}
        for f in self.flags:
            if f.name in given:
                values[f.name] = f.convert(given[f.name])
            elif f.default is not None:
                values[f.name] = f.convert(f.default)
            else:
                values[f.name] = False if f.no_args else None
        return values


@dataclass
class TargetSpec:
    name: str
    short_desc: str
    long_desc: str
    scope: str
    flags: tuple
    require_one_of: tuple
    actions: dict  # name -> ActionSpec, in file order

    def action(self, name: str) -> ActionSpec:
        for a in self.actions.values():
            if name == a.name or name in a.aliases:
                return a
        raise BladeError(Code.COMMAND_ILLEGAL, f"unknown action {name!r} for target {self.name}; "
                         "available: " + ", ".join(self.actions))


@dataclass
class Registry:
    targets: dict  # name -> TargetSpec
    files: tuple = ()

    def target(self, name: str) -> TargetSpec:
        if name not in self.targets:
            raise BladeError(Code.COMMAND_ILLEGAL, f"unknown target {name!r}; available: "
                             + ", ".join(self.targets))
        return self.targets[name]


# ---- loading and validation -------------------------------------------------------------

_FLAG_KEYS = {"name", "desc", "type", "required", "default", "min", "max", "pattern",
              "matcher", "plugin"}
_ACTION_KEYS = {"action", "aliases", "shortDesc", "longDesc", "example", "categories",
                "programs", "actionProcessHang", "flags"}
# sharedFlags: YAML anchors of flags several actions list (`- *signature`); not read itself
_TARGET_KEYS = {"target", "shortDesc", "longDesc", "scope", "flags", "requireOneOf", "actions",
                "sharedFlags"}


def _check_keys(path, where, data, allowed, required=()):
    if not isinstance(data, dict):
        raise SpecError(path, where, f"expected a mapping, got {type(data).__name__}")
    extra = sorted(set(data) - allowed)
    if extra:
        raise SpecError(path, where, f"unknown field(s) {', '.join(map(str, extra))}; "
                        f"allowed: {', '.join(sorted(allowed))}")
    for key in required:
        if data.get(key) in (None, ""):
            raise SpecError(path, f"{where}.{key}", "required field is missing or empty")


def _typed(path, where, value, kind, default=None):
    if value is None:
        return default
    ok = {"str": isinstance(value, str),
          "bool": isinstance(value, bool),
          "int": isinstance(value, int) and not isinstance(value, bool),
          "list": isinstance(value, list) and all(isinstance(v, str) for v in value)}[kind]
    if not ok:
        raise SpecError(path, where, f"expected {kind}, got {value!r}")
    return tuple(value) if kind == "list" else value


def _load_flag(path, where, data) -> FlagSpec:
    _check_keys(path, where, data, _FLAG_KEYS, ("name", "desc"))
    name = _typed(path, where + ".name", data["name"], "str")
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):  # _: blade's ns_target, ns_pid
        raise SpecError(path, where + ".name", f"{name!r} is not a lower-case flag name")
    ftype = data.get("type", "string")
    if ftype not in FLAG_TYPES:
        raise SpecError(path, where + ".type", f"{ftype!r} is not one of {', '.join(FLAG_TYPES)}")
    default = data.get("default")
    flag = FlagSpec(
        name=name, desc=_typed(path, where + ".desc", data["desc"], "str"), type=ftype,
        required=_typed(path, where + ".required", data.get("required"), "bool", False),
        default=None if default is None else str(default),
        min=_typed(path, where + ".min", data.get("min"), "int"),
        max=_typed(path, where + ".max", data.get("max"), "int"),
        pattern=_typed(path, where + ".pattern", data.get("pattern"), "str"),
        matcher=_typed(path, where + ".matcher", data.get("matcher"), "bool", False),
        plugin=_typed(path, where + ".plugin", data.get("plugin"), "bool", True))
    if flag.pattern:
        try:
            re.compile(flag.pattern)
        except re.error as e:
            raise SpecError(path, where + ".pattern", f"not a regular expression: {e}")
    if (flag.min is not None or flag.max is not None) and ftype not in ("int", "seconds"):
        raise SpecError(path, where, "min/max only apply to int and seconds flags")
    if flag.default is not None:
        try:
            flag.convert(flag.default)
        except BladeError as e:
            raise SpecError(path, where + ".default", e.message)
    return flag


def _load_flags(path, where, items) -> tuple:
    if items is None:
        return ()
    if not isinstance(items, list):
        raise SpecError(path, where, "expected a list of flags")
    flags = tuple(_load_flag(path, f"{where}[{i}]", d) for i, d in enumerate(items))
    names = [f.name for f in flags]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SpecError(path, where, f"flag(s) declared twice: {', '.join(dup)}")
    return flags


def _load_target(path, data) -> TargetSpec:
    _check_keys(path, "top level", data, _TARGET_KEYS,
                ("target", "shortDesc", "longDesc", "actions"))
    common = _load_flags(path, "flags", data.get("flags"))
    names = {f.name for f in common}
    group = _typed(path, "requireOneOf", data.get("requireOneOf"), "list", ())
    for n in group:
        if n not in names:
            raise SpecError(path, "requireOneOf", f"{n!r} is not a target-level flag")
    target = TargetSpec(
        name=_typed(path, "target", data["target"], "str"),
        short_desc=_typed(path, "shortDesc", data["shortDesc"], "str"),
        long_desc=_typed(path, "longDesc", data["longDesc"], "str"),
        scope=_typed(path, "scope", data.get("scope"), "str", "host"),
        flags=common, require_one_of=group, actions={})
    if not isinstance(data["actions"], list):
        raise SpecError(path, "actions", "expected a list of actions")
    seen = set()
    for i, a in enumerate(data["actions"]):
        where = f"actions[{i}]"
        _check_keys(path, where, a, _ACTION_KEYS,
                    ("action", "shortDesc", "longDesc", "example"))
        own = _load_flags(path, where + ".flags", a.get("flags"))
        clash = sorted({f.name for f in own} & names)
        if clash:
            raise SpecError(path, where + ".flags",
                            f"flag(s) already declared at target level: {', '.join(clash)}")
        action = ActionSpec(
            name=_typed(path, where + ".action", a["action"], "str"),
            aliases=_typed(path, where + ".aliases", a.get("aliases"), "list", ()),
            short_desc=_typed(path, where + ".shortDesc", a["shortDesc"], "str"),
            long_desc=_typed(path, where + ".longDesc", a["longDesc"], "str"),
            example=_typed(path, where + ".example", a["example"], "str"),
            categories=_typed(path, where + ".categories", a.get("categories"), "list", ()),
            programs=_typed(path, where + ".programs", a.get("programs"), "list", ()),
            process_hang=_typed(path, where + ".actionProcessHang",
                                a.get("actionProcessHang"), "bool", False),
            own_flags=own, target=target)
        for word in (action.name,) + action.aliases:
            if word in seen:
                raise SpecError(path, where, f"action name or alias {word!r} used twice")
            seen.add(word)
        target.actions[action.name] = action
    return target


def load_registry(dir=None) -> Registry:
    """Read and validate every *.yaml file in the specs directory (one target per file)."""
    root = Path(dir) if dir is not None else specs_dir()
    files = sorted(root.glob("*.yaml")) if root.is_dir() else []
    if not files:
        raise BladeError(Code.CHAOSBLADE_FILE_NOT_FOUND, f"no spec files (*.yaml) in {root}")
    targets = {}
    for path in files:
        target = _load_target(path, _read_spec(path))
        if target.name in targets:
            raise SpecError(path, "target", f"target {target.name!r} is defined in two files")
        targets[target.name] = target
    return Registry(targets=targets, files=tuple(files))


def _read_spec(path: Path):
    """A spec file's data. Parsing YAML costs every command ~20 ms (the yaml import and the
    parse); the parsed form is kept as JSON in __pycache__ beside the file, named by the hash of
    the file's bytes (so it cannot go stale), written like Python's own .pyc: when the
    directory is writable and bytecode writing is not turned off. The data is validated the
    same way whichever way it was read."""
    import hashlib
    import json
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SpecError(path, "whole file", f"cannot be read as YAML: {e}")
    cache = path.parent / "__pycache__" / f"{path.name}.{hashlib.sha256(raw).hexdigest()[:32]}.json"
    try:
        with open(cache, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        pass
    import yaml
    try:
        text = raw.decode()
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise SpecError(path, "whole file", f"cannot be read as YAML: {e}")
    if not sys.dont_write_bytecode:
        _write_cache(cache, data)
    return data


def _write_cache(cache: Path, data):
    import json
    try:
        text = json.dumps(data)
        if json.loads(text) != data:  # YAML types JSON cannot carry: parse the YAML each time
            return
        cache.parent.mkdir(exist_ok=True)
        for old in cache.parent.glob(cache.name.split(".", 1)[0] + ".*.json"):
            if old.name.rsplit(".", 2)[0] == cache.name.rsplit(".", 2)[0]:
                old.unlink(missing_ok=True)  # the spec's earlier versions
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, cache)
    except (OSError, TypeError, ValueError):
        pass  # read-only install, odd data: no cache, same result


_cached: Registry | None = None


def default_registry() -> Registry:
    """The registry from specs_dir(), loaded once per process."""
    global _cached
    if _cached is None:
        _cached = load_registry()
    return _cached
