"""The DMM-CNN ablation report: one table of variants (mean ± std over seeds), the effect of
each component against the full model, per-attribute figures and plots (per-attribute
accuracy, cumulative landmark error distribution, dynamic weights over epochs)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from facefuse.config import to_dict
from facefuse.evaluation.report import (
    environment,
    format_mean_std,
    markdown_table,
    mean_std,
    write_csv,
)
from facefuse.tasks import CELEBA_ATTRIBUTES

VARIANT_LABELS = {
    "full": "full model", "no_landmarks": "without landmarks",
    "static_weights": "static weights (no dynamic weighting)",
    "fixed_threshold": "0.5 thresholds (no adaptive thresholds)",
    "one_branch": "one attribute branch (no objective/subjective split)",
}
METRIC_COLUMNS = (("mean_accuracy", "mean accuracy %", True, True),
                  ("mean_balanced_accuracy", "mean balanced accuracy %", True, True),
                  ("nme", "NME (inter-ocular) %", True, False),
                  ("failure_rate", "failure rate (NME > 0.08) %", True, False))


def write_report(out: Path, cfg, scores: list[dict], runs: dict, positive_rate: np.ndarray,
                 counts: list[dict], timings: dict, device: object) -> None:
    """The ablation and per-attribute tables (CSV, markdown), their figures,
    ``summary.json`` and ``report.md`` in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_variant: dict[str, list[dict]] = {}
    for s in scores:
        by_variant.setdefault(s["variant"], []).append(s)
    table_md, effect_md = _ablation_tables(out, cfg, by_variant)
    attr_md, acc, acc05 = _attribute_table(out, cfg, scores, by_variant, positive_rate)
    _attribute_plot(out, plt, acc, acc05, positive_rate)
    _ced_plot(out, plt, cfg, by_variant)
    _weights_plot(out, plt, cfg, runs)
    _summary_and_report(out, cfg, scores, runs, counts, timings, device, table_md, effect_md,
                        attr_md)


def _ablation_tables(out: Path, cfg, by_variant: dict[str, list[dict]]) -> tuple[str, str]:
    """The ablation table and each component's effect (paired by seed), as CSV and
    markdown; returns both markdown tables."""
    seeds_full = {s["seed"]: s for s in by_variant["full"]}
    rows, csv_rows, effect_rows = [], [], []
    for v in cfg.variants:
        entries = by_variant[v]
        row: list[object] = [VARIANT_LABELS[v]]
        effect: list[object] = [VARIANT_LABELS[v]]
        for key, _, percent, higher in METRIC_COLUMNS:
            vals = [e[key] for e in entries if key in e]
            row.append(format_mean_std(vals, percent, 2) if vals else "-")
            m, sd = mean_std(vals) if vals else (np.nan, np.nan)
            diffs = [seeds_full[e["seed"]][key] - e[key] for e in entries
                     if key in e and key in seeds_full[e["seed"]]]
            if v == "full" or not diffs:
                effect.append("-")
            else:
                dm, dsd = mean_std(diffs)
                sign = 1 if higher else -1  # positive: the component helps
                effect.append(f"{sign * dm * 100:+.2f} ± {dsd * 100:.2f}")
            if vals:  # a variant without a landmark head has no landmark metrics
                csv_rows.append([v, key, m, sd, len(vals), json.dumps(vals)])
        rows.append(row)
        effect_rows.append(effect)
    header = ["variant"] + [label for _, label, _, _ in METRIC_COLUMNS]
    table_md = markdown_table(header, rows)
    effect_md = markdown_table(["component removed"] + [label.split(" %")[0] for _, label, _, _
                                                        in METRIC_COLUMNS], effect_rows)
    write_csv(out / "ablation.csv", ["variant", "metric", "mean", "std", "seeds", "per_seed"],
              csv_rows)
    (out / "ablation.md").write_text(table_md + "\n\nEffect of each component (full model "
                                     "minus the variant, in points; positive = the component "
                                     "helps; paired by seed):\n\n" + effect_md + "\n")
    return table_md, effect_md


def _attribute_table(out: Path, cfg, scores: list[dict], by_variant: dict[str, list[dict]],
                     positive_rate: np.ndarray):
    """Per attribute, the full model averaged over seeds (CSV, markdown); returns the
    markdown and the accuracies with adaptive and with 0.5 thresholds (None without that
    variant)."""
    full = by_variant["full"]
    fixed = [s for s in scores if s["variant"] == "fixed_threshold"]
    with warnings.catch_warnings():  # an attribute with one class in test has no balanced
        warnings.simplefilter("ignore", RuntimeWarning)  # accuracy: NaN, shown as nan
        acc = np.nanmean([f["per_attribute_accuracy"] for f in full], axis=0)
        bal = np.nanmean([f["per_attribute_balanced_accuracy"] for f in full], axis=0)
        acc05 = np.nanmean([f["per_attribute_accuracy"] for f in fixed], axis=0) if fixed \
            else None
    thr = np.mean([f["thresholds"] for f in full], axis=0)
    attr_rows, attr_csv = [], []
    for j, name in enumerate(CELEBA_ATTRIBUTES):
        group = "objective" if name in cfg.model.objective else "subjective"
        r = [name, group, f"{100 * positive_rate[j]:.1f}", f"{100 * acc[j]:.1f}",
             f"{100 * acc05[j]:.1f}" if acc05 is not None else "-", f"{100 * bal[j]:.1f}",
             f"{thr[j]:.2f}"]
        attr_rows.append(r)
        attr_csv.append([name, group, positive_rate[j], acc[j],
                         acc05[j] if acc05 is not None else "", bal[j], thr[j]])
    attr_header = ["attribute", "group", "positive rate %", "accuracy %",
                   "accuracy @0.5 %", "balanced accuracy %", "threshold"]
    write_csv(out / "attributes.csv", ["attribute", "group", "positive_rate", "accuracy",
                                       "accuracy_at_0.5", "balanced_accuracy", "threshold"],
              attr_csv)
    attr_md = markdown_table(attr_header, attr_rows)
    (out / "attributes.md").write_text(attr_md + "\n")
    return attr_md, acc, acc05


