"""`blade-go chaosblade install|uninstall --home DIR`: make an unmodified chaosblade release
offer `blade create go ...`, reversibly.

blade 1.8 reads only yaml/chaosblade-<kind>-spec-<its version>.yaml and runs os-spec
experiments as `bin/chaos_os create|destroy <target> <action> --k=v ...`. So install
  1. appends blade-go's targets to yaml/chaosblade-os-spec-<version>.yaml (original kept as
     <that file>.blade-go-orig);
  2. moves the real bin/chaos_os to bin/chaos_os.blade-go-orig and puts a small /bin/sh
     dispatcher at bin/chaos_os: target `go` -> blade-go (the Python interpreter and package
     directory recorded now, absolute), anything else -> exec of the real chaos_os with the same
     arguments (same pid, same bin/ directory, so chaos_os behaves as before);
  3. writes bin/chaos_os.blade-go.json (what was installed, for uninstall and upgrades);
  4. where the release has them, declares the same target in yaml/chaosblade-cri-spec-<version>
     .yaml (`blade create cri go ...`) and yaml/chaosblade-k8s-spec-<version>.yaml (`blade
     create k8s container-go|pod-go ...`), each action carrying the flags those paths add to
     the os targets (read from the file itself: container id/name/runtime/namespace/label
     selector and cri endpoint for cri, the pod and container selectors for k8s). blade's cri
     path runs such a target as `bin/chaos_os create go ... --channel=nsexec --ns_target=<the
     container's pid>` (with build/chaosblade/patches/exec-cri; stock blade 1.8 answers 55002),
     which the dispatcher hands to blade-go like any other `go` experiment.
Running install again re-merges from the kept original (idempotent). After a blade upgrade
overwrote bin/chaos_os and/or the spec, install takes the new files as the originals and puts
back the previous version's spec file. uninstall moves the originals back: both files are
byte for byte (same inode, even) what they were before install.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from ..errors import BladeError, Code

MARK = "blade-go chaos_os dispatcher"
SPEC_MARK = "# blade-go: target go appended by `blade-go chaosblade install`"
ORIG = ".blade-go-orig"
MANIFEST = "chaos_os.blade-go.json"
_SPEC_NAME = re.compile(r"^chaosblade-os-spec-(.+)\.yaml$")
_ANY_SPEC_NAME = re.compile(r"^chaosblade-(?:os|cri|k8s)-spec-(.+)\.yaml$")
# spec files of container paths that also get target go, and the scopes of their items whose
# flags (those every os target's actions share there) our actions take
CONTAINER_SPECS = {"cri": ("cri",), "k8s": ("container", "pod")}
# blade-go's own flags that make no sense on a container path's item: a ChaosBlade resource
# picks containers with container-ids/-names/-index, and the operator adds --container-id itself
DROPPED_FLAGS = {"cri": set(), "k8s": {"container-id"}}
# flags blade declares itself on every action; blade-go's plugin yaml leaves them out too
BLADE_OWNED_FLAGS = {"timeout", "async", "endpoint", "uid", "debug", "nohup"}

DISPATCHER = """#!/bin/sh
# {mark}: installed by `blade-go chaosblade install`; undo with
# `blade-go chaosblade uninstall --home <this release>`. Target `go` goes to blade-go (exit 0,
# one JSON Response on stdout, diagnostics in its log file); everything else goes, unchanged,
# to the real chaos_os kept beside this file.
if [ "$2" = go ]; then
  case "$1" in
    create|destroy)
      BLADE_GO_UNDER_BLADE=1 PYTHONPATH={pythonpath}"${{PYTHONPATH:+:$PYTHONPATH}}" \\
        exec {python} -S -m blade_go "$@" ;;
  esac
