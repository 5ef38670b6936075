"""Does multi-task learning help? One base training config (``facefuse train``), varied:
for each trunk and seed, one single-task model per task, one joint model, and the paper's
recipe (identity first, then the other tasks); every task scored on its test split.

The table, per task and trunk: the primary metric of each recipe (mean ± std over seeds)
and the gain of joint and of identity-then-tasks over single-task training, paired by seed.

Two budgets for a single-task run (``single_budget``): ``equal_draws`` gives it the joint
run's draws, all on its own task's data, so it sees that data several times as often as the
joint model does; ``equal_exposure`` gives it the draws the joint run spends on samples that
carry its task (the joint run's epoch size times that share of its sampling), so both see
the task's data equally often and the question becomes "does sharing the trunk with the other
tasks help at the same exposure to this task?".

``joint_weightings: [uncertainty, dwa]`` adds, per trunk and seed, one more joint run per
loss weighting strategy named (:mod:`facefuse.train.weighting`; the base config's own
weighting is the ``joint`` column): does a learned or adaptive weighting change the answer?
Their columns are ``joint_<weighting>``, with their gains over single-task training.

A finished run (its ``metrics.json`` written by a run of the same config) is reused, so an
interrupted experiment continues where it stopped, and several invocations (one per seed,
say, on a machine with cores to spare) can fill one output folder before a last one with
every seed writes the table.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from facefuse.config import load_config, same_config, save_config, to_dict
from facefuse.devices import resolve_device
from facefuse.evaluation.report import environment, markdown_table, mean_std, write_csv
from facefuse.experiments.registry import EXPERIMENTS, Experiment
from facefuse.models import TRUNKS
from facefuse.train.mtl import MTLConfig, sampling_probabilities, train_mtl, training_cache
from facefuse.train.weighting import WEIGHTINGS

log = logging.getLogger(__name__)

#: task -> (key in metrics.json's test entry, metric, higher is better, shown in percent)
PRIMARY: dict[str, tuple[str, bool, bool]] = {
    "identity": ("lfw_verification_accuracy", True, True),
    "age": ("mae", False, False),
    "gender": ("accuracy", True, True),
    "race": ("accuracy", True, True),
    "emotion": ("accuracy", True, True),
    "attributes": ("mean_attribute_accuracy", True, True),
    "landmarks": ("nme_inter_ocular", False, True),
}
RECIPES = ("single", "joint", "identity_then_tasks")
SINGLE_BUDGETS = ("equal_draws", "equal_exposure")


@dataclass(frozen=True)
class MTLCompareConfig:
    kind: str = "mtl_compare"
    output: str = "reports/mtl_compare"
    base: str = "configs/mtl.yaml"
    base_profile: str | None = "quick"
    base_overrides: tuple[str, ...] = ()
    trunks: tuple[str, ...] = ("mobilenetv3_small_100",)
    seeds: tuple[int, ...] = (0, 1, 2)
    recipes: tuple[str, ...] = RECIPES
    tasks: tuple[str, ...] = ("identity", "age", "gender", "race", "emotion", "attributes",
                              "landmarks")
    pretrain_epochs: int = 1
    single_budget: str = "equal_draws"  # equal_draws | equal_exposure (module docstring)
    # further joint runs, one per loss weighting strategy named (module docstring)
    joint_weightings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("trunks", "seeds", "recipes", "tasks"):
            if not getattr(self, name):
                raise ValueError(f"{name} is empty: the comparison would train nothing")
        unknown = [t for t in self.trunks if t not in TRUNKS]
        if unknown:  # refused now, not after the runs of the trunks listed before it
            raise ValueError(f"unknown trunks {unknown}; valid: {', '.join(TRUNKS.names())}")
        bad = [r for r in self.recipes if r not in RECIPES]
        if bad:
            raise ValueError(f"unknown recipes {bad}; valid: {RECIPES}")
        if self.single_budget not in SINGLE_BUDGETS:
            raise ValueError(f"unknown single_budget {self.single_budget!r}; valid: "
                             f"{', '.join(SINGLE_BUDGETS)}")
        unknown = [t for t in self.tasks if t not in PRIMARY]
        if unknown:
            raise ValueError(f"unknown tasks {unknown}; valid: {', '.join(PRIMARY)}")
        unknown = [w for w in self.joint_weightings if w not in WEIGHTINGS]
        if unknown:
            raise ValueError(f"unknown joint_weightings {unknown}; valid: "
                             f"{', '.join(WEIGHTINGS.names())}")
        if len(set(self.joint_weightings)) != len(self.joint_weightings):
            raise ValueError(f"joint_weightings repeats a strategy: {list(self.joint_weightings)}")

    def columns(self) -> list[str]:
        """The table's recipe columns: ``recipes``, then ``joint_<w>`` per joint weighting."""
        return [*self.recipes, *(f"joint_{w}" for w in self.joint_weightings)]


