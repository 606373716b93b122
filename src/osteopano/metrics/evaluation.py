"""Honest evaluation of a binary classifier: metrics with confidence intervals,
threshold rules, an age-only baseline, plots and a study-style report table.

Conventions
-----------
* ``y_true`` is a 0/1 array, 1 = the positive class (osteoporosis); ``prob`` is the
  predicted probability of the positive class. A case is predicted positive when
  ``prob >= threshold`` (the same rule ``sklearn.metrics.roc_curve`` uses).
* Layout of :func:`compute_metrics`' result (JSON-ready, plain Python types):
  every **proportion** (accuracy, sensitivity, specificity, precision, npv) is a
  nested dict ``{"value": float | None, "ci": [lo, hi] | None, "k": int, "n": int}``
  with a 95% Wilson score interval (``value``/``ci`` are None when ``n == 0``,
  e.g. sensitivity when there is no positive case). ``auc`` uses the same
  ``{"value", "ci"}`` shape plus ``method``/``n_boot``/``seed``/``note``. ``f1`` and
  ``brier`` are plain floats (no CI). See :func:`compute_metrics` for all keys.

No torch here: this module runs wherever numpy/scipy/scikit-learn do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import binomtest, rankdata

from osteopano.errors import DataError
from osteopano.io.files import atomic_path

if TYPE_CHECKING:
    from rich.console import Console

CONFIDENCE = 0.95


# --------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class ThresholdRule:
    """How the decision threshold is chosen: ``fixed`` (value = the threshold),
    ``youden`` (value None) or ``sens`` (value = the target sensitivity)."""

    kind: str  # 'fixed' | 'youden' | 'sens'
    value: float | None = None


def parse_threshold_rule(text: str) -> ThresholdRule:
    """Parse ``'0.5'``, ``'youden'`` or ``'sens:0.9'``; raise DataError when malformed or out of range."""
    raw = str(text).strip().lower()
    if raw == "youden":
        return ThresholdRule("youden", None)
    if raw.startswith("sens:"):
        target = _parse_float(raw[5:], text)
        if not 0.0 < target <= 1.0:
            raise DataError(f"threshold rule {text!r}: target sensitivity must be in (0, 1]")
        return ThresholdRule("sens", target)
    value = _parse_float(raw, text)
    if not 0.0 <= value <= 1.0:
        raise DataError(f"threshold rule {text!r}: a fixed threshold must be in [0, 1]")
    return ThresholdRule("fixed", value)


def _parse_float(part: str, text: str) -> float:
    try:
        value = float(part)
    except ValueError:
        raise DataError(
            f"threshold rule {text!r} not understood: use a number such as 0.5, 'youden' or 'sens:0.9'"
        ) from None
    if not math.isfinite(value):
        raise DataError(f"threshold rule {text!r}: the number must be finite")
    return value


def choose_threshold(rule: ThresholdRule, y_true: Any, prob: Any) -> tuple[float, str]:
    """Return ``(threshold, description)`` for ``rule``; the caller passes the VALIDATION split.

    ``youden`` maximises sensitivity + specificity - 1 (ties: the highest threshold);
    ``sens:v`` takes the highest threshold whose sensitivity on the given data is >= v.
    Candidate thresholds are the observed probabilities (``roc_curve``), so the rule
    ``prob >= threshold`` reproduces exactly the operating point that was chosen.
    """
    if rule.kind == "fixed":
        if rule.value is None:
            raise DataError("fixed threshold rule without a value")
        return float(rule.value), f"fixed at {rule.value:g}"
    if rule.kind not in ("youden", "sens"):
        raise DataError(f"unknown threshold rule kind {rule.kind!r}")

    from sklearn.metrics import roc_curve

    y, p = _check_inputs(y_true, prob)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise DataError(
            f"cannot choose a '{rule.kind}' threshold: the validation split (n={len(y)}) has only one class"
        )
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    # Index 0 is sklearn's "+inf" threshold (nothing positive): never a usable operating point.
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]
    if rule.kind == "youden":
        i = int(np.argmax(tpr - fpr))  # first maximum = highest threshold among ties
        desc = (
            f"Youden's J on validation (n={len(y)}; J={tpr[i] - fpr[i]:.3f}, "
            f"sens={tpr[i]:.3f}, spec={1 - fpr[i]:.3f})"
        )
        return float(thresholds[i]), desc
    target = float(rule.value)  # type: ignore[arg-type]
    i = int(np.argmax(tpr >= target - 1e-12))  # tpr is non-decreasing; the last one is 1.0
    desc = (
        f"highest threshold with sensitivity >= {target:g} on validation (n={len(y)}; "
        f"sens={tpr[i]:.3f}, spec={1 - fpr[i]:.3f})"
    )
    return float(thresholds[i]), desc


# --------------------------------------------------------------------------- metrics


def _check_inputs(y_true: Any, prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to (int 0/1 array, float array) of equal, non-zero length."""
    y = np.asarray(y_true)
    p = np.asarray(prob, dtype=float)
    if y.ndim != 1 or p.ndim != 1 or len(y) != len(p):
        raise DataError(f"labels and probabilities must be 1-D of equal length (got {y.shape} and {p.shape})")
    if len(y) == 0:
        raise DataError("no cases to evaluate")
    if not np.isin(y, (0, 1)).all():
        raise DataError("labels must be 0 (negative) or 1 (positive)")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise DataError("probabilities must be finite and in [0, 1]")
    return y.astype(int), p


