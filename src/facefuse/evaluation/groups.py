"""Demographic groups for per-group breakdowns (the model card's UTKFace tables)."""

from __future__ import annotations

import numpy as np

from facefuse.tasks import GENDERS, RACES, age_group

AGE_GROUP_NAMES = ("<18", "18-59", "60+")


def demographic_groups(gender: np.ndarray, race: np.ndarray, age: np.ndarray
                       ) -> list[tuple[str, np.ndarray]]:
    """``(name, mask)`` for everyone, then each true gender, race and age group (<18, 18-59,
    60+), in that order; masks are boolean over the given faces. Groups with no face are
    kept (an all-False mask), so tables from different runs line up row by row.

    ``gender`` and ``race`` are class indices into :data:`facefuse.tasks.GENDERS` and
    :data:`facefuse.tasks.RACES`; ``age`` is in years.
    """
    gender, race, age = (np.asarray(a) for a in (gender, race, age))
    if not gender.shape == race.shape == age.shape or gender.ndim != 1:
        raise ValueError(f"gender, race and age must be 1-d arrays of one length, got shapes "
                         f"{gender.shape}, {race.shape} and {age.shape}")
    groups = [("all", np.ones(len(gender), bool))]
    groups += [(f"gender {g}", gender == k) for k, g in enumerate(GENDERS)]
    groups += [(f"race {r}", race == k) for k, r in enumerate(RACES)]
    ages = age_group(age)
    groups += [(f"age {n}", ages == k) for k, n in enumerate(AGE_GROUP_NAMES)]
    return groups