def task_exposure(base: MTLConfig, tasks: tuple[str, ...]) -> dict[str, float]:
    """For each task, the share of a joint run's draws that land on training samples
    carrying its label (the base config's sampling weights over its training rows; its
    training cache is built now when missing)."""
    cache, _ = training_cache(base)
    table = cache.table
    rows = cache.rows("train")
    present = {t: table.present(t)[rows] for t in tasks}
    in_joint = np.any([present[t] for t in tasks], axis=0)  # the joint run's rows
    joint = rows[in_joint]
    if not len(joint):
        raise ValueError("no training sample carries a label of the compared tasks")
    probs = sampling_probabilities(table, joint, base.sampling)
    if probs is None:
        probs = np.full(len(joint), 1 / len(joint))
    return {t: float(probs[present[t][in_joint]].sum()) for t in tasks}


def single_epoch_size(cfg: MTLCompareConfig, base: MTLConfig,
                      exposure: dict[str, float] | None, task: str) -> int | None:
    """A single-task run's draws an epoch under ``cfg.single_budget``."""
    if cfg.single_budget == "equal_draws" or exposure is None:
        return base.epoch_size
    assert base.epoch_size  # checked by run_mtl_compare
    return max(base.batch_size, round(base.epoch_size * exposure[task]))


def run_configs(cfg: MTLCompareConfig, base: MTLConfig,
                exposure: dict[str, float] | None = None
                ) -> list[tuple[str, str, int, str, MTLConfig]]:
    """(trunk, recipe, seed, task or 'all', config) for every training run; ``exposure``
    (from :func:`task_exposure`) sizes single-task epochs under ``equal_exposure``."""
    out = []
    root = Path(cfg.output) / "runs"

    def weights(tasks: tuple[str, ...]) -> dict[str, float]:
        return {t: w for t, w in base.task_weights.items() if t in tasks}

    for trunk in cfg.trunks:
        for seed in cfg.seeds:
            common = {"trunk": trunk, "seed": seed}
            if "single" in cfg.recipes:
                for task in cfg.tasks:
                    out.append((trunk, "single", seed, task, replace(
                        base, **common, recipe="single", tasks=(task,),
                        task_weights=weights((task,)),
                        epoch_size=single_epoch_size(cfg, base, exposure, task),
                        output=str(root / f"{trunk}-single-{task}-seed{seed}"))))
            if "joint" in cfg.recipes:
                out.append((trunk, "joint", seed, "all", replace(
                    base, **common, recipe="joint", tasks=cfg.tasks,
                    task_weights=weights(cfg.tasks),
                    output=str(root / f"{trunk}-joint-seed{seed}"))))
            if "identity_then_tasks" in cfg.recipes:
                out.append((trunk, "identity_then_tasks", seed, "all", replace(
                    base, **common, recipe="identity_then_tasks", tasks=cfg.tasks,
                    task_weights=weights(cfg.tasks),
                    pretrain_epochs=cfg.pretrain_epochs,
                    output=str(root / f"{trunk}-identity_then_tasks-seed{seed}"))))
            for w in cfg.joint_weightings:
                out.append((trunk, f"joint_{w}", seed, "all", replace(
                    base, **common, recipe="joint", tasks=cfg.tasks,
                    task_weights=weights(cfg.tasks), weighting=w,
                    output=str(root / f"{trunk}-joint_{w}-seed{seed}"))))
    return out