def wilson_interval(k: int, n: int, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Proportion ``k/n`` with its Wilson score interval (scipy), as the module's proportion dict."""
    if n == 0:
        return {"value": None, "ci": None, "k": 0, "n": 0}
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return {"value": k / n, "ci": [float(ci.low), float(ci.high)], "k": int(k), "n": int(n)}


def _auc_by_ranks(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUC (Mann-Whitney U / (n1*n0), ties count 1/2) along the last axis; vectorised for the bootstrap."""
    ranks = rankdata(scores, axis=-1)
    n_pos = y.sum(axis=-1)
    n_neg = y.shape[-1] - n_pos
    rank_sum = (ranks * y).sum(axis=-1)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def bootstrap_auc_ci(
    y_true: Any, prob: Any, *, seed: int = 0, n_boot: int = 2000, confidence: float = CONFIDENCE
) -> list[float] | None:
    """Percentile CI of the AUC from a stratified bootstrap: ``scipy.stats.bootstrap`` with the positives'
    and the negatives' scores as two independent samples (each resampled separately, so every
    replicate keeps both classes). None when only one class is present."""
    from scipy.stats import bootstrap

    y, p = _check_inputs(y_true, prob)
    pos, neg = p[y == 1], p[y == 0]
    if len(pos) < 2 or len(neg) < 2 or n_boot < 1:  # a class of one cannot be resampled meaningfully
        return None

    def auc(pos_b: np.ndarray, neg_b: np.ndarray, axis: int = -1) -> np.ndarray:
        scores = np.concatenate([pos_b, neg_b], axis=axis)
        labels = np.concatenate([np.ones(pos_b.shape[axis], int), np.zeros(neg_b.shape[axis], int)])
        return _auc_by_ranks(np.broadcast_to(labels, scores.shape), scores)

    res = bootstrap((pos, neg), auc, n_resamples=n_boot, confidence_level=confidence, method="percentile",
                    paired=False, vectorized=True, random_state=np.random.default_rng(seed))
    lo, hi = res.confidence_interval
    return [float(lo), float(hi)]


def _auc_entry(y: np.ndarray, p: np.ndarray, seed: int, n_boot: int) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    entry: dict[str, Any] = {
        "value": None,
        "ci": None,
        "method": "stratified bootstrap, percentile interval",
        "n_boot": int(n_boot),
        "seed": int(seed),
        "note": None,
    }
    if y.min() == y.max():
        entry["note"] = "AUC undefined: only one class present"
        return entry
    entry["value"] = float(roc_auc_score(y, p))
    entry["ci"] = bootstrap_auc_ci(y, p, seed=seed, n_boot=n_boot)
    return entry


def compute_metrics(
    y_true: Any,
    prob: Any,
    threshold: float,
    *,
    class_names: Sequence[str] = ("normal", "osteoporosis"),
    seed: int = 0,
    n_boot: int = 2000,
) -> dict[str, Any]:
    """All test-set metrics at ``threshold`` as a JSON-ready dict.

    Keys: ``n, n_positive, n_negative, threshold, class_names``; proportions
    ``accuracy, sensitivity, specificity, precision (PPV), npv`` as
    ``{"value", "ci", "k", "n"}`` (95% Wilson); ``f1`` (float, positive class);
    ``auc`` ``{"value", "ci", "method", "n_boot", "seed", "note"}`` (AUC from the
    probabilities, 95% stratified-bootstrap percentile CI; value None and a note
    when one class only); ``brier`` (float); ``counts`` ``{"tp","fp","tn","fn"}``;
    ``confusion_matrix`` ``{"labels": class_names, "matrix": [[..],[..]]}`` (rows
    true, columns predicted); ``per_class`` = sklearn ``classification_report``
    (output_dict) keyed by class name plus ``accuracy``, ``macro avg``,
    ``weighted avg``. The caller adds ``threshold_rule``.
    """
    from sklearn.metrics import brier_score_loss, classification_report, confusion_matrix, f1_score

    y, p = _check_inputs(y_true, prob)
    names = [str(c) for c in class_names]
    if len(names) != 2:
        raise DataError(f"two class names expected, got {names}")
    pred = (p >= threshold).astype(int)
    cm = confusion_matrix(y, pred, labels=[0, 1])
    tn, fp, fn, tp = (int(v) for v in cm.ravel())
    report = classification_report(
        y, pred, labels=[0, 1], target_names=names, output_dict=True, zero_division=0
    )
    per_class = {key: _plain(row) for key, row in report.items()}
    return {
        "n": len(y),
        "n_positive": tp + fn,
        "n_negative": tn + fp,
        "threshold": float(threshold),
        "class_names": names,
        "accuracy": wilson_interval(tp + tn, len(y)),
        "sensitivity": wilson_interval(tp, tp + fn),
        "specificity": wilson_interval(tn, tn + fp),
        "precision": wilson_interval(tp, tp + fp),
        "npv": wilson_interval(tn, tn + fn),
        "f1": float(f1_score(y, pred, labels=[0, 1], pos_label=1, zero_division=0)),
        "auc": _auc_entry(y, p, seed, n_boot),
        "brier": float(brier_score_loss(y, p, labels=[0, 1])),
        "counts": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
        "confusion_matrix": {"labels": names, "matrix": cm.tolist()},
        "per_class": per_class,
    }


def _plain(row: Any) -> Any:
    """classification_report entries as plain floats (support as int)."""
    if isinstance(row, dict):
        return {k: int(v) if k == "support" else float(v) for k, v in row.items()}
    return float(row)


def age_baseline_auc(
    age_train: Any, y_train: Any, age_test: Any, y_test: Any, *, seed: int = 0, n_boot: int = 2000
) -> dict[str, Any]:
    """AUC of a logistic regression on age alone: the bar an image model has to clear,
    since osteoporosis prevalence rises steeply with age. Cases with a missing
    (non-finite) age are left out and counted in ``n_missing``.
    Returns ``{"auc", "ci": [lo, hi] | None, "n", "n_missing"}``; ``auc`` None when the
    test cases hold one class only."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a_tr, y_tr = np.asarray(age_train, dtype=float), np.asarray(y_train)
    a_te, y_te = np.asarray(age_test, dtype=float), np.asarray(y_test)
    keep_tr, keep_te = np.isfinite(a_tr), np.isfinite(a_te)
    a_tr, y_tr, a_te, y_te = a_tr[keep_tr], y_tr[keep_tr], a_te[keep_te], y_te[keep_te]
    n_missing = int((~keep_te).sum())
    if len(np.unique(y_tr)) < 2:
        raise DataError("age baseline: the training cases with an age hold only one class")
    if len(a_te) == 0:
        raise DataError("age baseline: no test case has an age")
    model = make_pipeline(StandardScaler(), LogisticRegression(random_state=seed))
    model.fit(a_tr[:, None], y_tr.astype(int))
    prob = model.predict_proba(a_te[:, None])[:, 1]
    y, p = _check_inputs(y_te, prob)
    entry = _auc_entry(y, p, seed, n_boot)
    return {"auc": entry["value"], "ci": entry["ci"], "n": len(y), "n_missing": n_missing}


# --------------------------------------------------------------------------- plots


def save_plots(
    out_dir: str | Path,
    y_true: Any,
    prob: Any,
    threshold: float,
    class_names: Sequence[str] = ("normal", "osteoporosis"),
    *,
    seed: int = 0,
    n_boot: int = 2000,
) -> list[Path]:
    """Write ``confusion.png``, ``roc.png`` and ``calibration.png`` into ``out_dir`` (atomically);
    return their paths. ROC and calibration panels say so when one class only makes them undefined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, p = _check_inputs(y_true, prob)
    names = [str(c) for c in class_names]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "confusion.png": _confusion_figure(plt, y, p, threshold, names),
        "roc.png": _roc_figure(plt, y, p, threshold, names, seed, n_boot),
        "calibration.png": _calibration_figure(plt, y, p, names),
    }
    paths = []
    for name, fig in figures.items():
        path = out / name
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
        plt.close(fig)
        paths.append(path)
    return paths


def _confusion_figure(plt: Any, y: np.ndarray, p: np.ndarray, threshold: float, names: list[str]) -> Any:
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(y, (p >= threshold).astype(int), labels=[0, 1])
    fig, ax = plt.subplots(figsize=(4.8, 4.2), layout="constrained")
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(int(cm.max()), 1))
    for (i, j), count in np.ndenumerate(cm):
        row_total = max(int(cm[i].sum()), 1)
        dark = count > 0.5 * max(int(cm.max()), 1)
        ax.text(j, i, f"{count}\n({count / row_total:.0%} of row)", ha="center", va="center",
                color="white" if dark else "black", fontsize=11)
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names, rotation=90, va="center")
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(f"Confusion matrix (threshold {threshold:.3g}, n={len(y)})", fontsize=10)
    return fig


def _roc_figure(
    plt: Any, y: np.ndarray, p: np.ndarray, threshold: float, names: list[str], seed: int, n_boot: int
) -> Any:
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    auc = _auc_entry(y, p, seed, n_boot)
    if auc["value"] is None:
        ax.text(0.5, 0.5, auc["note"], ha="center", va="center",
                bbox={"facecolor": "white", "edgecolor": "grey"})
    else:
        fpr, tpr, _ = roc_curve(y, p)
        ci = auc["ci"]
        interval = f" (95% CI {ci[0]:.3f}–{ci[1]:.3f})" if ci else ""
        ax.plot(fpr, tpr, lw=2, color="C0", label=f"AUC {auc['value']:.3f}{interval}")
        pred = p >= threshold
        sens = (pred & (y == 1)).sum() / (y == 1).sum()
        spec = (~pred & (y == 0)).sum() / (y == 0).sum()
        ax.plot(1 - spec, sens, "o", ms=9, color="C3",
                label=f"threshold {threshold:.3g}: sens {sens:.2f}, spec {spec:.2f}")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 − specificity (false-positive rate)")
    ax.set_ylabel(f"Sensitivity (recall of {names[1]})")
    ax.set_title(f"ROC curve (n={len(y)}, {int(y.sum())} {names[1]})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def _calibration_figure(plt: Any, y: np.ndarray, p: np.ndarray, names: list[str]) -> Any:
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss

    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(5, 6), sharex=True, height_ratios=[3, 1], layout="constrained"
    )
    frac_pos, mean_pred = calibration_curve(y, p, n_bins=10, strategy="uniform", pos_label=1)
    brier = brier_score_loss(y, p, labels=[0, 1])
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
    ax.plot(mean_pred, frac_pos, "o-", color="C0", label=f"model (Brier {brier:.3f})")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel(f"Observed fraction {names[1]}")
    ax.set_title(f"Reliability diagram (10 equal-width bins, n={len(y)})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    bins = np.linspace(0, 1, 11)
    hist.hist([p[y == 0], p[y == 1]], bins=bins, stacked=True, color=["C0", "C3"], label=names)
    hist.set_xlabel(f"Predicted probability of {names[1]}")
    hist.set_ylabel("Cases")
    hist.yaxis.get_major_locator().set_params(integer=True)
    hist.legend(loc="best", fontsize=8)
    return fig


# --------------------------------------------------------------------------- report


def _fmt_prop(entry: dict[str, Any]) -> str:
    if entry["value"] is None:
        return "n/a (no cases)"
    lo, hi = entry["ci"]
    return f"{entry['value']:.3f} (95% CI {lo:.3f}–{hi:.3f}; {entry['k']}/{entry['n']})"


def print_report(metrics: dict[str, Any], console: Console | None = None, title: str = "Test set") -> None:
    """Print ``metrics`` (from :func:`compute_metrics`) as a table laid out like the seed study's
    Table 1 (classification_report style), then sensitivity/specificity/PPV/NPV with 95% Wilson CIs,
    AUC with its CI, Brier score, the confusion counts and the threshold with how it was chosen."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    per_class = metrics["per_class"]
    table = Table(title=title, title_justify="left")
    table.add_column("", style="bold")
    for col in ("precision", "recall", "f1-score", "support"):
        table.add_column(col, justify="right")

    def row(label: str, values: dict[str, Any], end_section: bool = False) -> None:
        table.add_row(label, f"{values['precision']:.2f}", f"{values['recall']:.2f}",
                      f"{values['f1-score']:.2f}", str(values["support"]), end_section=end_section)

    for i, name in enumerate(metrics["class_names"]):
        row(name, per_class[name], end_section=i == len(metrics["class_names"]) - 1)
    table.add_row("accuracy", "", "", f"{metrics['accuracy']['value']:.2f}", str(metrics["n"]))
    row("macro avg", per_class["macro avg"])
    row("weighted avg", per_class["weighted avg"])
    console.print(table)

    auc = metrics["auc"]
    if auc["value"] is None:
        auc_text = f"n/a — {auc['note']}"
    elif auc["ci"] is None:
        auc_text = f"{auc['value']:.3f}"
    else:
        lo, hi = auc["ci"]
        auc_text = f"{auc['value']:.3f} (95% CI {lo:.3f}–{hi:.3f}; {auc['method']}, n_boot={auc['n_boot']})"
    c = metrics["counts"]
    rule = metrics.get("threshold_rule")
    if isinstance(rule, dict):  # the caller may store the rule as {"rule": ..., "description": ...}
        rule = rule.get("description") or rule.get("rule")
    rule_text = f" — {rule}" if rule else ""
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("Sensitivity", _fmt_prop(metrics["sensitivity"]))
    summary.add_row("Specificity", _fmt_prop(metrics["specificity"]))
    summary.add_row("PPV (precision)", _fmt_prop(metrics["precision"]))
    summary.add_row("NPV", _fmt_prop(metrics["npv"]))
    summary.add_row("Accuracy", _fmt_prop(metrics["accuracy"]))
    summary.add_row("AUC", auc_text)
    summary.add_row("Brier score", f"{metrics['brier']:.3f}")
    summary.add_row("Counts", f"TP {c['tp']}  FP {c['fp']}  TN {c['tn']}  FN {c['fn']}")
    summary.add_row("Threshold", f"{metrics['threshold']:.4g}{rule_text}")
    console.print(summary)
