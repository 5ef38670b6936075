"""Multi-task training across heterogeneous datasets, on tiny fake data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import facefuse.train.mtl as mtl
from facefuse.cli import main
from facefuse.config import load_config
from facefuse.data.readers import find_datasets, read_dataset
from facefuse.data.table import SampleTable
from facefuse.models.margin import margin_loss
from facefuse.train.engine import Engine
from facefuse.train.mtl import MTLConfig, sampling_probabilities
from facefuse.train.weighting import WEIGHTINGS
from tests.paths import ROOT
from tests.training import write_config


def test_sampling_weights_set_dataset_shares(fake_root: Path) -> None:
    t = SampleTable.concat([read_dataset(n, loc).table for n, loc in find_datasets(fake_root)])
    rows = np.arange(len(t))
    p = sampling_probabilities(t, rows, {"utkface": 3.0, "fer2013": 1.0})
    share = {d: p[t.dataset == d].sum() for d in t.datasets()}
    assert share["utkface"] == pytest.approx(3 * share["fer2013"])
    assert share["celeba"] == pytest.approx(share["fer2013"])  # unlisted: weight 1
    assert sampling_probabilities(t, rows, {}) is None


def test_weighting_strategies_combine_losses() -> None:
    losses = {"age": torch.tensor(2.0), "gender": torch.tensor(1.0)}
    static = WEIGHTINGS.get("static")(["age", "gender"], {"age": 0.5})
    assert static.combine(losses).item() == pytest.approx(2.0)
    unc = WEIGHTINGS.get("uncertainty")(["age", "gender"])
    assert unc.combine(losses).item() == pytest.approx(3.0)  # s = 0: plain sum
    assert len(list(unc.parameters())) == 2
    dwa = WEIGHTINGS.get("dwa")(["age", "gender"], temperature=1.0)
    dwa.end_epoch({"age": 1.0, "gender": 1.0})
    dwa.end_epoch({"age": 2.0, "gender": 1.0})  # age got worse: more weight
    w = dwa.current()
    assert w["age"] > w["gender"] and w["age"] + w["gender"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="not trained"):
        WEIGHTINGS.get("static")(["age"], {"gender": 1.0})


def test_margin_losses_exceed_plain_softmax() -> None:
    logits = torch.tensor([[20.0, 5.0, 0.0], [3.0, 15.0, 1.0]])
    y = torch.tensor([0, 1])
    mask = torch.tensor([True, True])
    plain = torch.nn.functional.cross_entropy(logits, y)
    for kind in ("arcface", "cosface"):
        assert margin_loss(kind)(logits, y, mask) > plain
    assert margin_loss("arcface")(logits, y, torch.tensor([False, False])).item() == 0.0
    with pytest.raises(ValueError, match="margin type"):
        margin_loss("sphereface")


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="exactly one task"):
        MTLConfig(recipe="single")
    with pytest.raises(ValueError, match="pretrain_epochs"):
        MTLConfig(recipe="identity_then_tasks", pretrain_epochs=0)
    with pytest.raises(ValueError, match="unknown task 'beauty'"):
        MTLConfig(tasks=("beauty",))
    with pytest.raises(ValueError, match="not used"):
        MTLConfig(sampling={"imagenet": 1.0})
    with pytest.raises(ValueError, match="detector_crop names datasets not used"):
        MTLConfig(datasets=("utkface",), detector_crop=("celeba",))
    for bad in (-1, 1.5, "0", True):
        with pytest.raises(ValueError, match="split_seed must be a non-negative integer"):
            MTLConfig(split_seed=bad)
    assert MTLConfig(seed=4).splits_seed == 4 and MTLConfig(seed=4, split_seed=0).splits_seed == 0


@pytest.mark.parametrize(("fields", "says"), [
    ({"trunk": "resnet9000"}, "unknown trunk 'resnet9000'; valid: .*mobilenetv3_large_100"),
    ({"batch_size": 0}, "batch_size must be a whole number >= 1, got 0"),
    ({"batch_size": 32.5}, "batch_size must be a whole number >= 1"),
    ({"image_size": 8}, "image_size must be a whole number >= 16, got 8"),
    ({"epoch_size": 0}, "epoch_size must be a whole number >= 1 or null"),
    ({"limit_per_dataset": -3}, "limit_per_dataset must be a whole number >= 1 or null"),
    ({"workers": -1}, "workers must be a whole number >= 0 or null"),
    ({"identity_embedding": True}, "identity_embedding must be a whole number"),
    ({"task_weights": {"emtion": 2.0}}, r"task_weights for unknown tasks \['emtion'\]"),
    ({"task_weights": {"age": -1.0}}, "task_weights must be finite numbers >= 0"),
    ({"task_weights": {"age": float("nan")}}, "task_weights must be finite numbers >= 0"),
    ({"sampling": {"utkface": -0.5}}, "sampling must be finite numbers >= 0"),
    ({"sampling": {"utkface": "lots"}}, "sampling must be finite numbers >= 0"),
    ({"datasets": ("utkface", "lfw"), "sampling": {"utkface": 0, "lfw": 0}},
     "every dataset weight 0"),
    ({"grayscale": 1.5}, r"grayscale is a probability in \[0, 1\]"),
])
def test_config_refuses_values_a_run_would_trip_over(fields: dict, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        MTLConfig(**fields)


def test_config_takes_the_edge_values() -> None:
    cfg = MTLConfig(batch_size=1, image_size=16, epoch_size=None, workers=0, grayscale=0.0,
                    task_weights={"identity": 0.0}, datasets=("utkface", "lfw"),
                    sampling={"utkface": 0, "lfw": 1})
    assert cfg.batch_size == 1 and cfg.sampling == {"utkface": 0, "lfw": 1}


@pytest.mark.parametrize(("profile", "trunk"), [("efficientnet", "efficientnet_b0"),
                                                ("rexnet", "rexnet_100")])
def test_a_trunks_quick_profile_trains_that_trunk(profile: str, trunk: str) -> None:
    config = ROOT / "configs" / "mtl.yaml"
    assert load_config(MTLConfig, config, profile=profile).trunk == trunk
    assert load_config(MTLConfig, config, profile=f"{profile}_quick").trunk == trunk


@pytest.mark.parametrize("profile", ["shipped_cpu", "shipped_gpu"])
def test_shipped_profile_crops_like_the_analyzer(profile: str) -> None:
    root = ROOT / "configs"
    cfg = load_config(MTLConfig, root / "mtl.yaml", profile=profile)
    spec = cfg.cache_spec()
    assert set(spec.detector_crop) == {"utkface", "celeba"} and spec.size == cfg.image_size
    import inspect

    from facefuse.inference.analyzer import FaceAnalyzer
    from facefuse.inference.face_model import DEFAULT_CROP_MARGIN

    defaults = inspect.signature(FaceAnalyzer).parameters
    assert spec.detector == defaults["detector"].default
    assert spec.landmark_margin == DEFAULT_CROP_MARGIN  # what the analyzer uses by default
    assert defaults["margin"].default is None  # None: the model's crop_margin, else this
    assert MTLConfig().cache_spec().detector_crop == ()


def test_mixed_batches_train_every_task_and_report(fake_root: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, fake_root)
    assert main(["train", str(cfg), "--quiet"]) == 0
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    first = metrics["history"][0]
    assert set(first["loss"]) - {"steps"} == {"identity", "age", "gender", "race", "emotion",
                                              "attributes", "landmarks"}
    assert first["loss"]["steps"] == 6
    assert {"age", "gender", "emotion", "attributes", "landmarks"} <= set(metrics["test"])
    assert "lfw_verification_accuracy" in metrics["test"]["identity"]
    for name in ("final.safetensors", "final.json", "last.safetensors", "state.pt",
                 "config.yaml"):
        assert (run / name).is_file()
    # re-evaluating the finished run (as the model card does) gives the run's own figure:
    # the embedding is taken in eval mode, whatever mode a fresh trainer starts in
    again = mtl.MTLTrainer(load_config(mtl.MTLConfig, cfg))
    again.model.train()
    ident = metrics["test"]["identity"]
    redo = again.lfw_verification()
    assert redo["lfw_verification_accuracy"] == pytest.approx(ident["lfw_verification_accuracy"])
    assert redo["lfw_verification_threshold"] == pytest.approx(
        ident["lfw_verification_threshold"], abs=1e-5)


def test_evaluation_reads_only_rows_its_tasks_label_and_scores_them_as_all_rows_would(
        fake_root: Path, tmp_path: Path, monkeypatch) -> None:
    from facefuse.data.loader import CacheLoader
    from facefuse.train.loop import evaluate

    cfg = load_config(MTLConfig, write_config(tmp_path, fake_root, "tasks: [identity, age]\n"))
    trainer = mtl.MTLTrainer(cfg)
    table, seen = trainer.cache.table, []
    real_loader = CacheLoader

    def recording_loader(cache, rows, *args, **kwargs):
        seen.append(np.asarray(rows))
        return real_loader(cache, rows, *args, **kwargs)

    monkeypatch.setattr(mtl, "CacheLoader", recording_loader)
    for split in ("val", "test"):
        seen.clear()
        results = trainer.evaluate(split)
        everything = real_loader(trainer.cache, trainer.cache.rows(split), 512, shuffle=False,
                                 device=trainer.device, tasks=cfg.tasks,
                                 identities=trainer.identities)
        # the same figure (up to float rounding: the batches hold other rows)
        assert results["age"]["mae"] == pytest.approx(
            evaluate(trainer.model, everything, ["age"])["age"]["mae"], rel=1e-5)
        rows = seen[0]
        assert table.present("age")[rows].any()
        assert set(table.dataset[rows]) < set(table.dataset[trainer.cache.rows(split)])
        if split == "val":  # closed-set identity: the rows with an identity label are read
            assert set(rows) == {r for r in trainer.cache.rows(split)
                                 if table.present("identity")[r] or table.present("age")[r]}
        else:  # identity is scored by LFW verification, so only the age rows are read
            assert table.present("age")[rows].all()
            assert "lfw_verification_accuracy" in results["identity"]
    single = mtl.MTLTrainer(load_config(MTLConfig, write_config(
        tmp_path, fake_root, f"tasks: [landmarks]\nrecipe: single\noutput: {tmp_path / 'l'}\n")))
    seen.clear()
    assert set(single.evaluate("val")) == {"landmarks"}
    assert set(single.cache.table.dataset[seen[0]]) == {"300w"}


def test_interrupted_run_resumes_without_losing_epochs(fake_root: Path, tmp_path: Path,
                                                       monkeypatch, capsys) -> None:
    cfg = write_config(tmp_path, fake_root, "tasks: [age, gender, emotion]\n")
    real = Engine.train_epoch
    calls = []

    def crash_in_epoch_2(self, epoch):
        calls.append(epoch)
        if epoch == 2:
            raise KeyboardInterrupt
        return real(self, epoch)

    monkeypatch.setattr(Engine, "train_epoch", crash_in_epoch_2)
    assert main(["train", str(cfg), "--quiet"]) == 130  # Ctrl-C: one line, the shell's code
    monkeypatch.setattr(Engine, "train_epoch", lambda self, e: (calls.append(e),
                                                                 real(self, e))[1])
    # a state saved by a version before two fields existed (both at their defaults now)
    state_file = tmp_path / "run" / "state.pt"
    state = torch.load(state_file, weights_only=True)
    old = json.loads(state["config"])
    del old["teacher_weight"], old["optim"]["fused"]
    state["config"] = json.dumps(old, sort_keys=True)
    torch.save(state, state_file)
    calls.clear()
    assert main(["train", str(cfg), "--quiet"]) == 0
    assert calls == [2]  # epoch 1 came from the saved state
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    other = write_config(tmp_path, fake_root, "tasks: [age]\n")
    with pytest.raises(mtl.RunConflict, match="another config"):
        mtl.train_mtl(load_config(mtl.MTLConfig, other))
    capsys.readouterr()
    assert main(["train", str(other), "--quiet"]) == 2  # the command says it in one line
    assert "belongs to a run with another config" in capsys.readouterr().err


def test_one_training_at_a_time_in_a_run_folder(fake_root: Path, tmp_path: Path,
                                                 capsys) -> None:
    from facefuse.data.file_lock import exclusive_lock

    cfg = write_config(tmp_path, fake_root, "tasks: [age]\noptim: {epochs: 1}\n")
    (tmp_path / "run").mkdir()
    with exclusive_lock(tmp_path / "run" / ".training.lock"):  # another process trains there
        assert main(["train", str(cfg), "--quiet"]) == 2
        assert f"another process is training into {tmp_path / 'run'} now" \
            in capsys.readouterr().err
        assert not (tmp_path / "run" / "config.yaml").exists()  # nothing of it touched
    assert main(["train", str(cfg), "--quiet"]) == 0  # free again
    assert (tmp_path / "run" / "final.safetensors").is_file()


def test_ddp_two_cpu_processes_agree_and_rank0_writes(fake_root: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, fake_root, "tasks: [age, gender, attributes]\n")
    # this checkout's package, whichever one the interpreter has installed
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "facefuse.cli", "-v", "train", str(cfg), "--quiet"],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sums = dict(re.findall(r"rank (\d) of 2: parameter checksum (\S+)", proc.stderr))
    assert set(sums) == {"0", "1"} and sums["0"] == sums["1"]
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == sorted(
        [".training.lock", "config.yaml", "final.json", "final.safetensors", "last.json",
         "last.safetensors", "metrics.json", "state.pt"])  # the lock: rank 0's, for the run
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert history[0]["world_size"] == 2
    assert history[0]["loss"]["steps"] == 3  # 96 draws / 2 ranks / batch 16


def test_onnx_export_matches_pytorch(fake_root: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    from facefuse.models.onnx_export import onnx_parity

    cfg = write_config(tmp_path, fake_root, "tasks: [gender, age, landmarks]\n"
                                            "optim: {epochs: 1}\n")
    assert main(["train", str(cfg), "--quiet"]) == 0
    ckpt = tmp_path / "run" / "final"
    assert main(["export-onnx", str(ckpt), str(tmp_path / "m.onnx")]) == 0
    assert "max |onnxruntime - torch|" in capsys.readouterr().out
    diffs = onnx_parity(ckpt, tmp_path / "m.onnx", batch=3)
    assert set(diffs) == {"features", "embedding", "gender", "age", "landmarks"}
    assert max(diffs.values()) < 1e-4
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["onnx_outputs"] == ["features", "embedding", "gender", "age", "landmarks"]
    # the exported graph is a model the core runs as it is, with the checkpoint's results
    from facefuse.inference.face_model import FaceModel

    graph, torch_model = FaceModel.load(tmp_path / "m"), FaceModel.load(ckpt, backend="torch")
    assert (graph.backend, torch_model.backend) == ("onnxruntime", "torch")
    faces = [np.random.default_rng(i).integers(0, 255, (50, 50, 3), np.uint8) for i in range(2)]
    for a, b in zip(graph.predict(faces), torch_model.predict(faces), strict=True):
        assert a["gender"]["label"] == b["gender"]["label"]
        assert a["age"] == pytest.approx(b["age"], abs=0.01)
    assert main(["export-onnx", str(tmp_path / "missing"), str(tmp_path / "x.onnx")]) == 2
    # a tolerance the differences exceed fails, and says so
    assert main(["export-onnx", str(ckpt), str(tmp_path / "m.onnx"), "--tolerance",
                 "1e-12"]) == 1
    assert "parity check failed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export-onnx", str(ckpt), str(tmp_path / "m.onnx"), "--tolerance", "-1"])
    assert "--tolerance: must be above 0" in capsys.readouterr().err


def test_cache_in_memory_trains_the_same_model(fake_root: Path, tmp_path: Path,
                                               monkeypatch) -> None:
    weights = {}
    for setting in ("false", "true"):
        cfg = load_config(MTLConfig, write_config(tmp_path, fake_root, "tasks: [age, gender]\n"),
                          [f"cache_in_memory={setting}", f"output={tmp_path / setting}",
                           "optim.epochs=1"])
        trainer = mtl.MTLTrainer(cfg)
        assert isinstance(trainer.cache.images, np.memmap) == (setting == "false")
        trainer.run()
        weights[setting] = trainer.model.state_dict()
    for k, v in weights["false"].items():
        torch.testing.assert_close(weights["true"][k], v, rtol=0, atol=0)
    # None: in RAM when the images take at most a quarter of the memory
    cache = trainer.cache
    assert mtl.keep_in_memory(cache, None) and not mtl.keep_in_memory(cache, False)
    pages = max(1, 4 * cache.images.nbytes // 4096)
    monkeypatch.setattr(os, "sysconf", lambda name: 4096 if name == "SC_PAGE_SIZE"
                        else pages - 1)
    assert not mtl.keep_in_memory(cache, None) and mtl.keep_in_memory(cache, True)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_fused_optimizer_steps_like_the_unfused_one(optimizer: str) -> None:
    import copy

    from facefuse.train.loop import OptimConfig, make_optimizer

    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    fused_model, start = copy.deepcopy(plain), copy.deepcopy(plain)
    x, y = torch.randn(16, 6), torch.randn(16, 2)
    for fused, model in ((False, plain), (True, fused_model)):
        opt, _ = make_optimizer(model.parameters(), OptimConfig(optimizer=optimizer, lr=0.05,
                                                                fused=fused))
        assert bool(opt.param_groups[0].get("fused")) == fused
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    for a, b, s0 in zip(plain.parameters(), fused_model.parameters(), start.parameters(),
                        strict=True):
        assert (a - s0).abs().max() > 1e-3  # the steps moved the weights ...
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)  # ... the same way