def _score(test: dict[str, Any], task: str) -> float | None:
    key = PRIMARY[task][0]
    return test.get(task, {}).get(key)


def finished_run(run_cfg: MTLConfig) -> bool:
    """Whether ``run_cfg``'s output folder holds a finished run of exactly this config."""
    folder = Path(run_cfg.output)
    state, metrics = folder / "state.pt", folder / "metrics.json"
    if not (state.is_file() and metrics.is_file()):
        return False
    saved = torch.load(state, map_location="cpu", weights_only=True)
    return (same_config(json.loads(saved.get("config") or "null"), run_cfg)
            and int(saved.get("epoch", 0)) >= run_cfg.optim.epochs)


def run_mtl_compare(cfg: MTLCompareConfig, progress: bool = False) -> Path:
    """Train (or reuse) every run of the comparison, then write its table, ``summary.json``
    and ``report.md`` in ``cfg.output``; returns that folder."""
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    base = load_config(MTLConfig, cfg.base, list(cfg.base_overrides), cfg.base_profile)
    if base.weighting in cfg.joint_weightings and "joint" in cfg.recipes:
        raise ValueError(f"joint_weightings names {base.weighting!r}, the base config's own "
                         f"weighting: the 'joint' column already trains it")
    exposure = None
    if cfg.single_budget == "equal_exposure" and "single" in cfg.recipes:
        if not base.epoch_size:
            raise ValueError("single_budget equal_exposure needs the base config's "
                             "epoch_size (the joint run's draws an epoch)")
        exposure = task_exposure(base, cfg.tasks)
        log.info("joint draws per task: %s", exposure)
    start = time.perf_counter()
    scores, seconds, reused = _train_runs(cfg, base, exposure, progress)
    table = _comparison_table(out, cfg, scores)
    _write_report(out, cfg, base, exposure, scores, seconds, reused, table,
                  time.perf_counter() - start)
    return out


def _train_runs(cfg: MTLCompareConfig, base: MTLConfig, exposure: dict | None,
                progress: bool) -> tuple[dict[tuple[str, str, str, int], float],
                                     dict[str, float], list[str]]:
    """Every run of the plan, trained or reused when finished earlier: each (trunk, recipe,
    task, seed)'s test score, each trained run's seconds, the reused runs' names."""
    # (trunk, recipe, task, seed) -> score
    scores: dict[tuple[str, str, str, int], float] = {}
    seconds: dict[str, float] = {}
    reused: list[str] = []
    plan = run_configs(cfg, base, exposure)
    bar = tqdm(plan, desc="mtl_compare", unit="run", disable=not progress)
    for k, (trunk, recipe, seed, task, run_cfg) in enumerate(bar, start=1):
        folder = Path(run_cfg.output)
        bar.set_postfix_str(folder.name)
        log.info("run %d of %d: %s", k, len(plan), folder.name)
        if finished_run(run_cfg):
            reused.append(folder.name)
            log.info("%s: finished earlier, reused", folder)
        else:
            t0 = time.perf_counter()
            folder = train_mtl(run_cfg, progress=progress)
            seconds[folder.name] = round(time.perf_counter() - t0, 1)
        test = json.loads((folder / "metrics.json").read_text())["test"]
        for t in (cfg.tasks if task == "all" else (task,)):
            if recipe == "identity_then_tasks" and t == "identity":
                continue  # the identity head is frozen after pre-training: not comparable
            value = _score(test, t)
            if value is not None:
                scores[(trunk, recipe, t, seed)] = value
    return scores, seconds, reused


