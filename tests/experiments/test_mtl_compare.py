from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from facefuse.cli import main
from facefuse.config import load_config
from facefuse.experiments.mtl_compare import MTLCompareConfig, finished_run, run_mtl_compare
from facefuse.train.mtl import MTLConfig
from tests.training import write_config


def _compare_config(tmp_path: Path, base: Path, extra: str = "", seeds: str = "[0]",
                    recipes: str = "[single, joint]", tasks: str = "[age, emotion]") -> Path:
    """A comparison of ``tiny_cnn`` runs of ``base`` on one set of splits (split seed 0)."""
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(f"""kind: mtl_compare
output: {tmp_path / 'report'}
base: {base}
base_profile: null
base_overrides: [split_seed=0]
trunks: [tiny_cnn]
seeds: {seeds}
recipes: {recipes}
tasks: {tasks}
{extra}""")
    return cfg


def test_comparison_table_per_task_and_recipe(fake_root: Path, tmp_path: Path) -> None:
    # a base weight for one task must not break the other tasks' single-task runs
    base = write_config(tmp_path, fake_root, "tasks: [identity, age, gender]\n"
                                             "task_weights: {age: 2.0}\n")
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(f"""kind: mtl_compare
output: {tmp_path / 'report'}
base: {base}
base_profile: null
trunks: [tiny_cnn]
seeds: [0, 1]
tasks: [identity, age, gender]
pretrain_epochs: 1
""")
    assert main(["experiment", str(cfg), "--quiet"]) == 0
    report = tmp_path / "report"
    with (report / "comparison.csv").open() as f:
        rows = list(csv.DictReader(f))
    got = {(r["task"], r["recipe"]): r for r in rows}
    for task in ("identity", "age", "gender"):
        for recipe in ("single", "joint"):
            assert got[(task, recipe)]["seeds"] == "2", (task, recipe)
    assert got[("age", "identity_then_tasks")]["seeds"] == "2"
    assert got[("identity", "identity_then_tasks")]["seeds"] == "0"  # not comparable
    assert got[("age", "single")]["metric"] == "mae"
    text = (report / "report.md").read_text()
    assert "joint - single" in text and "identity_then_tasks - single" in text
    assert "Each seed also draws its own splits" in text
    runs = sorted(p.name for p in (report / "runs").iterdir())
    assert "tiny_cnn-single-gender-seed1" in runs and "tiny_cnn-joint-seed0" in runs


