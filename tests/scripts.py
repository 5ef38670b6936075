"""Load the repository's scripts (tools/, benchmarks/) as modules, for the tests that call
their functions."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from tests.paths import ROOT


def load_script(relative: str) -> ModuleType:
    """The script at ``relative`` (to the repository root), imported under its file name."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