def _attribute_plot(out: Path, plt, acc: np.ndarray, acc05: np.ndarray | None,
                    positive_rate: np.ndarray) -> None:
    fig, ax = plt.subplots(figsize=(14, 4))
    x = np.arange(40)
    ax.bar(x - 0.2, 100 * acc, 0.4, label="adaptive thresholds")
    if acc05 is not None:
        ax.bar(x + 0.2, 100 * acc05, 0.4, label="0.5 thresholds")
    ax.plot(x, 100 * np.maximum(positive_rate, 1 - positive_rate), "k_", markersize=10,
            label="majority-class rate")
    ax.set_xticks(x, CELEBA_ATTRIBUTES, rotation=75, fontsize=7)
    ax.set_ylabel("test accuracy %")
    ax.set_ylim(40, 100)
    ax.legend(fontsize=8)
    ax.set_title("Per-attribute accuracy, full model (mean over seeds)")
    fig.tight_layout()
    fig.savefig(out / "attributes.png", dpi=110)
    plt.close(fig)


def _ced_plot(out: Path, plt, cfg, by_variant: dict[str, list[dict]]) -> None:
    fig, ax = plt.subplots(figsize=(5, 4))
    for v in cfg.variants:
        nmes = np.concatenate([e["nme_per_face"] for e in by_variant[v] if "nme_per_face" in e]
                              or [np.array([])])
        if v == "fixed_threshold" or not len(nmes):
            continue
        grid = np.linspace(0, 0.2, 201)
        ax.plot(grid, [(nmes <= g).mean() for g in grid], label=VARIANT_LABELS[v])
    ax.axvline(0.08, color="grey", linestyle=":")
    ax.set_xlabel("NME (inter-ocular)")
    ax.set_ylabel("share of test faces")
    ax.set_title("Cumulative error distribution, 300-W test split")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "ced.png", dpi=110)
    plt.close(fig)


def _weights_plot(out: Path, plt, cfg, runs: dict) -> None:
    first_full = runs[("full", cfg.seeds[0])]
    weights = np.asarray([h["weights"] for h in first_full["history"]])
    fig, ax = plt.subplots(figsize=(12, 3.5))
    im = ax.imshow(weights.T, aspect="auto", cmap="magma")
    ax.set_yticks(range(40), CELEBA_ATTRIBUTES, fontsize=5)
    ax.set_xlabel("epoch")
    ax.set_title(f"Dynamic attribute weights used in each epoch (full model, seed "
                 f"{cfg.seeds[0]})")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(out / "weights.png", dpi=110)
    plt.close(fig)


def _summary_and_report(out: Path, cfg, scores: list[dict], runs: dict, counts: list[dict],
                        timings: dict, device: object, table_md: str, effect_md: str,
                        attr_md: str) -> None:
    env = environment(device)
    seconds = {f"{k[0]}-seed{k[1]}": r["seconds"] for k, r in runs.items()}
    summary: dict[str, Any] = {"config": to_dict(cfg), "environment": env, "data": counts,
                               "seeds": list(cfg.seeds), "timings_seconds": timings,
                               "run_seconds": seconds,
                               "scores": [{k: v for k, v in s.items() if k != "nme_per_face"}
                                          for s in scores]}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    data_line = "; ".join(f"{c['dataset']} {c['train']}/{c['val']}/{c['test']}" for c in counts)
    report = [
        f"# DMM-CNN ablation ({cfg.output})", "",
        f"Seeds {list(cfg.seeds)}; trunk {cfg.model.trunk} at {cfg.image_size}px; device "
        f"{env['device']} ({env['cpus']} CPUs, torch {env['torch']}); total "
        f"{timings['total'] / 60:.1f} min.", "",
        f"Images (train/val/test): {data_line}. Attributes are scored on the CelebA test "
        "split (identity-disjoint), landmarks on the 300-W test split.", "",
        "## Ablation (test; mean ± std over seeds)", "", table_md, "",
        "Effect of each component (full model minus the variant, in points; positive = the "
        "component helps; paired by seed):", "", effect_md, "",
        "![ced](ced.png)", "", "## Per attribute (full model)", "", attr_md, "",
        "![attributes](attributes.png)", "", "![weights](weights.png)", ""]
    (out / "report.md").write_text("\n".join(report))
