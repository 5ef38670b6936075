"""The multi-task training's typed config (``facefuse train CONFIG``'s YAML): what to
train (trunk, tasks, heads, recipe), on what (datasets, sampling weights, crops, cache) and
how (optimiser, batch, weighting, augmentation, fine-tuning); every value is checked when the
config is made, before any data is read. :mod:`facefuse.train.mtl` trains it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from facefuse.config import check_whole, is_finite_non_negative
from facefuse.data.cache import CacheSpec
from facefuse.models import TRUNKS
from facefuse.tasks import TASK_ORDER
from facefuse.train.loop import OptimConfig
from facefuse.train.weighting import WEIGHTINGS

RECIPES = ("joint", "identity_then_tasks", "single")
IDENTITY_HEADS = ("arcface", "cosface", "softmax")
AGE_HEADS = ("regression", "distribution")


@dataclass(frozen=True)
class MTLConfig:
    kind: str = "mtl"
    output: str = "runs/mtl"
    cache_dir: str = ".facefuse-cache"
    # a built (or unpacked, see facefuse.data.cache_pack) cache folder to train from instead
    # of reading data_root: for machines without the data folder
    cache: str | None = None
    data_root: str = "../shared/data"
    device: str = "auto"
    workers: int | None = None
    # seed: the training's randomness (initial weights, draws, augmentation) and, unless
    # split_seed is set, the train/val/test draw; a split_seed kept while seed varies gives
    # runs of several seeds the same test rows (and lets a fine-tune reseed its training)
    seed: int = 0
    split_seed: int | None = None
    trunk: str = "mobilenetv3_large_100"
    trunk_options: dict[str, Any] = field(default_factory=dict)
    image_size: int = 112
    tasks: tuple[str, ...] = ("identity", "age", "gender", "race", "emotion", "attributes",
                              "landmarks")
    datasets: tuple[str, ...] = ("utkface", "fer2013", "celeba", "lfw", "300w")
    sampling: dict[str, float] = field(default_factory=dict)
    epoch_size: int | None = None
    limit_per_dataset: int | None = None
    task_weights: dict[str, float] = field(default_factory=dict)
    weighting: str = "static"
    identity_head: str = "arcface"
    identity_embedding: int = 128
    # regression: one value, L1 loss; distribution: softmax over one-year bins, its
    # expectation the age, DLDL-v2's loss (facefuse.models.heads.DistributionHead)
    age_head: str = "regression"
    recipe: str = "joint"
    pretrain_epochs: int = 0
    optim: OptimConfig = OptimConfig(optimizer="adamw", lr=2e-3, weight_decay=5e-5,
                                     lr_decay=0.9, epochs=10)
    batch_size: int = 256
    augment: bool = True
    grayscale: float = 0.1  # drop colour sometimes, so grayscale FER and colour data agree
    center_crop: dict[str, float] = field(default_factory=lambda: {"celeba": 0.6})
    # datasets cropped by the analyzer's detector (the training crops then match inference)
    detector_crop: tuple[str, ...] = ()
    # copy the training cache's images into RAM instead of reading the memory map (faster
    # random batches); None: when they take at most a quarter of the machine's memory
    # (each DDP process holds its own copy)
    cache_in_memory: bool | None = None
    channels_last: bool = True
    bf16: bool = True  # autocast on CUDA
    # identity distillation: a file of teacher descriptors (tools/teacher_embeddings.py)
    identity_teacher: str | None = None
    teacher_weight: float = 1.0
    # start from this checkpoint's weights instead of random ones (fine-tuning)
    init_from: str | None = None
    # modules (names such as "trunk.model.blocks.0", with all inside them) kept as they are:
    # no gradient, BatchNorm statistics frozen; a cheap fine-tune on a CPU
    freeze: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.split_seed is not None and (isinstance(self.split_seed, bool) or not isinstance(
                self.split_seed, int) or self.split_seed < 0):
            raise ValueError(f"split_seed must be a non-negative integer or null, got "
                             f"{self.split_seed!r}")
        for t in self.tasks:
            if t not in TASK_ORDER:
                raise ValueError(f"unknown task {t!r}; valid: {', '.join(TASK_ORDER)}")
        if self.trunk not in TRUNKS:  # before the data is read, not after
            raise ValueError(f"unknown trunk {self.trunk!r}; valid: {', '.join(TRUNKS.names())}")
        for name, least, optional in (("batch_size", 1, False), ("image_size", 16, False),
                                      ("identity_embedding", 1, False),
                                      ("epoch_size", 1, True), ("limit_per_dataset", 1, True),
                                      ("workers", 0, True)):
            check_whole(name, getattr(self, name), least, optional)
        unknown = set(self.task_weights) - set(TASK_ORDER)
        if unknown:  # a misspelt task would otherwise keep its default weight unnoticed
            raise ValueError(f"task_weights for unknown tasks {sorted(unknown)}; valid: "
                             f"{', '.join(TASK_ORDER)}")
        for what, weights in (("task_weights", self.task_weights),
                              ("sampling", self.sampling)):
            bad = {k: v for k, v in weights.items() if not is_finite_non_negative(v)}
            if bad:
                raise ValueError(f"{what} must be finite numbers >= 0, got {bad}")
        if self.sampling and not any(self.sampling.get(d, 1.0) > 0 for d in self.datasets):
            raise ValueError("sampling gives every dataset weight 0: nothing would be drawn")
        if not (is_finite_non_negative(self.grayscale) and self.grayscale <= 1):
            raise ValueError(f"grayscale is a probability in [0, 1], got {self.grayscale!r}")
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES}, got {self.recipe!r}")
        if self.recipe == "single" and len(self.tasks) != 1:
            raise ValueError("recipe 'single' trains exactly one task")
        if self.recipe == "identity_then_tasks" and (
                "identity" not in self.tasks or not 0 < self.pretrain_epochs
                < self.optim.epochs):
            raise ValueError("identity_then_tasks needs the identity task and "
                             "0 < pretrain_epochs < optim.epochs")
        if self.identity_head not in IDENTITY_HEADS:
            raise ValueError(f"identity_head must be one of {IDENTITY_HEADS}")
        if self.age_head not in AGE_HEADS:
            raise ValueError(f"age_head must be one of {AGE_HEADS}, got {self.age_head!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {self.weighting!r}; valid: "
                             f"{', '.join(WEIGHTINGS.names())}")
        unknown = set(self.sampling) - set(self.datasets)
        if unknown:
            raise ValueError(f"sampling weights for datasets not used: {sorted(unknown)}")
        unknown = set(self.detector_crop) - set(self.datasets)
        if unknown:
            raise ValueError(f"detector_crop names datasets not used: {sorted(unknown)}")
        if self.identity_teacher is not None:
            if "identity" not in self.tasks or self.identity_head == "softmax":
                raise ValueError("identity_teacher distils into the identity embedding: it "
                                 "needs the identity task with an arcface or cosface head")
            if not self.teacher_weight > 0:
                raise ValueError(f"teacher_weight must be > 0, got {self.teacher_weight}")
        if self.cache is not None and self.limit_per_dataset is not None:
            raise ValueError("limit_per_dataset selects rows from data_root; it cannot be "
                             "used with a prebuilt cache")

    @property
    def splits_seed(self) -> int:
        """The seed the train/val/test splits are drawn with: ``split_seed``, else ``seed``."""
        return self.seed if self.split_seed is None else self.split_seed

    def cache_spec(self) -> CacheSpec:
        """The training cache's settings (size and crops) for this config."""
        return CacheSpec(size=self.image_size, center_crop=self.center_crop,
                         detector_crop=self.detector_crop)
