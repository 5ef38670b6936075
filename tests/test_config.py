from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from facefuse.config import ConfigError, load_config, save_config, to_dict


@dataclass(frozen=True)
class Inner:
    lr: float = 0.1
    sizes: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    seeds: tuple[int, ...] = (0,)
    flag: bool = False
    maybe: int | None = None
    weights: dict[str, float] = field(default_factory=dict)
    inner: Inner = Inner()


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_yaml_profile_and_overrides(tmp_path: Path) -> None:
    p = write(tmp_path, "name: a\ninner: {lr: 0.5}\nprofiles:\n  quick: {inner: {sizes: [3]}}\n")
    cfg = load_config(Outer, p, ["seeds=[1, 2]", "inner.lr=2", "maybe=7", "weights.age=0.5"],
                      profile="quick")
    assert cfg == Outer("a", (1, 2), False, 7, {"age": 0.5}, Inner(2.0, (3,)))
    out = tmp_path / "resolved.yaml"
    save_config(cfg, out)
    assert load_config(Outer, out) == cfg
    assert to_dict(cfg)["inner"] == {"lr": 2.0, "sizes": [3]}


@pytest.mark.parametrize("text,override,message", [
    ("nmae: a\n", [], "unknown key(s) ['nmae']; valid:"),
    ("inner: {lr: fast}\n", [], "config.inner.lr: expected a number"),
    ("flag: 1\n", [], "config.flag: expected true or false"),
    ("seeds: 3\n", [], "config.seeds: expected a list"),
    ("", ["inner.depth=3"], "config.inner: unknown key(s) ['depth']"),
    ("", ["seeds"], "must look like key.sub=value"),
    ("- a\n- b\n", [], "top level must be a mapping"),
])
def test_bad_configs_name_the_key(tmp_path: Path, text: str, override: list, message: str
                                  ) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(Outer, write(tmp_path, text), override)
    assert message in str(exc.value)


def test_missing_file_and_profile(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match="profile 'fast' not in"):
        load_config(Outer, write(tmp_path, "name: a\n"), profile="fast")


def test_same_config_accepts_fields_added_since_at_their_defaults() -> None:
    from facefuse.config import same_config, to_dict
    from facefuse.train.loop import OptimConfig
    from facefuse.train.mtl import MTLConfig

    cfg = MTLConfig(tasks=("age", "gender"), optim=OptimConfig(epochs=3))
    saved = json.loads(json.dumps(to_dict(cfg)))  # tuples come back as lists
    assert same_config(saved, cfg)
    older = {k: v for k, v in saved.items() if k not in ("freeze", "init_from")}
    older["optim"] = {k: v for k, v in saved["optim"].items() if k != "fused"}
    assert same_config(older, cfg)  # recorded before these fields existed: the same run
    assert not same_config(older, replace(cfg, init_from="runs/x/final"))  # not the default
    assert not same_config(older, replace(cfg, optim=OptimConfig(epochs=3, fused=True)))
    assert not same_config({**saved, "seed": 1}, cfg)
    assert not same_config({**saved, "optim": {**saved["optim"], "lr": 0.1}}, cfg)
    assert not same_config({**saved, "retired_field": 1}, cfg)  # a field since removed
    assert not same_config(None, cfg) and not same_config([], cfg)


def test_a_file_extends_a_file_and_inherits_its_profiles(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "b.yaml").write_text(
        "name: base\nweights: {age: 1.0, race: 2.0}\ninner: {lr: 0.5, sizes: [1, 2, 3]}\n"
        "profiles:\n  quick: {seeds: [7]}\n  slow: {inner: {lr: 0.01}}\n")
    child = write(tmp_path, "extends: base/b.yaml\nweights: {age: 3.0}\ninner: {sizes: [4]}\n"
                            "profiles:\n  quick: {flag: true}\n")
    assert load_config(Outer, child) == Outer("base", (0,), False, None,
                                              {"age": 3.0, "race": 2.0}, Inner(0.5, (4,)))
    # a profile of the same name merges with the inherited one; the others come along
    assert load_config(Outer, child, profile="quick").seeds == (7,)
    assert load_config(Outer, child, profile="quick").flag is True
    assert load_config(Outer, child, profile="slow").inner == Inner(0.01, (4,))


