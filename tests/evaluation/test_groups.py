"""Demographic groups for the per-group breakdowns: right faces in each group, every group
listed even when empty, and mismatched inputs refused."""

import numpy as np
import pytest

from facefuse.evaluation.groups import demographic_groups


def test_each_face_lands_in_its_gender_race_and_age_group():
    gender = np.array([0, 1, 1, 0])
    race = np.array([0, 2, 2, 4])
    age = np.array([17.9, 18.0, 59.5, 60.0])
    groups = dict(demographic_groups(gender, race, age))
    assert list(groups) == ["all", "gender male", "gender female", "race white",
                            "race black", "race asian", "race indian", "race others",
                            "age <18", "age 18-59", "age 60+"]
    assert groups["all"].tolist() == [True] * 4
    assert groups["gender female"].tolist() == [False, True, True, False]
    assert groups["race asian"].tolist() == [False, True, True, False]
    assert groups["race others"].tolist() == [False, False, False, True]
    assert groups["age <18"].tolist() == [True, False, False, False]
    assert groups["age 18-59"].tolist() == [False, True, True, False]
    assert groups["age 60+"].tolist() == [False, False, False, True]


def test_empty_groups_are_kept_and_a_missing_age_is_in_no_age_group():
    groups = dict(demographic_groups(np.array([0]), np.array([1]), np.array([np.nan])))
    assert not groups["gender female"].any() and not groups["race white"].any()
    assert not any(groups[f"age {n}"].any() for n in ("<18", "18-59", "60+"))
    assert groups["race black"].tolist() == [True]


@pytest.mark.parametrize("shapes", [((3,), (3,), (2,)), ((2, 2), (2, 2), (2, 2))])
def test_mismatched_or_non_flat_inputs_are_refused(shapes):
    g, r, a = (np.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match="1-d arrays of one length"):
        demographic_groups(g, r, a)
