from __future__ import annotations

from pathlib import Path

import pytest

from tests.paths import SHARED_DATA


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    """A data root holding every fake dataset in its native layout."""
    from tests.fakes import write_all

    return write_all(tmp_path / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets beside the checkout (present in CI)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def single_threaded_torch() -> None:
    """The tests' models are tiny: one thread avoids OpenMP spin contention on small CI
    machines (several times faster there). The core install has no torch: nothing to set."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)
