"""Labels for training and evaluation: a manifest column mapped to two classes, the positive last."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from osteopano.data.dataset import Dataset, Sample
from osteopano.errors import DataError



def parse_label_map(text: str | None) -> dict[str, str]:
    """``'C1=normal,C2=osteoporosis'`` -> ``{'C1': 'normal', 'C2': 'osteoporosis'}``; DataError when malformed."""
    if not text:
        return {}
    mapping: dict[str, str] = {}
    for part in text.split(","):
        raw, sep, cls = (s.strip() for s in part.partition("="))
        if not sep or not raw or not cls:
            raise DataError(f"label map {text!r}: each item must look like VALUE=CLASS (e.g. C1=normal)")
        mapping[raw] = cls
    return mapping


@dataclass
class Labelled:
    """Samples that carry a class, with class indices (``classes`` = [negative, positive])."""

    samples: list[Sample]
    y: np.ndarray
    classes: list[str]
    dropped: int  # samples without a label


def label_samples(ds: Dataset, column: str, label_map: dict[str, str], positive: str) -> Labelled:
    """Apply ``label_map`` to ``column``; exactly two classes, ``positive`` one of them (DataError otherwise)."""
    if not ds.samples:
        raise DataError(f"{ds.root}: no images found")
    raw = ds.labels(column)
    present = sorted({v for v in raw if v is not None})
    if not present:
        raise DataError(f"{ds.root}: no sample has a value in column {column!r}")
    if label_map:
        absent = sorted(set(label_map) - set(present))
        if absent:
            raise DataError(f"label map names {', '.join(absent)}, absent from column {column!r} "
                            f"(values found: {', '.join(present)})")
        unmapped = sorted(set(present) - set(label_map))
        if unmapped:
            raise DataError(f"column {column!r} holds {', '.join(unmapped)}, not covered by the label map")
    keep = [i for i, v in enumerate(raw) if v is not None]
    names = [label_map.get(raw[i], raw[i]) for i in keep]
    classes = sorted(set(names))
    if len(classes) < 2:
        raise DataError(f"{ds.root}: only one class ({classes[0]}) in column {column!r}; two are needed")
    if len(classes) > 2:
        raise DataError(f"{ds.root}: {len(classes)} classes ({', '.join(classes)}) in column {column!r}; "
                        "merge them into two with --label-map, e.g. C1=normal,C2=osteoporosis,C3=osteoporosis")
    if positive not in classes:
        raise DataError(f"positive class {positive!r} is not among the classes {', '.join(classes)} "
                        "(set --positive)")
    classes = [c for c in classes if c != positive] + [positive]
    y = np.asarray([classes.index(n) for n in names], dtype=np.int64)
    return Labelled([ds.samples[i] for i in keep], y, classes, len(raw) - len(keep))