def test_a_split_seed_keeps_every_seed_on_the_same_splits(fake_root: Path,
                                                          tmp_path: Path) -> None:
    base = write_config(tmp_path, fake_root, "tasks: [age]\n")
    cfg = _compare_config(tmp_path, base, seeds="[1, 2]", recipes="[joint]", tasks="[age]")
    assert main(["experiment", str(cfg), "--quiet"]) == 0
    report = tmp_path / "report"
    assert "on the splits of split seed 0" in (report / "report.md").read_text()
    for seed in (1, 2):
        meta = json.loads((report / "runs" / f"tiny_cnn-joint-seed{seed}" / "final.json")
                          .read_text())
        assert meta["split_seed"] == 0
    caches = {p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")}
    assert len(caches) == 1  # one set of splits, one cache




def test_equal_exposure_gives_single_runs_the_joint_runs_draws_on_their_task(
        fake_root: Path, tmp_path: Path) -> None:
    # sampling (write_config): utkface 2, fer2013 1; only they carry age and emotion, so the
    # joint run's 96 draws an epoch fall 2/3 on age samples and 1/3 on emotion samples
    base = write_config(tmp_path, fake_root, "tasks: [age, emotion]\n")
    cfg = _compare_config(tmp_path, base, "single_budget: equal_exposure\n")
    assert main(["experiment", str(cfg), "--quiet"]) == 0
    report = tmp_path / "report"
    runs = report / "runs"
    sizes = {task: load_config(MTLConfig, runs / f"tiny_cnn-single-{task}-seed0" / "config.yaml"
                               ).epoch_size for task in ("age", "emotion")}
    assert sizes == {"age": 64, "emotion": 32}
    assert load_config(MTLConfig, runs / "tiny_cnn-joint-seed0" / "config.yaml").epoch_size == 96
    summary = json.loads((report / "summary.json").read_text())
    assert summary["joint_share_per_task"] == pytest.approx({"age": 2 / 3, "emotion": 1 / 3})
    assert "equal exposure" in (report / "report.md").read_text()


def test_equal_draws_is_the_default_budget(fake_root: Path, tmp_path: Path) -> None:
    base = write_config(tmp_path, fake_root, "tasks: [age, emotion]\n")
    cfg = _compare_config(tmp_path, base, recipes="[single]")
    assert main(["experiment", str(cfg), "--quiet"]) == 0
    run = tmp_path / "report" / "runs" / "tiny_cnn-single-emotion-seed0"
    assert load_config(MTLConfig, run / "config.yaml").epoch_size == 96
    assert "at equal draws" in (tmp_path / "report" / "report.md").read_text()


def test_a_rerun_reuses_finished_runs_and_retrains_changed_ones(fake_root: Path,
                                                                tmp_path: Path,
                                                                caplog) -> None:
    base = write_config(tmp_path, fake_root, "tasks: [age, emotion]\n")
    cfg = _compare_config(tmp_path, base)
    with caplog.at_level("INFO", logger="facefuse.experiments.mtl_compare"):
        assert main(["experiment", str(cfg), "--quiet"]) == 0
    # a long comparison says which run it is on
    assert [m for m in caplog.messages if m.startswith("run ")] == [
        "run 1 of 3: tiny_cnn-single-age-seed0", "run 2 of 3: tiny_cnn-single-emotion-seed0",
        "run 3 of 3: tiny_cnn-joint-seed0"]
    report = tmp_path / "report"
    first = (report / "comparison.csv").read_text()
    assert json.loads((report / "summary.json").read_text())["reused_runs"] == []
    assert main(["experiment", str(cfg), "--quiet"]) == 0
    summary = json.loads((report / "summary.json").read_text())
    assert sorted(summary["reused_runs"]) == ["tiny_cnn-joint-seed0",
                                              "tiny_cnn-single-age-seed0",
                                              "tiny_cnn-single-emotion-seed0"]
    assert summary["run_seconds"] == {}
    assert (report / "comparison.csv").read_text() == first
    assert "3 runs finished earlier, reused" in (report / "report.md").read_text()
    # an interrupted run (no metrics.json yet) is trained on, not reused
    (report / "runs" / "tiny_cnn-joint-seed0" / "metrics.json").unlink()
    assert main(["experiment", str(cfg), "--quiet"]) == 0
    summary = json.loads((report / "summary.json").read_text())
    assert "tiny_cnn-joint-seed0" not in summary["reused_runs"]
    assert list(summary["run_seconds"]) == ["tiny_cnn-joint-seed0"]
    # a run of another config in the same folder is not taken for this one
    run_cfg = load_config(MTLConfig, report / "runs" / "tiny_cnn-joint-seed0" / "config.yaml")
    assert finished_run(run_cfg)
    assert not finished_run(replace(run_cfg, seed=5))
    assert not finished_run(replace(run_cfg, optim=replace(run_cfg.optim, epochs=3)))
    # one finished by a version before a field existed (it is at its default now): reused
    state_file = report / "runs" / "tiny_cnn-joint-seed0" / "state.pt"
    state = torch.load(state_file, weights_only=True)
    older = json.loads(state["config"])
    del older["freeze"]
    torch.save({**state, "config": json.dumps(older, sort_keys=True)}, state_file)
    assert finished_run(run_cfg)
    assert not finished_run(replace(run_cfg, freeze=("trunk.stem",)))


def test_joint_weightings_add_a_joint_run_and_a_gain_column_per_strategy(
        fake_root: Path, tmp_path: Path) -> None:
    base = write_config(tmp_path, fake_root, "tasks: [age, emotion]\n")
    cfg = _compare_config(tmp_path, base, "joint_weightings: [uncertainty, dwa]\n")
    out = run_mtl_compare(load_config(MTLCompareConfig, cfg))
    with (out / "comparison.csv").open() as f:
        got = {(r["task"], r["recipe"]): r for r in csv.DictReader(f)}
    for task in ("age", "emotion"):
        for recipe in ("single", "joint", "joint_uncertainty", "joint_dwa"):
            assert got[(task, recipe)]["seeds"] == "1", (task, recipe)
    # each strategy's run trained with it, on the joint run's draws
    joint = load_config(MTLConfig, out / "runs" / "tiny_cnn-joint-seed0" / "config.yaml")
    for w in ("uncertainty", "dwa"):
        run = load_config(MTLConfig, out / "runs" / f"tiny_cnn-joint_{w}-seed0" / "config.yaml")
        assert run.weighting == w and replace(run, weighting=joint.weighting,
                                              output=joint.output) == joint
    history = json.loads((out / "runs" / "tiny_cnn-joint_uncertainty-seed0"
                          / "metrics.json").read_text())["history"]
    assert history[-1]["weights"] != history[0]["weights"]  # the weights were learned
    text = (out / "report.md").read_text()
    assert "joint_uncertainty - single" in text and "joint_dwa - single" in text
    assert "The joint column uses the base config's loss weighting (static)" in text
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["run_seconds"]) == {
        "tiny_cnn-single-age-seed0", "tiny_cnn-single-emotion-seed0", "tiny_cnn-joint-seed0",
        "tiny_cnn-joint_uncertainty-seed0", "tiny_cnn-joint_dwa-seed0"}


