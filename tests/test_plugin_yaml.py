"""chaosblade-exec-go.yaml: generated from specs/, in chaosblade's plugin model, and current."""
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from blade_go.plugin_yaml import render_plugin_yaml
from blade_go.registry import load_registry

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "chaosblade-exec-go.yaml"

ACTION_KEYS = ["action", "aliases", "shortDesc", "longDesc", "matchers", "flags", "example",
               "programs", "categories", "actionProcessHang"]
FLAG_KEYS = ["name", "desc", "noArgs", "required", "requiredWhenDestroyed", "default"]


def test_committed_yaml_is_current():
    generated = render_plugin_yaml(load_registry(REPO / "specs"))
    assert COMMITTED.read_text() == generated, \
        "chaosblade-exec-go.yaml is stale: run python build/gen_plugin_yaml.py"
    check = subprocess.run([sys.executable, str(REPO / "build/gen_plugin_yaml.py"), "--check"])
    assert check.returncode == 0


def test_blade_go_spec_prints_the_same_text():
    out = subprocess.run([sys.executable, "-m", "blade_go", "spec"], capture_output=True,
                         text=True, cwd=REPO)
    assert out.returncode == 0 and out.stdout == COMMITTED.read_text()


def test_plugin_model_shape():
    text = COMMITTED.read_text()
    doc = yaml.safe_load(text)
    assert list(doc) == ["version", "kind", "items"]
    assert doc["version"] == "v1" and doc["kind"] == "plugin"
    [target] = doc["items"]
    assert list(target) == ["target", "shortDesc", "longDesc", "actions", "scope"]
    assert target["target"] == "go" and target["scope"] == "host"
    ret = next(a for a in target["actions"] if a["action"] == "return")
    assert list(ret) == [k for k in ACTION_KEYS if k in ret]
    assert "aliases: [ret]" in text  # flow list, as chaosblade writes it
    assert [m["name"] for m in ret["matchers"]] == ["func"]
    names = [f["name"] for f in ret["flags"]]
    # target-level flags copied into the action; the flags blade 1.8 gives every experiment
    # itself (create's --uid, -a/--async, -e/--endpoint, -n/--nohup, root -d/--debug, the
    # action's --timeout) and those only its cri path passes are not redeclared: a second
    # declaration would shadow blade's short forms
    for n in ("value", "pid", "process", "process-cmd", "container-id"):
        assert names.count(n) == 1
    for n in ("uid", "debug", "timeout", "async", "endpoint", "nohup", "channel", "ns_target",
              "ns_pid", "ns_mnt"):
        assert n not in names
    for f in ret["flags"] + ret["matchers"]:
        assert list(f) == [k for k in FLAG_KEYS if k in f]
    assert ret["categories"] == ["application_go"] and "programs" not in ret
    assert ret["actionProcessHang"] is False
    # the examples show up in `blade create go return -h`
    assert "blade create go return --pid 4242" in ret["example"]
    assert "blade-go" not in ret["example"]


def test_omission_rules_and_nothing_appended(tmp_path):
    (tmp_path / "go.yaml").write_text(textwrap.dedent("""\
        target: go
        shortDesc: s
        longDesc: l
        actions:
          - action: bare
            shortDesc: s
            longDesc: l
            example: e
          - action: full
            aliases: [f]
            shortDesc: s
            longDesc: l
            example: e
            programs: [p]
            flags:
              - {name: n, desc: d, type: int, default: 3}
        """))
    doc = yaml.safe_load(render_plugin_yaml(load_registry(tmp_path)))
    bare, full = doc["items"][0]["actions"]
    assert list(bare) == ["action", "shortDesc", "longDesc", "example", "actionProcessHang"]
    assert bare["example"] == "e" and bare["actionProcessHang"] is False
    assert full["programs"] == ["p"] and full["aliases"] == ["f"]
    assert full["flags"][0] == {"name": "n", "desc": "d", "noArgs": False, "required": False,
                                "requiredWhenDestroyed": False, "default": "3"}
    assert len(full["flags"]) == 1  # nothing appended: blade adds --timeout itself