fi
exec "$(dirname -- "$0")/chaos_os{orig}" "$@"
"""


def _sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _write_atomic(path: Path, data: bytes, mode: int):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def is_dispatcher(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(200)
    except OSError:
        return False
    return head.startswith(b"#!/bin/sh\n") and MARK.encode() in head


class Release:
    def __init__(self, home):
        self.home = Path(home).resolve()
        self.bin = self.home / "bin"
        self.yaml = self.home / "yaml"
        self.chaos_os = self.bin / "chaos_os"
        self.real = self.bin / ("chaos_os" + ORIG)
        self.manifest = self.bin / MANIFEST
        if not (self.home / "blade").is_file() or not self.chaos_os.exists():
            raise BladeError(Code.CHAOSBLADE_FILE_NOT_FOUND, f"{self.home} is not a chaosblade "
                             "release: it needs blade and bin/chaos_os")

    def spec(self, version: str, kind: str = "os") -> Path:
        return self.yaml / f"chaosblade-{kind}-spec-{version}.yaml"

    def read_manifest(self) -> dict:
        try:
            return json.loads(self.manifest.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise BladeError(Code.RESULT_UNMARSHAL_FAILED, f"{self.manifest}: unreadable: {e}")

    def version(self, given=None) -> str:
        """blade's version: the one os spec file of the release, else `blade version`."""
        if given:
            return given
        found = sorted(m.group(1) for m in (_SPEC_NAME.match(p.name) for p in self.yaml.glob(
            "chaosblade-os-spec-*.yaml")) if m)
        if len(found) == 1:
            return found[0]
        try:  # several (an upgrade left the old one) or none: ask blade itself
            out = subprocess.run([str(self.home / "blade"), "version"], capture_output=True,
                                 text=True, timeout=60, cwd=self.home).stdout
        except (OSError, subprocess.TimeoutExpired) as e:
            raise BladeError(Code.OS_CMD_EXEC_FAILED, f"cannot run {self.home}/blade version: {e}")
        m = re.search(r"Version:\s*(\S+)", out)
        if not m:
            raise BladeError(Code.UNEXPECTED_STATUS, f"cannot tell blade's version from "
                             f"`blade version` ({out.strip()[:200]!r}) or yaml/ ({found})")
        return m.group(1)


def _our_items() -> str:
    from ..plugin_yaml import plugin_yaml_items
    return plugin_yaml_items()


def merge_spec(original: str, items_text: str) -> str:
    """The os spec with blade-go's items appended; the original text stays a byte-exact prefix
    when its `items:` list is the last block (as chaosblade's generator writes it)."""
    data = yaml.safe_load(original) or {}
    items = data.get("items") or []
    taken = sorted({i.get("target") for i in items} & {i["target"] for i in yaml.safe_load(
        "items:\n" + items_text)["items"]})
    if taken:
        raise BladeError(Code.PARAMETER_INVALID, "the release's os spec already defines "
                         f"target(s) {', '.join(taken)}: not merging blade-go over them")
    ours = yaml.safe_load("items:\n" + items_text)["items"]
    merged = original + ("" if original.endswith("\n") else "\n") + SPEC_MARK + "\n" + items_text
    check = yaml.safe_load(merged)
    if isinstance(check, dict) and check.get("items") == items + ours and \
            {k: v for k, v in check.items() if k != "items"} == \
            {k: v for k, v in data.items() if k != "items"}:
        return merged
    from ..plugin_yaml import dump_yaml  # unusual layout: re-dump the whole model
    return SPEC_MARK + "\n" + dump_yaml({**data, "items": items + ours})


def _shared_flags(items) -> list:
    """The flags (their models, in first-seen order) that every action of every item declares,
    blade's own left out: what a container path adds to each os target."""
    common, first = None, {}
    for item in items:
        for action in item.get("actions") or []:
            flags = (action.get("matchers") or []) + (action.get("flags") or [])
            for f in flags:
                first.setdefault(f["name"], f)
            names = {f["name"] for f in flags}
            common = names if common is None else common & names
    return [f for n, f in first.items() if n in (common or ()) and n not in BLADE_OWNED_FLAGS]


