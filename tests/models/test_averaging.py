"""Weight averaging of checkpoints: the mean itself, what the result's metadata carries, every
refusal, ``facefuse model average``, and the scan that chooses the mixing share."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import facefuse.train.mtl as mtl
from facefuse.cli import main
from facefuse.config import load_config
from facefuse.data.loader import CacheLoader
from facefuse.lifecycle.average import scan_mixing_shares
from facefuse.models.averaging import average_weights
from facefuse.models.checkpoint import load_checkpoint, save_checkpoint
from facefuse.models.multitask import HeadSpec
from facefuse.train.loop import predict, score
from tests.training import LABELS, age_only_run, tiny_checkpoint

CALIBRATION = {"age": {"kind": "monotone", "x": [10.0, 50.0], "y": [12.0, 48.0]}}


def test_weighted_mean_of_every_float_tensor(tmp_path: Path) -> None:
    a = tiny_checkpoint(tmp_path / "a", 0, calibration=CALIBRATION, trained_from="run_a")
    b = tiny_checkpoint(tmp_path / "b", 1)
    out = average_weights([a, b], [1.0, 3.0])
    sa, sb = load_checkpoint(a).model.state_dict(), load_checkpoint(b).model.state_dict()
    averaged = out.model.state_dict()
    floats = [k for k, v in sa.items() if v.is_floating_point()]
    assert any("running_mean" in k for k in floats)  # batch-norm statistics are averaged too
    assert sum(not torch.equal(sa[k], sb[k]) for k in floats) > len(floats) // 2
    for name in floats:
        torch.testing.assert_close(averaged[name], 0.25 * sa[name] + 0.75 * sb[name])
    for name in (k for k, v in sa.items() if not v.is_floating_point()):
        assert torch.equal(averaged[name], sa[name])  # step counters come from the first
    assert "calibration" not in out.meta  # fitted to another model's outputs
    assert out.meta["trained_from"] == "run_a"
    assert out.meta["averaged_from"] == [{"checkpoint": str(a), "weight": 0.25},
                                         {"checkpoint": str(b), "weight": 0.75}]


def test_average_predicts_between_and_round_trips(tmp_path: Path) -> None:
    # the same model twice
    a, b = tiny_checkpoint(tmp_path / "a", 0), tiny_checkpoint(tmp_path / "b", 0)
    out = average_weights([a, b])
    save_checkpoint(out.model, tmp_path / "mean", **out.meta)
    again = load_checkpoint(tmp_path / "mean")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again.model(x)["age"], load_checkpoint(a).model(x)["age"])
    assert again.meta["tasks"] == LABELS


@pytest.mark.parametrize("weights, message", [
    ([1.0], "1 weights for 2 checkpoints"),
    ([1.0, 0.0], "positive"),
    ([1.0, -1.0], "positive"),
    ([1.0, math.nan], "positive"),
])
def test_bad_weights_are_refused(tmp_path: Path, weights: list[float], message: str) -> None:
    a, b = tiny_checkpoint(tmp_path / "a", 0), tiny_checkpoint(tmp_path / "b", 1)
    with pytest.raises(ValueError, match=message):
        average_weights([a, b], weights)


def test_one_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least two"):
        average_weights([tiny_checkpoint(tmp_path / "a", 0)])


def test_different_architectures_or_labels_are_refused(tmp_path: Path) -> None:
    a = tiny_checkpoint(tmp_path / "a", 0)
    wider = tiny_checkpoint(tmp_path / "w", 1,
                            heads={"age": HeadSpec(1), "gender": HeadSpec(2, (8,))})
    with pytest.raises(ValueError, match="'spec'"):
        average_weights([a, wider])
    relabelled = tiny_checkpoint(tmp_path / "r", 1, tasks={"age": [], "gender": ["female", "male"]})
    with pytest.raises(ValueError, match="'tasks'"):
        average_weights([a, relabelled])
    resized = tiny_checkpoint(tmp_path / "s", 1, input_size=48)
    with pytest.raises(ValueError, match="'input_size'"):
        average_weights([a, resized])


def test_checkpoints_from_other_splits_are_refused(tmp_path: Path) -> None:
    seed0 = tiny_checkpoint(tmp_path / "a", 0, split_seed=0)
    seed1 = tiny_checkpoint(tmp_path / "b", 1, split_seed=1)
    with pytest.raises(ValueError, match="splits of seed 1.*seed 0"):
        average_weights([seed0, seed1])
    older = tiny_checkpoint(tmp_path / "c", 2)  # from before checkpoints recorded their split seed
    assert average_weights([seed0, older]).meta["split_seed"] == 0
    same_split = tiny_checkpoint(tmp_path / "d", 3, split_seed=0)
    assert average_weights([seed0, same_split]).meta["split_seed"] == 0


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        average_weights([tiny_checkpoint(tmp_path / "a", 0), tmp_path / "nothing"])


def test_command_writes_once_and_keeps_an_existing_output(tmp_path: Path, capsys) -> None:
    a, b = tiny_checkpoint(tmp_path / "a", 0), tiny_checkpoint(tmp_path / "b", 1)
    out = tmp_path / "soup" / "final"
    assert main(["model", "average", str(a), str(b), "--out", str(out)]) == 0
    assert "x 0.500" in capsys.readouterr().out
    first = out.with_suffix(".safetensors").read_bytes()
    assert main(["model", "average", str(a), str(b), "--out", str(out),
                 "--weights", "1", "3"]) == 2
    assert "exists; force (--force) overwrites it" in capsys.readouterr().err
    assert out.with_suffix(".safetensors").read_bytes() == first  # nothing overwritten
    assert main(["model", "average", str(a), str(b), "--out", str(out), "--weights", "1", "3",
                 "--force"]) == 0
    assert load_checkpoint(out).meta["averaged_from"][1]["weight"] == 0.75
    assert sorted(f.name for f in out.parent.iterdir()) == ["final.json", "final.safetensors"]


def test_command_errors_are_one_line(tmp_path: Path, capsys) -> None:
    a = tiny_checkpoint(tmp_path / "a", 0)
    assert main(["model", "average", str(a), str(tmp_path / "gone"), "--out",
                 str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("facefuse: checkpoint file ") and "does not" in err
    with pytest.raises(SystemExit):  # a weight that is not positive is a usage error
        main(["model", "average", str(a), str(a), "--out", str(tmp_path / "o"),
              "--weights", "1", "0"])
    assert "--weights: must be above 0" in capsys.readouterr().err
    assert main(["model", "average", str(a), str(a), "--out", str(tmp_path / "o"),
                 "--weights", "1"]) == 2
    assert "1 weights for 2 checkpoints" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_soup_scan_scores_the_sources_at_its_ends_and_the_mean_between(tmp_path: Path) -> None:
    cfg = age_only_run(tmp_path, 200)
    cache, _ = mtl.training_cache(load_config(mtl.MTLConfig, cfg))
    a = tmp_path / "run" / "final"
    start = load_checkpoint(a)
    torch.manual_seed(0)
    with torch.no_grad():  # B: A moved a little, as a fine-tune would
        for p in start.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_checkpoint(start.model, tmp_path / "b",
                    **{k: v for k, v in start.meta.items() if k not in ("format", "spec")})
    b = tmp_path / "b"

    def own_mae(path: Path) -> float:
        loader = CacheLoader(cache, cache.rows("val"), 256, shuffle=False, tasks=["age"])
        p = predict(load_checkpoint(path).model, loader, ["age"])["age"]
        return score("age", p["pred"], p["target"])["mae"]

    rows = scan_mixing_shares(a, b, cache, ["age"], [0, 0.5, 1])
    assert [r["alpha"] for r in rows] == [0, 0.5, 1]
    assert rows[0]["age"]["mae"] == pytest.approx(own_mae(a))
    assert rows[2]["age"]["mae"] == pytest.approx(own_mae(b))
    assert rows[0]["age"]["mae"] != pytest.approx(rows[2]["age"]["mae"])
    assert rows[1]["age"]["mae"] not in (rows[0]["age"]["mae"], rows[2]["age"]["mae"])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        scan_mixing_shares(a, b, cache, ["age"], [0.5, 1.5])
