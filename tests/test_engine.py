"""The one training loop (facefuse.train.engine) under the experiments: two CPU processes
under torchrun agree after every epoch and only rank 0 writes; a run killed mid-epoch and
started again continues from its last finished epoch, keeping every finished run, and ends
where an uninterrupted run ends. Tiny fake data throughout."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch
import yaml
from fakes import write_300w, write_celeba
from safetensors.torch import load_file
from test_li_zhu import tiny_config

from facefuse.cli import main
from facefuse.train.engine import Engine

TESTS = Path(__file__).resolve().parent


def li_zhu_config(tmp: Path, name: str, seeds: str = "[0, 1]") -> Path:
    """test_li_zhu's tiny protocol, cut to two sources and targets, two CNN epochs."""
    cfg = yaml.safe_load(tiny_config(tmp).read_text())  # writes the manifest too
    cfg.update(output=str(tmp / name), seeds=yaml.safe_load(seeds),
               sources=["identity", "gender"], targets=["identity", "gender"],
               fusion_methods=["concat"])
    cfg["extractor"]["optim"]["epochs"] = 2
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def dmm_config(tmp: Path, name: str, seeds: str = "[0]", variants: str = "[full]") -> Path:
    if not (tmp / "data").is_dir():
        write_celeba(tmp / "data", identities=12, per_identity=4)
        write_300w(tmp / "data", n=16)
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(f"""kind: dmm_cnn
output: {tmp / name}
cache_dir: {tmp / 'cache'}
data_root: {tmp / 'data'}
device: cpu
workers: 1
seeds: {seeds}
variants: {variants}
image_size: 16
model: {{trunk_options: {{widths: [4, 8], feature_dim: 16}}, objective_hidden: [8],
        subjective_hidden: [8, 8], landmark_hidden: [8]}}
train: {{optim: {{epochs: 3}}, batch_size: 16}}
""")
    return cfg


def torchrun(cfg: Path, guarded: Path) -> subprocess.CompletedProcess:
    env = {"OMP_NUM_THREADS": "1", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "PYTHONPATH": os.pathsep.join([str(TESTS.parent / "src"), str(TESTS)]),
           "FACEFUSE_GUARDED": str(guarded)}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(TESTS / "rank_guard.py"), "-v", "experiment", str(cfg), "--quiet"],
        capture_output=True, text=True, timeout=300, env=env)


def checksums(stderr: str) -> dict[tuple[str, str], dict[str, str]]:
    """(run, epoch) -> rank -> the parameter checksum it logged after that epoch."""
    found: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for rank, run, epoch, value in re.findall(
            r"rank (\d) of 2: (\S*) epoch (\d+) parameter checksum (\S+)", stderr):
        found[(run, epoch)][rank] = value
    return found


@pytest.mark.parametrize("experiment", ["li_zhu", "dmm_cnn"])
def test_ddp_ranks_agree_after_every_epoch_and_rank0_writes(experiment: str,
                                                           tmp_path: Path) -> None:
    write = li_zhu_config if experiment == "li_zhu" else dmm_config
    cfg = write(tmp_path, "ddp", seeds="[0]")
    proc = torchrun(cfg, tmp_path / "ddp")  # rank 1 writing there fails the run
    assert proc.returncode == 0, proc.stderr[-3000:]
    sums = checksums(proc.stderr)
    runs = {run for run, _ in sums}
    if experiment == "li_zhu":  # both CNNs and every head trained under DDP
        assert {"identity-seed0", "gender-seed0"} <= runs and len(runs) >= 2 + 4
    else:
        assert runs == {"full-seed0"} and {e for _, e in sums} == {"1", "2", "3"}
    for key, ranks in sums.items():
        assert set(ranks) == {"0", "1"} and ranks["0"] == ranks["1"], key
    assert (tmp_path / "ddp" / "report.md").is_file()
    assert not list((tmp_path / "ddp").rglob("*.tmp"))
    assert not list((tmp_path / "ddp").rglob("state.pt"))  # finished runs drop their state
    if experiment == "dmm_cnn":
        history = json.loads((tmp_path / "ddp" / "runs" / "full-seed0" / "result.json")
                             .read_text())["history"]
        assert [h["world_size"] for h in history] == [2, 2, 2]


