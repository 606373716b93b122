"""Clinical covariates for the model's head (numpy only).

``encode_covariates`` turns {'age': 67, 'sex': 'F'} into the head's extra inputs: age standardised
with the training split's mean/std (``covariate_stats``), sex one-hot (F, M). Missing values are NOT
imputed: training leaves out (and counts) samples lacking a covariate the model uses; prediction
raises ``CovariateError`` for that image (a screening decision should not silently assume an age).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from osteopano.errors import OsteopanoError

COVARIATES = ("age", "sex")
SEX_CODES = {"f": "F", "female": "F", "w": "F", "m": "M", "male": "M"}


class CovariateError(OsteopanoError):
    """A covariate the model needs is missing or unreadable."""


def covariate_names(covariates: Sequence[str]) -> list[str]:
    """The head's extra input columns for the chosen covariates (age -> age; sex -> sex_F, sex_M)."""
    names: list[str] = []
    for c in covariates:
        names += ["sex_F", "sex_M"] if c == "sex" else [c]
    return names


def parse_covariates(text: str | None) -> list[str]:
    """``'age,sex'`` -> ['age', 'sex']; CovariateError for an unknown name."""
    names = [c.strip().lower() for c in (text or "").split(",") if c.strip()]
    unknown = [c for c in names if c not in COVARIATES]
    if unknown:
        raise CovariateError(f"unknown covariate(s) {', '.join(unknown)} (available: {', '.join(COVARIATES)})")
    return list(dict.fromkeys(names))


def encode_covariates(covariates: Sequence[str], values: Mapping[str, Any] | None, stats: Mapping[str, Any],
                      name: str = "image") -> np.ndarray:
    """float32 vector (``covariate_names`` order) for one case; CovariateError when a value is missing."""
    values = values or {}
    out: list[float] = []
    for c in covariates:
        raw = values.get(c)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            raise CovariateError(f"{name}: the model needs the covariate {c!r} and none was given "
                                 f"(predict --{c} ..., or covariates={{'{c}': ...}})")
        if c == "sex":
            sex = SEX_CODES.get(str(raw).strip().lower())
            if sex is None:
                raise CovariateError(f"{name}: sex {raw!r} not understood (use F or M)")
            out += [float(sex == "F"), float(sex == "M")]
        else:
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise CovariateError(f"{name}: {c} {raw!r} is not a number") from None
            if not np.isfinite(value):
                raise CovariateError(f"{name}: {c} {raw!r} is not a number")
            out.append((value - stats[c]["mean"]) / stats[c]["std"])
    return np.asarray(out, np.float32)


def covariate_stats(covariates: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean/std of each numeric covariate over ``rows`` (the training split), for standardisation."""
    stats: dict[str, Any] = {}
    for c in covariates:
        if c == "sex":
            continue
        values = np.asarray([float(r[c]) for r in rows], float)
        std = float(values.std())
        stats[c] = {"mean": float(values.mean()), "std": std if std > 0 else 1.0}
    return stats