def _comparison_table(out: Path, cfg: MTLCompareConfig,
                      scores: dict[tuple[str, str, str, int], float]) -> str:
    """The comparison (mean ± std per trunk, task and recipe, and each column's gain over
    single-task training, paired by seed) as CSV; returns it as markdown."""
    rows, csv_rows = [], []
    # the columns compared with single-task training, each paired by seed
    gained = ([r for r in cfg.columns() if r != "single"]
              if "single" in cfg.recipes else [])
    for trunk in cfg.trunks:
        for task in cfg.tasks:
            key, higher, percent = PRIMARY[task]
            scale = 100 if percent else 1
            row: list[object] = [trunk, f"{task} ({key})"]
            single = {s: scores.get((trunk, "single", task, s)) for s in cfg.seeds}
            for recipe in cfg.columns():
                vals = [scores[(trunk, recipe, task, s)] for s in cfg.seeds
                        if (trunk, recipe, task, s) in scores]
                m, sd = mean_std(vals) if vals else (float("nan"), float("nan"))
                row.append(f"{m * scale:.2f} ± {sd * scale:.2f}" if vals else "-")
                csv_rows.append([trunk, task, key, recipe, m, sd, len(vals), json.dumps(vals)])
            for recipe in gained:
                gains = [(1 if higher else -1) * (scores[(trunk, recipe, task, s)] - single[s])
                         for s in cfg.seeds if single[s] is not None
                         and (trunk, recipe, task, s) in scores]
                if gains:
                    gm, gsd = mean_std(gains)
                    row.append(f"{gm * scale:+.2f} ± {gsd * scale:.2f}")
                else:
                    row.append("-")
            rows.append(row)
    header = ["trunk", "task (metric)", *cfg.columns(), *(f"{r} - single" for r in gained)]
    table = markdown_table(header, rows)
    write_csv(out / "comparison.csv", ["trunk", "task", "metric", "recipe", "mean", "std",
                                       "seeds", "per_seed"], csv_rows)
    return table


def _write_report(out: Path, cfg: MTLCompareConfig, base: MTLConfig, exposure: dict | None,
                  scores: dict, seconds: dict[str, float], reused: list[str], table: str,
                  elapsed: float) -> None:
    env = environment(resolve_device(base.device))
    (out / "summary.json").write_text(json.dumps({
        "config": to_dict(cfg), "base": to_dict(base), "environment": env,
        "scores": [[*k, v] for k, v in scores.items()], "run_seconds": seconds,
        "reused_runs": reused, "joint_share_per_task": exposure,
        "total_seconds": round(elapsed, 1)}, indent=1))
    if exposure is not None:
        budget = ("Single-task runs at equal exposure: each gets the draws the joint run "
                  "spends on samples carrying its task (" + ", ".join(
                      f"{t} {single_epoch_size(cfg, base, exposure, t)}" for t in cfg.tasks)
                  + f" an epoch, against the joint run's {base.epoch_size}).")
    else:
        budget = (f"Single-task runs at equal draws: {base.epoch_size or 'all training rows'}"
                  " an epoch, as the joint run, all on the task's own data.")
    (out / "report.md").write_text("\n".join([
        "# Does multi-task learning help?", "",
        f"Base config {cfg.base} (profile {cfg.base_profile}); seeds {list(cfg.seeds)}; "
        f"device {env['device']}; {sum(seconds.values()) / 60:.1f} min of training"
        + (f" in this invocation ({len(reused)} runs finished earlier, reused)" if reused
           else "") + ".", "", budget, "",
        (f"Every seed trains and tests on the splits of split seed {base.split_seed}."
         if base.split_seed is not None else "Each seed also draws its own splits, so the "
         "spread includes that of the test rows (base_overrides: [split_seed=0] fixes them)."),
        "",
        *([f"The joint column uses the base config's loss weighting ({base.weighting}); "
           + ", ".join(f"joint_{w} the {w} weighting" for w in cfg.joint_weightings)
           + ", on the same draws.", ""] if cfg.joint_weightings else []),
        "Test scores, mean ± std over seeds (accuracy-like metrics in %, age MAE in years, "
        "landmark NME in %). Gains are paired by seed; positive = better than single-task.",
        "", table, ""]))


EXPERIMENTS.add("mtl_compare", Experiment(MTLCompareConfig, run_mtl_compare))
