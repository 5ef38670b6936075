"""The registry of experiments: a protocol's config schema and the function that runs it,
under the name a config's ``kind`` field gives. The protocols register themselves
(``facefuse.experiments.dmm_cnn`` and its neighbours); importing ``facefuse.experiments``
loads them all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facefuse.registry import Registry


@dataclass(frozen=True)
class Experiment:
    """A protocol: its config schema and the function that runs it."""

    config_class: type
    run: Callable[..., Path]


EXPERIMENTS: Registry[Experiment] = Registry("experiment")


def experiment_kind(config_path: str | Path) -> str:
    """The ``kind`` field of a config file (or of the file it extends)."""
    from facefuse.config_files import config_document  # ConfigError is a ValueError

    path = Path(config_path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    data: Any = config_document(path)
    if "kind" not in data:
        raise ValueError(f"{path}: a config needs a 'kind' field naming the experiment; valid: "
                         f"{', '.join(EXPERIMENTS.names())}")
    return str(data["kind"])
