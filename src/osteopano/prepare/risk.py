"""A clinical risk index beside the radiographic one: the OST index and a combined referral rule.

**OST** (Osteoporosis Self-assessment Tool; OSTA when used in Asians): Koh LK, Sedrine WB, Torralba TP
et al., "A simple tool to identify Asian women at increased risk of osteoporosis", Osteoporos Int
2001;12:699-705. ``OST = 0.2 x (body weight in kg - age in years)``, truncated to an integer (the
digits after the decimal point are dropped, as the published chart does). Categories (Koh 2001):
high risk below -4, moderate -4 to -1, low above -1. It was derived in Asian postmenopausal women
and has been validated mostly in (postmenopausal) women; evidence and cut-offs in men differ, so
a result for a man carries that caveat.

**Combined referral rule** (``combined_referral``), after the OSTEODENT project's approach of using
the radiographic index together with a clinical risk index (Karayianni K, Horner K, Mitsea A et al.,
"Accuracy in osteoporosis diagnosis of a combination of mandibular cortical width measurement on
dental panoramic radiographs and a clinical risk index (OSIRIS)", Bone 2007;40:223-229; Horner K,
Allen P, Graham J et al., "The relationship between the OSTEODENT index and hip fracture risk
assessment using FRAX", Oral Surg Oral Med Oral Pathol Oral Radiol Endod 2010;110:243-249):

- ``refer``: the MCW is below the threshold (default 3 mm: Devlin H, Horner K, "Mandibular
  radiomorphometric indices in the diagnosis of reduced skeletal bone mineral density", Osteoporos
  Int 2002;13:373-378; Taguchi A et al.) OR the OST is high risk;
- ``consider``: the OST is moderate and the MCW lies within ``CONSIDER_MARGIN_MM`` (0.5 mm) above
  the threshold;
- ``no``: neither (both the MCW in mm and the OST are known);
- None: not enough to decide: the MCW is not below the threshold and the OST is unknown (age or
  weight missing), or the MCW is not known in mm (spacing unknown, measurement failed) and the OST
  is not high.

osteopano did NOT validate this combination (OSTEODENT combined MCW with OSIRIS, not OST); it is a
prompt to consider a bone-density assessment, never a diagnosis. Pure Python (no numpy).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osteopano.errors import DataError
from osteopano.io.spacing import manifest_rows
from osteopano.io.images import PLAUSIBLE_WEIGHT_KG, dicom_patient, parse_dicom_age  # noqa: F401  (read at decoding)

HIGH_BELOW = -4       # OST < -4: high risk (Koh 2001)
LOW_ABOVE = -1        # OST > -1: low risk; -4..-1: moderate
CONSIDER_MARGIN_MM = 0.5
CATEGORIES = ("high", "moderate", "low")
REFERRALS = ("refer", "consider", "no")
SOURCES = ("option", "manifest", "file")
MANIFEST_COLUMNS = {"age": "age", "sex": "sex", "weight_kg": "weight_kg"}
PLAUSIBLE_AGE = (0.0, 130.0)
_SEX = {"f": "F", "female": "F", "w": "F", "m": "M", "male": "M", "o": "O", "other": "O"}


@dataclass(frozen=True)
class RiskIndex:
    """The OST of one patient and where its inputs came from (never logged: they are patient data).

    ``ost``: the truncated index (None when age or weight is missing); ``raw``: 0.2 x (weight - age)
    before truncation; ``category``: 'high' | 'moderate' | 'low' | None; ``sources``: input -> 'option'
    | 'manifest' | 'file'; ``combined_referral``: the combined rule's outcome (``REFERRALS`` or None);
    ``notes``: caveats (a man, a missing input).
    """

    ost: int | None
    raw: float | None
    category: str | None
    age_years: float | None = field(default=None, repr=False)
    sex: str | None = field(default=None, repr=False)
    weight_kg: float | None = field(default=None, repr=False)
    sources: dict[str, str] = field(default_factory=dict)
    combined_referral: str | None = None
    notes: tuple[str, ...] = ()

    def to_row(self) -> dict[str, Any]:
        return {"ost_index": self.ost, "ost_category": self.category, "combined_referral": self.combined_referral}

    @property
    def source(self) -> str:
        """One line: which input came from where ('age: file, weight_kg: option')."""
        return ", ".join(f"{k}: {v}" for k, v in self.sources.items())


RISK_COLUMNS = ("ost_index", "ost_category", "combined_referral")


def ost_index(weight_kg: float, age_years: float) -> int:
    """``0.2 x (weight - age)`` truncated towards zero, as the published OST chart (Koh 2001)."""
    return math.trunc(round(0.2 * (float(weight_kg) - float(age_years)), 9))


def ost_category(ost: float) -> str:
    """'high' (< -4), 'moderate' (-4 to -1) or 'low' (> -1)."""
    if ost < HIGH_BELOW:
        return "high"
    return "low" if ost > LOW_ABOVE else "moderate"


def combined_referral(mcw_mm: float | None, category: str | None, threshold_mm: float = 3.0) -> str | None:
    """The combined rule of MCW and OST (module docstring); None when it cannot decide."""
    low_mcw = mcw_mm is not None and mcw_mm < threshold_mm
    if low_mcw or category == "high":
        return "refer"
    if category is None or mcw_mm is None:
        return None
    if category == "moderate" and mcw_mm <= threshold_mm + CONSIDER_MARGIN_MM:
        return "consider"
    return "no"


def assess(values: Mapping[str, Any] | None, *, mcw_mm: float | None = None, threshold_mm: float = 3.0,
           sources: Mapping[str, str] | None = None, name: str = "image") -> RiskIndex | None:
    """The RiskIndex from ``values`` (age, sex, weight_kg; checked by ``clean_values``); None when no
    value at all was given."""
    clean = clean_values(values, name)
    if not clean:
        return None
    age, weight, sex = clean.get("age"), clean.get("weight_kg"), clean.get("sex")
    notes: list[str] = []
    ost = raw = category = None
    if age is None or weight is None:
        notes.append("the OST needs both age and weight")
    else:
        raw = round(0.2 * (weight - age), 3)
        ost = ost_index(weight, age)
        category = ost_category(ost)
        if sex == "M" or sex == "O":
            notes.append("the OST was derived in women; its cut-offs are less established in men")
        elif sex is None:
            notes.append("sex not given: the OST was derived in postmenopausal women")
    return RiskIndex(ost=ost, raw=raw, category=category, age_years=age, sex=sex, weight_kg=weight,
                     sources={k: (sources or {}).get(k, "option") for k in clean},
                     combined_referral=combined_referral(mcw_mm, category, threshold_mm), notes=tuple(notes))


def clean_values(values: Mapping[str, Any] | None, name: str = "image") -> dict[str, Any]:
    """age (years) and weight_kg as floats in their plausible range, sex as F/M/O; empty values are
    left out; DataError (one line naming ``name``) for a value that is not understood."""
    out: dict[str, Any] = {}
    for key, (lo, hi) in (("age", PLAUSIBLE_AGE), ("weight_kg", PLAUSIBLE_WEIGHT_KG)):
        raw = (values or {}).get(key)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        try:
            value = float(str(raw).strip().replace(",", "."))
        except ValueError:
            raise DataError(f"{name}: {key} {raw!r} is not a number") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise DataError(f"{name}: {key} {value:g} is implausible (expected {lo:g}-{hi:g})")
        out[key] = value
    raw_sex = (values or {}).get("sex")
    if raw_sex is not None and str(raw_sex).strip():
        sex = _SEX.get(str(raw_sex).strip().lower())
        if sex is None:
            raise DataError(f"{name}: sex {raw_sex!r} not understood (use F or M)")
        out["sex"] = sex
    return out


def merge_values(*layers: tuple[str, Mapping[str, Any] | None]) -> tuple[dict[str, Any], dict[str, str]]:
    """Per input, the first layer that has it: ``merge_values(('option', o), ('manifest', m), ('file', f))``
    -> (values, sources). The same precedence as the pixel spacing (``osteopano.io.spacing``)."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, layer in layers:
        for key in MANIFEST_COLUMNS:
            raw = (layer or {}).get(key)
            if key in values or raw is None or (isinstance(raw, str) and not raw.strip()):
                continue
            values[key], sources[key] = raw, source
    return values, sources


def manifest_values(files: Iterable[Path]) -> dict[Path, dict[str, str]]:
    """``age``, ``sex``, ``weight_kg`` of images listed in a manifest (``osteopano.io.spacing.manifest_rows``):
    resolved path -> the non-empty values."""
    found: dict[Path, dict[str, str]] = {}
    for path, row in manifest_rows(files).items():
        values = {k: str(row[c]).strip() for k, c in MANIFEST_COLUMNS.items()
                  if row.get(c) is not None and str(row[c]).strip()}
        if values:
            found[path] = values
    return found
