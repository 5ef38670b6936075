"""Argument types for the command line (a bad value is a usage error naming the option, not
a traceback from deep inside a run) and the one-line report of a setup mistake."""

from __future__ import annotations

import argparse
import math
import sys

# what building a model, detector or analyzer, or listing inputs, raises for a user's mistake
# (a missing file, a bad value, an unknown detector, device or task, an optional package not
# installed): one line, exit status 2
SETUP_ERRORS = (FileNotFoundError, ValueError, KeyError, ImportError)


def report(exc: BaseException) -> None:
    """One line on standard error (a KeyError's message without its repr quotes)."""
    print(f"facefuse: {exc.args[0] if exc.args else exc}", file=sys.stderr)


def _whole(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    return _whole(text, 1)


def non_negative_int(text: str) -> int:
    """An integer of at least 0."""
    return _whole(text, 0)


def face_choice(text: str) -> str | int:
    """``largest`` or a face number (0 or more), for ``--face``."""
    from facefuse.gallery.enrol import parse_face_choice

    try:
        return parse_face_choice(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value:g}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number of at least 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value:g}")
    return value


def share(text: str) -> float:
    """A finite number within [0, 1] (a crop margin: a share of the face box side)."""
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {value:g}")
    return value
