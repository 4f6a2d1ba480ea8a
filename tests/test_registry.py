"""Spec registry: loading, validation of spec files, and flag validation for every flag type."""
import textwrap

import pytest

from blade_go.errors import BladeError, Code
from blade_go.registry import SpecError, load_registry, specs_dir

GOOD = textwrap.dedent("""\
    target: go
    shortDesc: s
    longDesc: l
    requireOneOf: [pid]
    flags:
      - {name: pid, desc: p, type: pid}
    actions:
      - action: return
        aliases: [ret]
        shortDesc: s
        longDesc: l
        example: e
        flags:
          - {name: func, desc: f, required: true}
    """)


def write(tmp_path, text, name="go.yaml"):
    (tmp_path / name).write_text(text)
    return tmp_path


@pytest.fixture(scope="module")
def ret():
    return load_registry().target("go").action("return")


def test_shipped_spec_loads_with_common_flags_declared_once():
    reg = load_registry()
    assert specs_dir().name == "specs"
    go = reg.target("go")
    action = go.action("ret")  # alias
    assert action.name == "return"
    names = [f.name for f in action.flags]
    assert names[:2] == ["func", "value"]
    for common in ("uid", "timeout", "debug", "endpoint", "pid", "process", "process-cmd"):
        assert names.count(common) == 1
    assert go.require_one_of == ("pid", "process", "process-cmd")
    assert "blade create go return --pid 4242" in action.example


def test_unknown_target_and_action_are_command_illegal():
    reg = load_registry()
    with pytest.raises(BladeError) as e:
        reg.target("java")
    assert e.value.code == Code.COMMAND_ILLEGAL and "java" in e.value.message
    with pytest.raises(BladeError) as e:
        reg.target("go").action("explode")
    assert e.value.code == Code.COMMAND_ILLEGAL and "return" in e.value.message


def test_missing_required_flag_names_it(ret):
    with pytest.raises(BladeError) as e:
        ret.validate({"pid": "1", "value": "1"})
    assert e.value.code == Code.PARAMETER_LESS and "--func" in e.value.message
    with pytest.raises(BladeError) as e:  # empty counts as missing
        ret.validate({"pid": "1", "value": "1", "func": ""})
    assert e.value.code == Code.PARAMETER_LESS and "--func" in e.value.message


def test_missing_targeting_names_the_group(ret):
    with pytest.raises(BladeError) as e:
        ret.validate({"func": "main.f", "value": "1"})
    assert e.value.code == Code.PARAMETER_LESS
    assert "pid|process|process-cmd" in e.value.message


@pytest.mark.parametrize("flag,raw,expected_word", [
    ("timeout", "abc", "seconds"),
    ("timeout", "-5", "seconds"),
    ("timeout", "31536001", "between 0 and 31536000"),
    ("pid", "0", "process id"),
    ("pid", "12,x", "process id"),
    ("endpoint", "ftp://example.com/x", "URL"),
    ("endpoint", "not a url", "URL"),
    ("uid", "bad uid!", "matching"),
    ("async", "maybe", "boolean"),
])
def test_illegal_values_name_flag_and_expected_type(ret, flag, raw, expected_word):
    with pytest.raises(BladeError) as e:
        ret.validate({"pid": "7", "func": "main.f", "value": "1", flag: raw})
    assert e.value.code == Code.PARAMETER_ILLEGAL
    assert f"--{flag}" in e.value.message and expected_word in e.value.message
    assert repr(raw) in e.value.message


def test_values_are_typed(ret):
    v = ret.validate({"pid": "7,8,7", "func": "main.f", "value": "1", "timeout": "5m",
                      "async": "true", "endpoint": "http://127.0.0.1:9/x", "uid": "abc-1"})
    assert v["pid"] == (7, 8) and v["timeout"] == 300 and v["async"] is True
    assert v["debug"] is False and v["process"] is None and v["uid"] == "abc-1"
    assert ret.validate({"pid": "1", "func": "f", "value": "v", "timeout": "90s"})["timeout"] == 90


def test_unknown_flag_is_command_illegal(ret):
    with pytest.raises(BladeError) as e:
        ret.validate({"pid": "1", "func": "f", "value": "v", "bogus": "1"})
    assert e.value.code == Code.COMMAND_ILLEGAL and "--bogus" in e.value.message


def test_int_bounds_and_defaults(tmp_path):
    text = GOOD.replace("{name: func, desc: f, required: true}",
                        "{name: func, desc: f, required: true}\n"
                        "      - {name: count, desc: c, type: int, min: 1, max: 10, default: 3}")
    action = load_registry(write(tmp_path, text)).target("go").action("return")
    assert action.validate({"pid": "1", "func": "f"})["count"] == 3
    assert action.validate({"pid": "1", "func": "f", "count": "10"})["count"] == 10
    for bad in ("0", "11", "2.5", "x"):
        with pytest.raises(BladeError) as e:
            action.validate({"pid": "1", "func": "f", "count": bad})
        assert e.value.code == Code.PARAMETER_ILLEGAL and "between 1 and 10" in e.value.message