def test_bad_joint_weightings_are_refused(fake_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown joint_weightings.*valid: .*uncertainty"):
        MTLCompareConfig(joint_weightings=("gradnorm",))
    with pytest.raises(ValueError, match="repeats a strategy"):
        MTLCompareConfig(joint_weightings=("dwa", "dwa"))
    base = write_config(tmp_path, fake_root, "tasks: [age]\n")
    cfg = _compare_config(tmp_path, base, "joint_weightings: [static]\n")
    with pytest.raises(ValueError, match="the base config's own weighting"):
        run_mtl_compare(load_config(MTLCompareConfig, cfg))


def test_bad_budgets_are_refused(fake_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="single_budget.*equal_draws, equal_exposure"):
        MTLCompareConfig(single_budget="same")
    base = write_config(tmp_path, fake_root, "tasks: [age]\n").read_text()
    no_size = tmp_path / "nosize.yaml"
    no_size.write_text(base.replace("epoch_size: 96\n", ""))
    cfg = _compare_config(tmp_path, no_size, "single_budget: equal_exposure\n")
    with pytest.raises(ValueError, match="needs the base config's epoch_size"):
        run_mtl_compare(load_config(MTLCompareConfig, cfg))


@pytest.mark.parametrize(("fields", "says"), [
    ({"seeds": ()}, "seeds is empty: the comparison would train nothing"),
    ({"trunks": ()}, "trunks is empty"),
    ({"tasks": ()}, "tasks is empty"),
    ({"recipes": ()}, "recipes is empty"),
    ({"trunks": ("tiny_cnn", "resnet9000")}, r"unknown trunks \['resnet9000'\]; valid: .*tiny_cnn"),
])
def test_a_comparison_that_would_train_nothing_or_fail_late_is_refused(fields: dict,
                                                                        says: str) -> None:
    with pytest.raises(ValueError, match=says):
        MTLCompareConfig(**fields)


def test_experiment_command_reports_config_mistakes_in_one_line(fake_root: Path, tmp_path: Path,
                                                                capsys) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: mtl_compare\nseeds: [0\n")  # unclosed list
    no_base = _compare_config(tmp_path, tmp_path / "missing.yaml")
    for cfg, says in ((broken, "broken.yaml: not valid YAML"),
                      (no_base, "missing.yaml does not exist")):
        assert main(["experiment", str(cfg), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err
    assert not (tmp_path / "report" / "runs").exists()  # nothing trained