def test_a_file_extends_a_profile_of_another_file(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("name: base\nprofiles:\n  quick: {seeds: [7]}\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: {file: b.yaml, profile: quick}\nflag: true\n")
    assert load_config(Outer, child) == Outer("base", (7,), True)
    with pytest.raises(ConfigError, match="profile 'quick' not in"):  # not inherited
        load_config(Outer, child, profile="quick")


def test_a_profile_extends_a_profile_and_states_only_its_change(tmp_path: Path) -> None:
    p = write(tmp_path, "name: top\nprofiles:\n"
                        "  a: {seeds: [1], inner: {lr: 0.2}, weights: {age: 1.0}}\n"
                        "  b: {extends: a, inner: {sizes: [9]}, weights: {race: 2.0}}\n"
                        "  c: {extends: {profile: b}, seeds: [3]}\n")
    assert load_config(Outer, p, profile="c") == Outer(
        "top", (3,), False, None, {"age": 1.0, "race": 2.0}, Inner(0.2, (9,)))


def test_an_empty_mapping_replaces_where_a_mapping_merges(tmp_path: Path) -> None:
    p = write(tmp_path, "weights: {age: 1.0}\nprofiles:\n  none: {weights: {}}\n")
    assert load_config(Outer, p).weights == {"age": 1.0}
    assert load_config(Outer, p, profile="none").weights == {}
    assert load_config(Outer, p, ["weights={}"]).weights == {}


@pytest.mark.parametrize(("files", "profile", "message"), [
    ({"c.yaml": "extends: gone.yaml\n"}, None, "c.yaml: extends gone.yaml, which does not exist"),
    ({"c.yaml": "extends: a.yaml\n", "a.yaml": "extends: c.yaml\n"}, None, "extends cycle"),
    ({"c.yaml": "extends: c.yaml\n"}, None, "extends cycle"),
    ({"c.yaml": "profiles:\n  a: {extends: b}\n  b: {extends: a}\n"}, "a",
     "profile extends cycle a -> b -> a"),
    ({"c.yaml": "profiles:\n  a: {extends: gone}\n"}, "a",
     "profile 'gone' (extended by profile 'a') not in"),
    ({"c.yaml": "profiles:\n  a: {extends: b.yaml}\n", "b.yaml": ""}, "a",
     "a profile extends another profile of its own file"),
    ({"c.yaml": "extends: quick\n"}, None, "a file extends another file"),
    ({"c.yaml": "extends: {file: b.yaml, profle: q}\n", "b.yaml": ""}, None,
     "extends has unknown key(s) ['profle']"),
    ({"c.yaml": "extends: 3\n"}, None, "extends must name a file"),
    ({"c.yaml": "profiles: [a]\n"}, None, "profiles must be a mapping"),
    ({"c.yaml": "profiles:\n  a: {extends: b}\n  b: {nmae: x}\n"}, "a",
     "unknown key(s) ['nmae']"),
])
def test_bad_inheritance_is_a_clear_error(tmp_path: Path, files: dict[str, str],
                                          profile: str | None, message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(Outer, tmp_path / "c.yaml", profile=profile)
    assert message in str(exc.value)


@pytest.mark.parametrize("value", ["{file: '', profile: q}", "{profile: 3}", "{}", "''"])
def test_an_extends_that_names_nothing_is_refused(tmp_path: Path, value: str) -> None:
    p = write(tmp_path, f"profiles:\n  q: {{}}\n  a: {{extends: {value}}}\n")
    with pytest.raises(ConfigError, match="extends must name a file"):
        load_config(Outer, p, profile="a")