def test_new_action_is_one_yaml_entry(tmp_path):
    text = GOOD + textwrap.indent(textwrap.dedent("""\
        - action: delay
          shortDesc: s
          longDesc: l
          example: e
          flags:
            - {name: time, desc: t, type: int, required: true, min: 0}
        """), "  ")
    go = load_registry(write(tmp_path, text)).target("go")
    assert list(go.actions) == ["return", "delay"]
    assert [f.name for f in go.action("delay").flags] == ["time", "pid"]


@pytest.mark.parametrize("mutate,where,problem", [
    (lambda t: t.replace("type: pid", "type: pidd"), "flags[0].type", "'pidd' is not one of"),
    (lambda t: t.replace("    shortDesc: s", "    shortDsc: s"),
     "actions[0]", "unknown field(s) shortDsc"),
    (lambda t: t.replace("    example: e\n", ""), "actions[0].example", "required"),
    (lambda t: t.replace("requireOneOf: [pid]", "requireOneOf: [pod]"), "requireOneOf", "'pod'"),
    (lambda t: t.replace("required: true", "required: yes-please"), "actions[0].flags[0].required",
     "expected bool"),
    (lambda t: t.replace("{name: func", "{name: pid"), "actions[0].flags",
     "already declared at target level: pid"),
    (lambda t: t.replace("aliases: [ret]", "aliases: [return]"), "actions[0]", "used twice"),
    (lambda t: t + "  - [not, a, mapping]\n", "actions[1]", "expected a mapping"),
    (lambda t: t.replace("actions:", "actions: {\n"), "whole file", "cannot be read as YAML"),
])
def test_broken_spec_names_file_and_field(tmp_path, mutate, where, problem):
    write(tmp_path, mutate(GOOD), "broken.yaml")
    with pytest.raises(SpecError) as e:
        load_registry(tmp_path)
    msg = e.value.message
    assert str(tmp_path / "broken.yaml") in msg and where in msg and problem in msg, msg


def test_duplicate_target_and_empty_dir(tmp_path):
    with pytest.raises(BladeError) as e:
        load_registry(tmp_path)
    assert e.value.code == Code.CHAOSBLADE_FILE_NOT_FOUND and str(tmp_path) in e.value.message
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, GOOD, "b.yaml")
    with pytest.raises(SpecError) as e:
        load_registry(tmp_path)
    assert "b.yaml" in e.value.message and "two files" in e.value.message


# ---- issue 7.9 ------------------------------------------------------------------------------
def test_unicode_digits_are_not_numbers_and_long_values_are_not_echoed():
    from blade_go.errors import BladeError as _BE
    from blade_go.registry import FlagSpec as _F
    for ftype, text in [("int", "١٢"), ("seconds", "٣٠"), ("seconds", "３m"), ("pid", "１"),
                        ("pid", "1,٢")]:
        with pytest.raises(_BE) as e:
            _F("x", "d", type=ftype).convert(text)
        assert e.value.code == 46000
    assert _F("x", "d", type="pid").convert("12,3") == (12, 3)
    with pytest.raises(_BE) as e:
        _F("func", "d").convert("f" * 100_000)
    assert len(e.value.message) < 500 and "100000 characters" in e.value.message
    with pytest.raises(_BE) as e:
        _F("n", "d", type="int").convert("9" * 5000)
    assert len(e.value.message) < 500


# ---- parsed-spec cache (issue 11: start-up time) ---------------------------------------------
def test_parsed_spec_cache_is_used_and_never_stale(tmp_path, monkeypatch):
    import sys

    import yaml
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    write(tmp_path, GOOD)
    first = load_registry(tmp_path)
    cached = list((tmp_path / "__pycache__").glob("go.yaml.*.json"))
    assert len(cached) == 1
    monkeypatch.setattr(yaml, "load", lambda *a, **k: pytest.fail("parsed the YAML again"))
    again = load_registry(tmp_path)
    a, b = again.target("go").action("return"), first.target("go").action("return")
    assert (a.aliases, a.long_desc, [f.name for f in a.flags]) == \
        (b.aliases, b.long_desc, [f.name for f in b.flags])
    monkeypatch.undo()
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    # The spec changes: its new text is read (the cache is named by the file's hash).
    write(tmp_path, GOOD.replace("aliases: [ret]", "aliases: [ret, rv]"))
    assert load_registry(tmp_path).target("go").action("return").aliases == ("ret", "rv")
    assert [p.name for p in (tmp_path / "__pycache__").glob("go.yaml.*.json")] != \
        [p.name for p in cached] and len(list((tmp_path / "__pycache__").iterdir())) == 1
    # A damaged cache is ignored; a broken spec is reported as before, cached or not.
    for p in (tmp_path / "__pycache__").iterdir():
        p.write_text("{not json")
    assert load_registry(tmp_path).target("go").action("return").aliases == ("ret", "rv")
    write(tmp_path, GOOD.replace("actions:", "actions: {\n"))
    with pytest.raises(SpecError) as e:
        load_registry(tmp_path)
    assert "cannot be read as YAML" in e.value.message


def test_no_cache_written_when_bytecode_writing_is_off(tmp_path, monkeypatch):
    import sys
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    write(tmp_path, GOOD)
    load_registry(tmp_path)
    assert not (tmp_path / "__pycache__").exists()