def interrupt(monkeypatch, run: str, epoch: int) -> list[tuple[str, int]]:
    """Make ``run`` stop (Ctrl-C) after one step of ``epoch``, once; record every epoch
    trained as (run name, epoch)."""
    real = Engine.train_epoch
    calls: list[tuple[str, int]] = []
    armed = [True]

    def recording(self, e):
        calls.append((self.name, e))
        if armed[0] and self.name == run and e == epoch:
            armed[0] = False
            batches = self.recipe.batches

            def one_step_then_stop(n):
                for i, batch in enumerate(batches(n)):
                    if i == 1:
                        raise KeyboardInterrupt
                    yield batch

            self.recipe.batches = one_step_then_stop
        return real(self, e)

    monkeypatch.setattr(Engine, "train_epoch", recording)
    return calls


def test_li_zhu_killed_mid_epoch_resumes_and_ends_as_an_uninterrupted_run(
        tmp_path: Path, monkeypatch) -> None:
    assert main(["experiment", str(li_zhu_config(tmp_path, "whole")), "--quiet"]) == 0
    cfg = li_zhu_config(tmp_path, "cut")
    calls = interrupt(monkeypatch, "gender-seed1", 2)
    assert main(["experiment", str(cfg), "--quiet"]) == 130
    assert ("gender-seed1", 2) in calls and (tmp_path / "cut" / "models"
                                             / "gender-seed1.state" / "state.pt").is_file()
    calls.clear()
    assert main(["experiment", str(cfg), "--quiet"]) == 0
    # seed 0 (models and heads) and seed 1's identity CNN were kept; gender-seed1 went on
    # from its last finished epoch
    assert not [c for c in calls if "seed0" in c[0] or c[0] == "identity-seed1"]
    assert [c for c in calls if c[0] == "gender-seed1"] == [("gender-seed1", 2)]
    whole, cut = (load_file(tmp_path / f / "models" / "gender-seed1.safetensors")
                  for f in ("whole", "cut"))
    assert whole.keys() == cut.keys()
    for k, v in whole.items():  # the same weights to the last bit
        torch.testing.assert_close(cut[k], v, rtol=0, atol=0)
    for table in ("cross_task.csv", "fusion.csv"):
        assert (tmp_path / "cut" / table).read_text() == \
            (tmp_path / "whole" / table).read_text()


def test_dmm_killed_mid_epoch_resumes_and_ends_as_an_uninterrupted_run(
        tmp_path: Path, monkeypatch) -> None:
    variants = "[full, no_landmarks]"
    assert main(["experiment", str(dmm_config(tmp_path, "whole", "[0, 1]", variants)),
                 "--quiet"]) == 0
    cfg = dmm_config(tmp_path, "cut", "[0, 1]", variants)
    calls = interrupt(monkeypatch, "no_landmarks-seed1", 2)
    assert main(["experiment", str(cfg), "--quiet"]) == 130
    calls.clear()
    assert main(["experiment", str(cfg), "--quiet"]) == 0
    assert not [c for c in calls if c[0] != "no_landmarks-seed1"]  # finished runs kept
    assert calls == [("no_landmarks-seed1", 2), ("no_landmarks-seed1", 3)]
    whole, cut = (json.loads((tmp_path / f / "runs" / "no_landmarks-seed1" / "result.json")
                             .read_text())["history"] for f in ("whole", "cut"))
    assert [h["epoch"] for h in cut] == [1, 2, 3]
    for a, b in zip(whole, cut, strict=True):  # the same weights, losses and scores
        assert (a["loss"], a["weights"], a["val_attribute_loss"]) == \
            (b["loss"], b["weights"], b["val_attribute_loss"])
    assert (tmp_path / "cut" / "ablation.csv").read_text() == \
        (tmp_path / "whole" / "ablation.csv").read_text()