def container_items(kind: str, original: str, items_text: str, os_targets: set) -> str:
    """blade-go's items for the `kind` spec file (cri or k8s) whose text is `original`: one item
    per scope of CONTAINER_SPECS[kind], each action with that scope's shared flags (replacing
    blade-go's own of the same name, e.g. --container-id, which the cri path consumes itself).

    E.g. for blade 1.8's cri spec, `go return` gets --container-id, --container-name,
    --cri-endpoint, --container-runtime, --container-namespace, --container-label-selector (as
    cpu, disk, ... do there) and keeps --func, --value, --pid, --process, ...; scope `cri`.
    """
    import copy
    theirs = (yaml.safe_load(original) or {}).get("items") or []
    ours = yaml.safe_load("items:\n" + items_text)["items"]
    out = []
    for scope in CONTAINER_SPECS[kind]:
        shared = _shared_flags([i for i in theirs if i.get("scope") == scope
                                and i.get("target") in os_targets])
        if not shared:
            raise BladeError(Code.PARAMETER_INVALID, f"the release's {kind} spec has no os "
                             f"target of scope {scope} to take the container flags from")
        names = {f["name"] for f in shared} | DROPPED_FLAGS[kind]
        for item in copy.deepcopy(ours):
            item["scope"] = scope
            for action in item["actions"]:
                for key in ("matchers", "flags"):
                    kept = [f for f in action.get(key) or [] if f["name"] not in names]
                    if key == "flags":
                        kept += copy.deepcopy(shared)
                    if kept:
                        action[key] = kept
                    else:
                        action.pop(key, None)
            out.append(item)
    from ..plugin_yaml import dump_yaml
    return dump_yaml({"items": out})[len("items:\n"):]


def _original(spec: Path) -> bytes:
    """The file as blade's release has it: its kept backup once blade-go merged into it."""
    backup = Path(str(spec) + ORIG)
    current = spec.read_bytes()
    if backup.exists() and current.decode(errors="replace").find(SPEC_MARK) >= 0:
        return backup.read_bytes()
    return current  # first install, or an upgrade rewrote the file


def _merge_file(spec: Path, items_for) -> bool:
    """Merge items_for(original text) into spec, always from the original (kept beside it as
    <spec>.blade-go-orig); True when the file changed."""
    backup = Path(str(spec) + ORIG)
    current = spec.read_bytes()
    original = _original(spec)
    if not (backup.exists() and original == backup.read_bytes() and current != original):
        _write_atomic(backup, original, spec.stat().st_mode & 0o7777)
        os.utime(backup, ns=(spec.stat().st_atime_ns, spec.stat().st_mtime_ns))
    merged = merge_spec(original.decode(), items_for(original.decode())).encode()
    if merged != current:
        _write_atomic(spec, merged, spec.stat().st_mode & 0o7777)
        return True
    return False


def _dispatcher_text() -> str:
    # sys.executable as is, not its realpath: a virtualenv's python is a symlink whose location
    # is what makes it the venv's
    pkg_parent = str(Path(__file__).resolve().parents[2])
    return DISPATCHER.format(mark=MARK, python=shlex.quote(os.path.abspath(sys.executable)),
                             pythonpath=shlex.quote(pkg_parent), orig=ORIG)


