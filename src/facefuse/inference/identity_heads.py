"""Heads on the identity networks' features for the other tasks (age, gender, race, emotion,
attributes), fused late with the multi-task model's own heads: the analyzer's plug-in that
brings identity pre-training to every task (``docs/MODEL_CARD.md``, "Heads on the identity
networks' features"); then, optionally, *tails*: fine-tuned copies of a network's last blocks
(ONNX graphs, :class:`facefuse.runtime.graph_head.GraphHead`) on the map it gives at the
cut, each fused with the prediction of its task made before it (``docs/MODEL_CARD.md``,
"Partial fine-tuning").

A heads file is ``NAME.json`` (format :data:`HEADS_FORMAT`) beside ``NAME.safetensors``
(numpy). Per task: which features it reads (``<network>:features`` or ``<network>:<block>``,
as :meth:`FusedIdentity.describe` names them), their standardisation, a linear map and what
turns its output into a prediction (``softmax``, ``sigmoid`` or ``linear`` within a range),
and the late fusion with the model's own output: ``fusion_weight`` w is the identity head's
share, in a weighted geometric mean of class probabilities, or a weighted mean of ages or
attribute probabilities. Fitted by :mod:`facefuse.train.identity_heads`. A tail (the
optional list ``tails``: ``task``, ``graph`` beside the JSON, ``feature``, ``fusion_weight``,
``range``) is written by :mod:`facefuse.train.identity_tail`. numpy and ONNX Runtime only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from facefuse.identity_format import read_described_json
from facefuse.runtime.decoding import OutputDecoder, sigmoid, softmax
from facefuse.runtime.graph_head import GraphHead
from facefuse.runtime.linear_heads import HEADS_FORMAT, LinearHead, fuse_scores


class IdentityHeads:
    """Every task head of a heads file, and their fusion into a model's predictions.

    Args:
        heads: the heads, by task.
        meta: the JSON's other fields (provenance, figures).
        tails: graph heads of regression tasks, applied after ``heads`` in this order.
    """

    def __init__(self, heads: Mapping[str, LinearHead], meta: dict | None = None,
                 tails: list[GraphHead] | None = None) -> None:
        self.heads = dict(heads)
        self.meta = dict(meta or {})
        self.tails = list(tails or [])

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys([*self.heads, *(t.task for t in self.tails)]))

    @property
    def features(self) -> set[str]:
        """Every feature block a head or a tail reads."""
        return {f for h in self.heads.values() for f in h.features} \
            | {t.feature for t in self.tails}

    @classmethod
    def read(cls, path: str | Path) -> IdentityHeads:
        """The heads of ``path`` (``NAME.json`` beside ``NAME.safetensors``).

        Raises:
            FileNotFoundError: either file is missing.
            ValueError: not a heads file, or a head that does not fit its description.
        """
        from safetensors.numpy import load_file

        path = Path(path)
        info = path if path.suffix == ".json" else path.with_suffix(".json")
        doc = read_described_json(info, HEADS_FORMAT, "an identity heads description")
        weights = info.with_suffix(".safetensors")
        if not weights.is_file():
            raise FileNotFoundError(f"{info}: its weights {weights} are missing")
        tensors = load_file(str(weights))
        heads = {}
        try:
            for task, d in doc["tasks"].items():
                rng = d.get("range")
                heads[task] = LinearHead(
                    task, tuple(d["features"]), *(tensors[f"{task}.{k}"].astype(np.float64)
                                                  for k in ("mean", "scale", "weight", "bias")),
                    str(d["output"]), tuple(d.get("labels") or ()), float(d["fusion_weight"]),
                    None if rng is None else (float(rng[0]), float(rng[1])),
                    float(d.get("threshold", 0.5)))
            tails = [cls._tail(info, d) for d in doc.get("tails") or []]
        except KeyError as exc:
            raise ValueError(f"{info}: a field or tensor is missing ({exc})") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{info}: {exc}") from None
        return cls(heads, {k: v for k, v in doc.items() if k not in ("tasks", "tails")}, tails)

    @staticmethod
    def _tail(info: Path, d: dict) -> GraphHead:
        graph = str(d["graph"])
        if Path(graph).name != graph:
            raise ValueError(f"tail graph {graph!r} is not a plain file name")
        if d.get("output", "linear") != "linear":
            raise ValueError(f"the {d['task']} tail: only linear outputs (a value) are "
                             f"supported, got {d['output']!r}")
        rng = d.get("range")
        return GraphHead(str(d["task"]), str(d["feature"]), info.parent / graph,
                         float(d["fusion_weight"]),
                         None if rng is None else (float(rng[0]), float(rng[1])))

    def apply(self, predictions: list[dict[str, Any]], features: Mapping[str, np.ndarray],
              outputs: Mapping[str, np.ndarray], decoder: OutputDecoder,
              tasks: list[str]) -> None:
        """Replace each face's prediction of every task in ``tasks`` that has a head here
        by the fusion of the head's with the model's own (from its raw ``outputs``, as
        ``decoder`` decodes them; a task the model lacks gets the head's alone), in place."""
        for task, head in self.heads.items():
            if task not in tasks:
                continue
            ident = head.scores(features)
            own = None
            if task in outputs:
                raw = np.asarray(outputs[task], np.float64)
                if head.output == "softmax":
                    own = softmax(raw)
                elif head.output == "sigmoid":
                    own = sigmoid(raw)
                else:
                    own = decoder.regression_values(task, raw)
            w = head.fusion_weight if own is not None else 1.0
            fused = ident if own is None or w == 1.0 else \
                fuse_scores(head.output, ident, own, w)
            for p, s in zip(predictions, fused, strict=True):
                p.update(self._decoded(head, s))
        for tail in self.tails:
            if tail.task not in tasks:
                continue
            values = tail.values(features)
            for p, v in zip(predictions, values, strict=True):
                before = p.get(tail.task)
                w = tail.fusion_weight if before is not None else 1.0
                p[tail.task] = round(float(w * v + (1 - w) * (before or 0.0)), 2)

    @staticmethod
    def _decoded(head: LinearHead, score: np.ndarray) -> dict[str, Any]:
        """The prediction keys of one face, as :class:`FaceModel` decodes them."""
        task = head.task
        if head.output == "linear":
            return {task: round(float(score), 2)}
        if head.output == "softmax":
            return {task: {"label": head.labels[int(np.argmax(score))],
                           "probabilities": {n: round(float(v), 4) for n, v in
                                             zip(head.labels, score, strict=True)}}}
        return {task: {n: bool(v >= head.threshold)
                       for n, v in zip(head.labels, score, strict=True)},
                f"{task}_scores": {n: round(float(v), 4)
                                   for n, v in zip(head.labels, score, strict=True)}}
