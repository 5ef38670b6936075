"""Paths the tests share, wherever the test file sits: the repository, the expected
predictions of the shipped model, and the real datasets beside the checkout."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_EXPECTED = ROOT / "tests" / "data" / "shipped_expected.json"
SHARED_DATA = ROOT.parent / "shared" / "data"
