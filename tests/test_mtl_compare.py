from __future__ import annotations

import csv
import json
from pathlib import Path

from test_mtl import write_config

from facefuse.cli import main


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
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(f"""kind: mtl_compare
output: {tmp_path / 'report'}
base: {base}
base_profile: null
base_overrides: [split_seed=0]
trunks: [tiny_cnn]
seeds: [1, 2]
recipes: [joint]
tasks: [age]
""")
    assert main(["experiment", str(cfg), "--quiet"]) == 0
    report = tmp_path / "report"
    assert "on the splits of split seed 0" in (report / "report.md").read_text()
    for seed in (1, 2):
        meta = json.loads((report / "runs" / f"tiny_cnn-joint-seed{seed}" / "final.json")
                          .read_text())
        assert meta["split_seed"] == 0
    caches = {p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")}
    assert len(caches) == 1  # one set of splits, one cache
