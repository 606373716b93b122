"""Train / validation / test split: stratified by class, grouped by patient.

``split_samples`` allocates whole patients (groups) greedily: groups are
shuffled with the seed, the biggest go first, and each goes to the split whose
class counts are furthest below their targets (fraction x class total),
measured on the group's own labels. No patient lands in two splits. With one
image per patient this keeps every class's count in every split within one
image of its target: a split can only receive an image while it is below
target, and the one that ends furthest below cannot be more than one short.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from osteopano.errors import DataError

SPLITS = ("train", "val", "test")


def split_samples(labels: Sequence[str], groups: Sequence[str] | None = None,
                  fractions: Sequence[float] = (0.5, 0.25, 0.25), seed: int = 0) -> np.ndarray:
    """Array of 'train' | 'val' | 'test', one per sample; same inputs and seed -> same split."""
    labels = np.asarray([str(v) for v in labels])
    n = len(labels)
    groups = np.arange(n).astype(str) if groups is None else np.asarray([str(g) for g in groups])
    if len(groups) != n:
        raise ValueError(f"{n} labels but {len(groups)} groups")
    frac = np.asarray(fractions, dtype=float)
    if frac.shape != (3,) or (frac < 0).any() or not np.isclose(frac.sum(), 1.0):
        raise DataError(f"split fractions {tuple(fractions)} must be three non-negative numbers summing to 1")
    classes, y = np.unique(labels, return_inverse=True)
    group_ids, g = np.unique(groups, return_inverse=True)
    # counts[group, class]: how many images of each class a patient brings
    counts = np.zeros((len(group_ids), len(classes)))
    np.add.at(counts, (g, y), 1)
    targets = frac[:, None] * counts.sum(axis=0)[None, :]  # (split, class)
    have = np.zeros_like(targets)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(group_ids))
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]
    assigned = np.empty(len(group_ids), dtype=int)
    for gi in order:
        deficit = ((targets - have) * counts[gi][None, :]).sum(axis=1) / counts[gi].sum()
        deficit[frac == 0] = -np.inf
        best = int(np.argmax(deficit))
        assigned[gi] = best
        have[best] += counts[gi]
    return np.asarray(SPLITS)[assigned[g]]


def manifest_splits(values: Sequence[str | None]) -> np.ndarray | None:
    """The manifest's own ``split`` column when every sample has one, None when none has; DataError otherwise."""
    filled = [v for v in values if v]
    if not filled:
        return None
    if len(filled) != len(values):
        raise DataError(f"the manifest's split column is filled for {len(filled)} of {len(values)} samples; "
                        "fill it for all or leave it empty")
    bad = sorted({v for v in filled if v not in SPLITS})
    if bad:
        raise DataError(f"split column holds {', '.join(bad)}; allowed values are train, val, test")
    out = np.asarray(filled)
    missing = [s for s in SPLITS if s not in out]
    if missing:
        raise DataError(f"the manifest's split column has no {', '.join(missing)} sample")
    return out