def install(home, version=None, via="os") -> dict:
    if via == "cplus":
        from . import cplus
        return cplus.install(home, version)
    if via != "os":
        raise BladeError(Code.PARAMETER_ILLEGAL, f"illegal value {via!r} for --via: expected "
                         "os or cplus")
    rel = Release(home)
    from . import cplus
    if cplus.installed(rel):
        raise BladeError(Code.PARAMETER_INVALID, "blade-go is installed as the cplus agent in "
                         f"{rel.home}: uninstall it first (blade cannot have two go targets)")
    version = rel.version(version)
    spec = rel.spec(version)
    if not spec.is_file():
        raise BladeError(Code.CHAOSBLADE_FILE_NOT_FOUND, f"{spec} not found: blade {version} "
                         "reads its os experiments from that file")
    manifest = rel.read_manifest()
    changed = []
    # a previous install for another blade version (an upgrade): put its spec file back
    old = manifest.get("version")
    if old and old != version:
        changed += _restore_spec(rel, old)
    items = _our_items()
    # the container paths' spec files, where the release has them: checked before anything
    # is written, so a release whose files cannot take target go is left as it was
    os_targets = {i.get("target") for i in (yaml.safe_load(_original(spec)) or {}).get(
        "items") or []}
    container_specs = [rel.spec(version, kind) for kind in CONTAINER_SPECS
                       if rel.spec(version, kind).is_file()]
    for path in container_specs:
        merge_spec(_original(path).decode(), container_items(
            path.name.split("-")[1], _original(path).decode(), items, os_targets))
    # the specs: always merged from the original, never from a merged file
    if _merge_file(spec, lambda original: items):
        changed.append(str(spec))
    merged = spec.read_bytes()
    for path in container_specs:
        if _merge_file(path, lambda original, kind=path.name.split("-")[1]: container_items(
                kind, original, items, os_targets)):
            changed.append(str(path))
    container_specs = [str(p) for p in container_specs]
    # the dispatcher: the real chaos_os moves aside (renamed, so it stays the same file)
    if not is_dispatcher(rel.chaos_os):
        os.replace(rel.chaos_os, rel.real)
        changed.append(str(rel.real))
    elif not rel.real.exists():
        raise BladeError(Code.CHAOSBLADE_FILE_NOT_FOUND, f"{rel.chaos_os} is blade-go's "
                         f"dispatcher but the real chaos_os ({rel.real}) is missing")
    text = _dispatcher_text().encode()
    if not rel.chaos_os.exists() or rel.chaos_os.read_bytes() != text:
        _write_atomic(rel.chaos_os, text, 0o755)
        changed.append(str(rel.chaos_os))
    info = {"version": version, "spec": str(spec), "spec_sha256": hashlib.sha256(
        merged).hexdigest(), "container_specs": container_specs,
        "dispatcher": str(rel.chaos_os), "real_chaos_os": str(rel.real),
        "python": os.path.abspath(sys.executable),
        "pythonpath": str(Path(__file__).resolve().parents[2])}
    if {k: v for k, v in manifest.items()} != info:
        _write_atomic(rel.manifest, (json.dumps(info, indent=1) + "\n").encode(), 0o644)
    return {**info, "home": str(rel.home), "changed": changed,
            "message": f"blade {version} at {rel.home} now offers `blade create go ...`" + (
                " and `blade create cri go ...` (that one runs only with blade built against "
                "chaosblade-exec-cri with blade-go's patches, build/chaosblade/UPSTREAM.md: "
                "stock blade 1.8 answers 55002)" if container_specs else "")}


def _restore_spec(rel: Release, version: str) -> list:
    restored = []
    for kind in ("os", *CONTAINER_SPECS):
        spec = rel.spec(version, kind)
        backup = Path(str(spec) + ORIG)
        if not backup.exists():
            continue
        try:
            ours = SPEC_MARK in spec.read_text(errors="replace")
        except FileNotFoundError:
            ours = False
        if ours:
            os.replace(backup, spec)
        else:  # blade rewrote the file since: the backup is stale
            backup.unlink()
        restored.append(str(spec))
    return restored


def uninstall(home) -> dict:
    rel = Release(home)
    manifest = rel.read_manifest()
    changed = []
    from . import cplus
    if cplus.installed(rel):
        changed += cplus.uninstall(rel)
        manifest = manifest or {"via": "cplus"}
    if is_dispatcher(rel.chaos_os):
        if not rel.real.exists():
            raise BladeError(Code.CHAOSBLADE_FILE_NOT_FOUND, f"cannot uninstall: the real "
                             f"chaos_os {rel.real} is missing")
        os.replace(rel.real, rel.chaos_os)
        changed.append(str(rel.chaos_os))
    elif rel.real.exists():  # an upgrade replaced the dispatcher: the kept binary is stale
        rel.real.unlink()
    versions = {manifest.get("version")} | {m.group(1) for m in (
        _ANY_SPEC_NAME.match(p.name[:-len(ORIG)]) for p in rel.yaml.glob("*" + ORIG)) if m}
    for v in sorted(x for x in versions if x):
        changed += _restore_spec(rel, v)
    if rel.manifest.exists():
        rel.manifest.unlink()
    return {"home": str(rel.home), "changed": changed,
            "message": ("blade-go removed from " if changed or manifest else
                        "blade-go was not installed in ") + str(rel.home)}
