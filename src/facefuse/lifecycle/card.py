"""The model card fields of a model's metadata: what it predicts (tasks and labels), how it
was made (training data, recipe, the runs it came from), how to use it (input, threshold,
crop margin) and under what terms (licence, where the full card is).

:func:`card_fields` reads them from a checkpoint's or a shipped graph's JSON (no torch, no
weights loaded); :func:`format_card` renders them as a Markdown list;
:func:`update_card` sets the fields a person states (licence, card document, provenance)
through the one atomic metadata writer, leaving the weights untouched.
"""

from __future__ import annotations

from pathlib import Path

from facefuse.runtime.model_files import (
    checkpoint_paths,
    graph_path,
    model_base,
    read_model_meta,
    update_model_meta,
)

#: the fields :func:`update_card` writes: option name -> metadata key
WRITABLE = {"licence": "licence", "doc": "model_card", "provenance": "provenance"}


def _tasks(meta: dict) -> str:
    heads = (meta.get("spec") or {}).get("heads", {})
    labels = meta.get("tasks") or {}
    parts = []
    for task in dict.fromkeys([*heads, *labels]):
        names, head = labels.get(task), heads.get(task, {})
        if head.get("kind") == "cosine":
            parts.append(f"{task} ({head.get('options', {}).get('embedding')}-d embedding, "
                         f"{head.get('outputs')} training identities)")
        elif task == "landmarks" and names:
            parts.append(f"landmarks ({len(names)} points)")
        elif names:
            shown = ", ".join(names) if len(names) <= 8 else f"{len(names)} labels"
            parts.append(f"{task} ({shown})")
        else:
            parts.append(f"{task} (regression)")
    return "; ".join(parts)


def _provenance(meta: dict) -> str:
    parts = []
    if meta.get("provenance"):
        parts.append(str(meta["provenance"]))
    if meta.get("averaged_from"):
        parts.append("weight mean of " + ", ".join(
            f"{a['checkpoint']} x {a['weight']:.2f}" for a in meta["averaged_from"]))
    for key, what in (("trained_from", "trained as"), ("init_from", "fine-tuned from"),
                      ("exported_from", "exported from")):
        if meta.get(key):
            parts.append(f"{what} {meta[key]}")
    return "; ".join(parts)


def card_fields(path: str | Path) -> dict[str, str]:
    """The card of the model at ``path`` (``BASE`` or any of its files), field -> text;
    fields the metadata does not hold are left out.

    Raises:
        FileNotFoundError, ValueError: no facefuse model metadata at ``path``.
    """
    meta = read_model_meta(path)
    weights = next((f for f in (graph_path(path), checkpoint_paths(path)[0]) if f.is_file()),
                   None)
    storage = meta.get("weights_storage") or meta.get("weights_dtype") or "float32"
    spec = meta.get("spec") or {}
    data = meta.get("training_data") or []
    fields = {
        "model": model_base(path).name,
        "weights": "missing" if weights is None else
        f"{weights} ({weights.stat().st_size / 2**20:.1f} MB, {storage})",
        "architecture": f"{spec.get('trunk', '?')}, {meta.get('input_size', '?')} px input",
        "tasks": _tasks(meta),
        "training data": ", ".join(f"{d['dataset']} {d['images']:,} images" for d in data
                                   if isinstance(d, dict) and "dataset" in d),
        "recipe": ", ".join(f"{label}{meta[k]}" for k, label in
                            (("recipe", ""), ("epochs", "epochs "), ("split_seed", "split seed "))
                            if meta.get(k) is not None),
        "provenance": _provenance(meta),
        "calibration": ", ".join(f"{task} ({m.get('kind')} map fitted on the {m.get('split')} "
                                 f"split)" for task, m in (meta.get("calibration") or {}).items()),
        "verification threshold": str(meta.get("verification_threshold") or ""),
        "crop margin": str(meta.get("crop_margin") or ""),
        "licence": meta.get("licence") or "not stated",
        "model card": meta.get("model_card") or "",
    }
    return {k: v for k, v in fields.items() if v}


def format_card(fields: dict[str, str]) -> str:
    """The card as a Markdown list, its model's name first."""
    return "\n".join([f"**{fields.get('model', 'model')}**",
                      *(f"- {k}: {v}" for k, v in fields.items() if k != "model")])


def update_card(path: str | Path, **changes: str | None) -> dict:
    """Set card fields (``licence``, ``doc``, ``provenance``; None leaves one as it is) in
    the metadata of the model at ``path``; returns the new metadata.

    Raises:
        ValueError: an unknown field or an empty value; or, as :func:`read_model_meta`,
            no facefuse model metadata at ``path``.
    """
    unknown = set(changes) - set(WRITABLE)
    if unknown:
        raise ValueError(f"unknown card field(s) {sorted(unknown)}; valid: {sorted(WRITABLE)}")
    values = {WRITABLE[k]: v.strip() for k, v in changes.items() if v is not None}
    empty = [k for k, v in changes.items() if v is not None and not v.strip()]
    if empty:
        raise ValueError(f"empty card field(s) {empty}: a card states something")
    return update_model_meta(path, values) if values else read_model_meta(path)
