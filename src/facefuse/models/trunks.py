"""The trunk contract and registry.

A trunk is an ``nn.Module`` with an integer ``feature_dim`` and
``forward_features(images) -> (N, feature_dim)``; heads, feature extraction, cross-task tables
and fusion all work on that vector, whatever the architecture. Register a builder with
``@TRUNKS.register("name")``; it takes keyword options and returns the trunk.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from facefuse.registry import Registry

TRUNKS: Registry[Callable[..., nn.Module]] = Registry("trunk")


def build_trunk(name: str, **options: object) -> nn.Module:
    """Build registered trunk ``name``; checks the contract."""
    trunk = TRUNKS.get(name)(**options)
    if not isinstance(getattr(trunk, "feature_dim", None), int):
        raise TypeError(f"trunk {name!r} has no integer feature_dim")
    if not callable(getattr(trunk, "forward_features", None)):
        raise TypeError(f"trunk {name!r} has no forward_features method")
    return trunk
