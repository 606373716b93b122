"""Property tests for the stratified, patient-grouped split."""

from __future__ import annotations

import numpy as np
import pytest

from osteopano.errors import DataError
from osteopano.data.splits import manifest_splits, split_samples

FRACTIONS = (0.5, 0.25, 0.25)


def _random_set(rng: np.random.Generator, grouped: bool) -> tuple[list[str], list[str] | None]:
    n = int(rng.integers(8, 300))
    n_classes = int(rng.integers(2, 4))
    labels = [f"c{k}" for k in rng.integers(0, n_classes, n)]
    if not grouped:
        return labels, None
    groups = [f"p{k}" for k in rng.integers(0, max(2, n // 3), n)]
    return labels, groups


@pytest.mark.parametrize("trial", range(40))
def test_singleton_groups_hit_class_targets_within_one(trial: int) -> None:
    rng = np.random.default_rng(trial)
    labels, _ = _random_set(rng, grouped=False)
    split = split_samples(labels, None, FRACTIONS, seed=trial)
    assert set(split) <= {"train", "val", "test"} and len(split) == len(labels)
    labels_arr = np.asarray(labels)
    for c in np.unique(labels_arr):
        n_c = (labels_arr == c).sum()
        for name, f in zip(("train", "val", "test"), FRACTIONS):
            got = ((labels_arr == c) & (split == name)).sum()
            assert abs(got - f * n_c) < 1.0, (c, name, got, f * n_c)


@pytest.mark.parametrize("trial", range(40))
def test_no_patient_in_two_splits_and_roughly_stratified(trial: int) -> None:
    rng = np.random.default_rng(1000 + trial)
    labels, groups = _random_set(rng, grouped=True)
    split = split_samples(labels, groups, FRACTIONS, seed=trial)
    per_group: dict[str, set[str]] = {}
    for grp, s in zip(groups, split):
        per_group.setdefault(grp, set()).add(s)
    assert all(len(s) == 1 for s in per_group.values())
    # the train share stays near half even with multi-image patients
    sizes = np.bincount(np.unique(groups, return_inverse=True)[1])
    assert abs((split == "train").sum() - 0.5 * len(labels)) <= sizes.max() + 1


def test_same_seed_same_split_other_seed_differs() -> None:
    rng = np.random.default_rng(5)
    labels = [f"c{k}" for k in rng.integers(0, 2, 120)]
    a = split_samples(labels, None, FRACTIONS, seed=3)
    assert (a == split_samples(labels, None, FRACTIONS, seed=3)).all()
    assert (a != split_samples(labels, None, FRACTIONS, seed=4)).any()


def test_bad_fractions_rejected() -> None:
    with pytest.raises(DataError):
        split_samples(["a", "b"], None, (0.5, 0.5, 0.5), seed=0)


def test_manifest_split_used_as_is_or_rejected() -> None:
    assert list(manifest_splits(["train", "val", "test", "train"])) == ["train", "val", "test", "train"]
    assert manifest_splits(["", "", None]) is None
    with pytest.raises(DataError, match="filled for 2 of 3"):
        manifest_splits(["train", "val", ""])
    with pytest.raises(DataError, match="allowed values"):
        manifest_splits(["train", "val", "testing"])
