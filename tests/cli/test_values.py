"""The command line's argument types: good values pass through, bad ones are usage errors."""

from __future__ import annotations

import argparse

import pytest

from facefuse.cli.values import non_negative_int, positive_float, positive_int, share


def test_good_values_come_back_typed() -> None:
    assert positive_int("3") == 3 and isinstance(positive_int("3"), int)
    assert non_negative_int("0") == 0
    assert positive_float("0.5") == 0.5 and positive_float("25") == 25.0
    assert share("0") == 0.0 and share("1") == 1.0 and share("0.2") == 0.2


@pytest.mark.parametrize(("parse", "text", "says"), [
    (positive_int, "0", "must be at least 1, got 0"),
    (positive_int, "-4", "must be at least 1"),
    (positive_int, "1.5", "expected a whole number, got '1.5'"),
    (positive_int, "two", "expected a whole number"),
    (non_negative_int, "-1", "must be at least 0, got -1"),
    (non_negative_int, "", "expected a whole number"),
    (positive_float, "0", "must be above 0, got 0"),
    (positive_float, "-2.5", "must be above 0"),
    (positive_float, "nan", "expected a finite number"),
    (positive_float, "inf", "expected a finite number"),
    (positive_float, "fast", "expected a number, got 'fast'"),
    (share, "1.01", "must be within [0, 1], got 1.01"),
    (share, "-0.1", "must be within [0, 1]"),
    (share, "nan", "expected a finite number"),
])
def test_bad_values_are_argument_errors(parse, text: str, says: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as err:
        parse(text)
    assert says in str(err.value)
