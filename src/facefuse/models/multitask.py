"""A trunk plus one head per task, described by a :class:`ModelSpec` that checkpoints keep."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from facefuse.models.heads import HEADS
from facefuse.models.trunks import build_trunk


@dataclass(frozen=True)
class HeadSpec:
    """One task head: output width, hidden layers, dropout, and the head kind (a name in
    ``facefuse.models.heads.HEADS``) with its options."""

    outputs: int
    hidden: tuple[int, ...] = ()
    dropout: float = 0.0
    kind: str = "mlp"
    options: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model: trunk name and options, heads per task."""

    trunk: str
    trunk_options: dict[str, object] = field(default_factory=dict)
    heads: dict[str, HeadSpec] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        heads = {k: HeadSpec(v["outputs"], tuple(v.get("hidden", ())), v.get("dropout", 0.0),
                             v.get("kind", "mlp"), dict(v.get("options", {})))
                 for k, v in d["heads"].items()}
        options = {k: tuple(v) if isinstance(v, list) else v
                   for k, v in d.get("trunk_options", {}).items()}
        return cls(d["trunk"], options, heads)


class MultiTaskModel(nn.Module):
    """``forward(images)`` returns a dict task -> output; ``forward_features`` the trunk's
    vector."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.trunk = build_trunk(spec.trunk, **spec.trunk_options)
        self.heads = nn.ModuleDict({
            task: HEADS.get(h.kind)(self.trunk.feature_dim, h.outputs, h.hidden, h.dropout,
                                    **h.options)
            for task, h in spec.heads.items()})

    @property
    def feature_dim(self) -> int:
        return int(self.trunk.feature_dim)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk.forward_features(images)

    def identity_vector(self, features: torch.Tensor) -> torch.Tensor:
        """The identity embedding before normalisation, from trunk ``features``: the
        identity head's embedding (cosine and margin heads), else its last hidden layer,
        else the trunk vector itself. What ``verify`` and ``search`` compare (unit length)."""
        head = self.heads["identity"] if "identity" in self.heads else None
        if head is not None and hasattr(head, "embedding"):
            return head.embedding(features)
        if head is not None and hasattr(head, "net") and len(head.net) > 1:
            return head.net[:-1](features)
        return features

    def forward(self, images: torch.Tensor, with_embedding: bool = False
                ) -> dict[str, torch.Tensor]:
        """Every head's output; with ``with_embedding`` also ``"identity_embedding"``, the
        identity head's normalised embedding from the same trunk pass (for distillation)."""
        features = self.forward_features(images)
        out = {task: head(features) for task, head in self.heads.items()}
        if with_embedding:
            head = self.heads["identity"] if "identity" in self.heads else None
            if head is None or not hasattr(head, "embedding"):
                raise ValueError("with_embedding needs an identity head with an embedding "
                                 "(a cosine/margin head)")
            out["identity_embedding"] = head.embedding(features)
        return out


def build_model(spec: ModelSpec) -> MultiTaskModel:
    """Build a model from its spec."""
    return MultiTaskModel(spec)
