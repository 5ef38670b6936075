"""The Li and Zhu report: cross-task and fusion tables (CSV, Markdown, PNG), with the spread
over seeds, the gain of every fusion row over own features, and chance levels."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facefuse.config import to_dict
from facefuse.evaluation.metrics import primary_metric
from facefuse.evaluation.report import (
    environment,
    format_mean_std,
    markdown_table,
    mean_std,
    write_csv,
)

ROW_LABELS = {"own": "Own", "other": "Other sources", "all": "All (concat, paper)"}


def _row_label(row: str) -> str:
    return ROW_LABELS.get(row, f"All ({row.split(':', 1)[1]})" if ":" in row else row)


def _by_seed(cells: list[dict], table: str) -> dict[tuple[str, str], dict[int, float]]:
    """(row, target) -> {seed: primary test metric}."""
    out: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for c in cells:
        if c["table"] == table:
            out[(c["row"], c["target"])][c["seed"]] = c["test"][c["metric"]]
    return out


@dataclass(frozen=True)
class _Scales:
    """Each target's primary metric (name, higher is better), whether it reads in percent,
    and its chance levels."""

    metric: dict[str, tuple[str, bool]]
    percent: dict[str, bool]
    chance: dict[str, dict]

    def fmt(self, t: str, values: list[float]) -> str:
        return format_mean_std(values, self.percent[t]) if values else "-"

    def chance_text(self, t: str) -> str:
        c = self.chance[t]
        if "majority" in c:
            return f"{100 * c['majority']:.1f} (1/k {100 * c['uniform']:.1f})"
        return f"{c['mae_of_train_median']:.2f}"

    def header(self, targets) -> list[str]:
        return [f"{t} ({self.metric[t][0]}{' %' if self.percent[t] else ''})"
                for t in targets]


def write_report(out: Path, cfg, cells: list[dict], targets: dict, counts: list[dict],
                 timings: dict[str, float], device: object) -> None:
    """The cross-task and fusion tables (CSV, markdown, figures), ``summary.json`` and
    ``report.md`` in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = {t: primary_metric(targets[t].task) for t in cfg.targets}  # name -> (metric, higher)
    for c in cells:
        c["metric"] = metric[c["target"]][0]
    sc = _Scales(metric, {t: metric[t][0] != "mae" for t in cfg.targets},
                 {t: targets[t].chance() for t in cfg.targets})
    cross_md = _cross_task_table(out, cfg, cells, sc, plt)
    fusion_md, gain_md = _fusion_table(out, cfg, cells, sc, plt)
    _summary_and_report(out, cfg, cells, targets, counts, timings, device, sc.chance,
                        cross_md, fusion_md, gain_md)


