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
from safetensors.torch import load_file

from facefuse.cli import main
from facefuse.train.engine import Engine
from tests.fakes import write_300w, write_celeba
from tests.paths import ROOT
from tests.train.rank_guard import stop_after_one_step
from tests.training import tiny_config

RANK_GUARD = Path(__file__).resolve().with_name("rank_guard.py")


def li_zhu_config(tmp: Path, name: str, seeds: str = "[0, 1]") -> Path:
    """The tiny Li and Zhu protocol (``tests.training.tiny_config``), cut to two sources and
    targets, two CNN epochs."""
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


def torchrun(cfg: Path, guarded: Path, stop: str = "") -> subprocess.CompletedProcess:
    """``facefuse -v experiment CFG`` on two CPU ranks; rank 1 writing under ``guarded``
    fails the run; ``stop`` (RUN:EPOCH) stops it there after one step."""
    env = {"OMP_NUM_THREADS": "1", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "PYTHONPATH": str(ROOT / "src"),
           "FACEFUSE_GUARDED": str(guarded), "FACEFUSE_STOP_AT": stop}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(RANK_GUARD), "-v", "experiment", str(cfg), "--quiet"],
        capture_output=True, text=True, timeout=300, env=env)


def checksums(stderr: str) -> dict[tuple[str, str], dict[str, str]]:
    """(run, epoch) -> rank -> the parameter checksum it logged after that epoch."""
    found: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for rank, run, epoch, value in re.findall(
            r"rank (\d) of 2: (\S*) epoch (\d+) parameter checksum (\S+)", stderr):
        found[(run, epoch)][rank] = value
    return found


def ranks_agreed(proc: subprocess.CompletedProcess, out: Path) -> dict:
    """The checks every DDP run passes: it finished (rank 1 wrote nothing, or it would
    not have), both ranks logged the same weights after every epoch, the report is whole."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    sums = checksums(proc.stderr)
    for key, ranks in sums.items():
        assert set(ranks) == {"0", "1"} and ranks["0"] == ranks["1"], key
    assert (out / "report.md").is_file()
    assert not list(out.rglob("*.tmp"))
    assert not list(out.rglob("state.pt"))  # finished runs drop their state
    return sums


@pytest.fixture(scope="module")
def dmm_ddp(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("dmm_ddp")
    return tmp, torchrun(dmm_config(tmp, "whole"), tmp / "whole")


def test_li_zhu_ddp_ranks_agree_after_every_epoch_and_rank0_writes(tmp_path: Path) -> None:
    proc = torchrun(li_zhu_config(tmp_path, "ddp", seeds="[0]"), tmp_path / "ddp")
    runs = {run for run, _ in ranks_agreed(proc, tmp_path / "ddp")}
    # both CNNs and every head trained under DDP
    assert {"identity-seed0", "gender-seed0"} <= runs and len(runs) > 2


def test_dmm_ddp_ranks_agree_after_every_epoch_and_rank0_writes(dmm_ddp) -> None:
    tmp, proc = dmm_ddp
    sums = ranks_agreed(proc, tmp / "whole")
    assert set(sums) == {("full-seed0", e) for e in ("1", "2", "3")}
    history = json.loads((tmp / "whole" / "runs" / "full-seed0" / "result.json")
                         .read_text())["history"]
    assert [h["world_size"] for h in history] == [2, 2, 2]


def test_dmm_ddp_killed_mid_epoch_resumes_draw_for_draw(dmm_ddp) -> None:
    tmp, whole = dmm_ddp
    cfg = dmm_config(tmp, "cut")
    stopped = torchrun(cfg, tmp / "cut", stop="full-seed0:2")
    assert stopped.returncode != 0 and "facefuse: interrupted" in stopped.stderr
    resumed = torchrun(cfg, tmp / "cut")
    ranks_agreed(resumed, tmp / "cut")
    assert "full-seed0: resuming after epoch 1" in resumed.stderr
    after = checksums(resumed.stderr)
    assert set(after) == {("full-seed0", "2"), ("full-seed0", "3")}
    reference = checksums(whole.stderr)
    for key, ranks in after.items():  # each rank's loader and random state came back
        assert ranks == reference[key], key


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
            stop_after_one_step(self)
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
