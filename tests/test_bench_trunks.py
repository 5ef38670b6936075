"""benchmarks/bench_trunks.py: its synthetic cache is one the trainer accepts, and its
arguments are checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scripts import load_script


def _bench():
    return load_script("benchmarks/bench_trunks.py")


def test_synthetic_cache_carries_every_task_and_trains(tmp_path: Path) -> None:
    bench = _bench()
    from facefuse.data.cache import TrainingCache

    folder = bench.synthetic_cache(tmp_path / "c", 240, 32)
    cache = TrainingCache.open(folder)
    assert len(cache) == 240 and cache.images.shape == (240, 32, 32, 3)
    for task in ("identity", "age", "gender", "race", "emotion", "attributes", "landmarks"):
        assert cache.table.present(task).any(), task
    # labels follow the dataset mix: UTKFace rows alone have ages, 300-W rows alone landmarks
    utk = cache.table.dataset == "utkface"
    assert (cache.table.present("age") == utk).all()
    assert (cache.table.present("landmarks") == (cache.table.dataset == "300w")).all()
    for _, settings, optim in bench.TRAINER_VARIANTS:
        assert bench.trainer_rate("tiny_cnn", 32, 16, str(folder), device="cpu",
                                  epoch_images=64, settings=settings, optim=optim) > 0
    with pytest.raises(TypeError, match="no_such_field"):  # a misspelt variant fails
        bench.trainer_rate("tiny_cnn", 32, 16, str(folder), device="cpu", epoch_images=64,
                           settings={"no_such_field": 1})


def test_bad_arguments_are_refused() -> None:
    bench = _bench()
    with pytest.raises(SystemExit, match="--trainer needs --synthetic"):
        bench.main(["--trainer", "--cuda-only"])
    with pytest.raises(SystemExit, match="give one of them"):
        bench.main(["--synthetic", "10", "--cache", "x", "--cuda-only"])