def _cross_task_table(out: Path, cfg, cells: list[dict], sc: _Scales, plt) -> str:
    """The cross-task table (the paper's Table 1) as CSV, markdown and a heat map; returns
    the markdown."""
    metric, chance, fmt = sc.metric, sc.chance, sc.fmt
    cross = _by_seed(cells, "cross")
    csv_rows, md_rows = [], []
    matrix = np.full((len(cfg.sources), len(cfg.targets)), np.nan)
    for i, src in enumerate(cfg.sources):
        md_row: list[object] = [src]
        for j, tgt in enumerate(cfg.targets):
            vals = [cross[(src, tgt)][s] for s in sorted(cross[(src, tgt)])]
            m, sd = mean_std(vals) if vals else (np.nan, np.nan)
            text = fmt(tgt, vals)
            md_row.append(f"**{text}**" if cfg.own(tgt) == src else text)
            csv_rows.append([src, tgt, metric[tgt][0], m, sd, len(vals), json.dumps(vals),
                             json.dumps(chance[tgt])])
            c = chance[tgt]
            if "majority" in c:
                matrix[i, j] = (m - c["majority"]) / max(1 - c["majority"], 1e-9)
            else:
                matrix[i, j] = (c["mae_of_train_median"] - m) / c["mae_of_train_median"]
        md_rows.append(md_row)
    md_rows.append(["chance"] + [sc.chance_text(t) for t in cfg.targets])
    write_csv(out / "cross_task.csv", ["source", "target", "metric", "mean", "std", "seeds",
                                       "per_seed", "chance"], csv_rows)
    header = ["features of \\ target", *sc.header(cfg.targets)]
    cross_md = markdown_table(header, md_rows)
    (out / "cross_task.md").write_text(cross_md + "\n")

    fig, ax = plt.subplots(figsize=(1.6 * len(cfg.targets) + 2, 1.0 * len(cfg.sources) + 1.5))
    im = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=max(1e-6, np.nanmax(matrix)))
    ax.set_xticks(range(len(cfg.targets)), cfg.targets)
    ax.set_yticks(range(len(cfg.sources)), cfg.sources)
    ax.set_xlabel("target task")
    ax.set_ylabel("features of the model trained for")
    for i, src in enumerate(cfg.sources):
        for j, tgt in enumerate(cfg.targets):
            vals = list(cross[(src, tgt)].values())
            if vals:
                ax.text(j, i, fmt(tgt, vals).replace(" ± ", "\n±"), ha="center",
                        va="center", fontsize=8,
                        color="white" if matrix[i, j] < 0.6 * np.nanmax(matrix) else "black")
    fig.colorbar(im, ax=ax, label="share of the gap from chance to perfect closed")
    ax.set_title("Cross-task features (test; mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(out / "cross_task.png", dpi=120)
    plt.close(fig)
    return cross_md


def _fusion_table(out: Path, cfg, cells: list[dict], sc: _Scales, plt) -> tuple[str, str]:
    """The fusion table (the paper's Table 2, and beyond) and each row's gain over own
    features, as CSV, markdown and a bar chart; returns both markdown tables."""
    metric, percent, fmt = sc.metric, sc.percent, sc.fmt
    fusion = _by_seed(cells, "fusion")
    row_names = [r for r, _, _ in cfg.fusion_rows(cfg.targets[0])]
    csv_rows, md_rows, gain_rows = [], [], []
    for row in row_names:
        md_row, gain_row = [_row_label(row)], [_row_label(row)]
        for tgt in cfg.targets:
            per_seed = fusion[(row, tgt)]
            own = fusion[("own", tgt)]
            vals = [per_seed[s] for s in sorted(per_seed)]
            sign = 1.0 if metric[tgt][1] else -1.0
            gains = [sign * (per_seed[s] - own[s]) for s in sorted(per_seed) if s in own]
            m, sd = mean_std(vals) if vals else (np.nan, np.nan)
            gm, gsd = mean_std(gains) if gains else (np.nan, np.nan)
            md_row.append(fmt(tgt, vals))
            gain_row.append("-" if row == "own" else
                            (f"{gm * (100 if percent[tgt] else 1):+.1f} ± "
                             f"{gsd * (100 if percent[tgt] else 1):.1f}"))
            csv_rows.append([row, tgt, metric[tgt][0], m, sd, gm, gsd, len(vals),
                             json.dumps(vals)])
        md_rows.append(md_row)
        gain_rows.append(gain_row)
    md_rows.append(["chance"] + [sc.chance_text(t) for t in cfg.targets])
    write_csv(out / "fusion.csv", ["row", "target", "metric", "mean", "std", "gain_mean",
                                   "gain_std", "seeds", "per_seed"], csv_rows)
    fusion_md = markdown_table(["features", *sc.header(cfg.targets)], md_rows)
    gain_md = markdown_table(["gain over own"] + [
        f"{t} ({'points' if percent[t] else 'years lower MAE'})" for t in cfg.targets],
        gain_rows)
    (out / "fusion.md").write_text(fusion_md + "\n\n" + gain_md + "\n")

    fig, axes = plt.subplots(1, len(cfg.targets), figsize=(3.2 * len(cfg.targets), 3.8))
    for ax, tgt in zip(np.atleast_1d(axes), cfg.targets, strict=False):
        scale = 100 if percent[tgt] else 1
        ms = [mean_std(list(fusion[(r, tgt)].values())) for r in row_names]
        ax.bar(range(len(row_names)), [m * scale for m, _ in ms],
               yerr=[s * scale for _, s in ms], color="tab:blue", capsize=3)
        ax.set_xticks(range(len(row_names)), [_row_label(r) for r in row_names], rotation=60,
                      ha="right", fontsize=7)
        ax.set_title(f"{tgt} ({metric[tgt][0]})")
        lo = min(m * scale - s * scale for m, s in ms)
        hi = max(m * scale + s * scale for m, s in ms)
        ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))
    fig.suptitle("Fusion (test; mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(out / "fusion.png", dpi=120)
    plt.close(fig)
    return fusion_md, gain_md


def _summary_and_report(out: Path, cfg, cells: list[dict], targets: dict,
                        counts: list[dict], timings: dict[str, float], device: object,
                        chance: dict, cross_md: str, fusion_md: str, gain_md: str) -> None:
    data = {"datasets": counts,
            "targets": {t: {s: int(len(r)) for s, r in targets[t].rows.items()}
                        for t in targets},
            "identity_classes": targets["identity"].n_classes if "identity" in targets
            else None}
    summary = {"config": to_dict(cfg), "environment": environment(device), "data": data,
               "seeds": list(cfg.seeds), "timings_seconds": {k: round(v, 1) for k, v in
                                                             timings.items()},
               "chance": chance, "cells": cells}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    env = environment(device)
    report = [
        f"# Li and Zhu: cross-task features and fusion ({cfg.output})", "",
        f"Seeds {list(cfg.seeds)}; device {env['device']} ({env['cpus']} CPUs, torch "
        f"{env['torch']}); total {timings['total'] / 60:.1f} min "
        f"(data+cache {timings['data_and_cache']:.0f}s, extractors+features "
        f"{timings['extractors_and_features']:.0f}s, heads {timings['heads']:.0f}s).", "",
        "Images per target (train / val / test): " + "; ".join(
            f"{t} {r['train']}/{r['val']}/{r['test']}" for t, r in data["targets"].items()),
        "", "## Cross-task features (the paper's Table 1)", "",
        "Rows: the model whose frozen features are used; columns: the task predicted. "
        "Bold: own features. Test scores, mean ± std over seeds.", "", cross_md, "",
        "![cross-task](cross_task.png)", "", "## Fusion (the paper's Table 2, and beyond)", "",
        fusion_md, "", gain_md, "", "![fusion](fusion.png)", ""]
    (out / "report.md").write_text("\n".join(report))
