"""Tests for osteopano.metrics.evaluation: metrics against hand-computed values, Wilson and
bootstrap intervals, threshold rules, the age baseline, plots and the report."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from osteopano.errors import DataError
from osteopano.metrics.evaluation import (
    ThresholdRule,
    age_baseline_auc,
    bootstrap_auc_ci,
    choose_threshold,
    compute_metrics,
    parse_threshold_rule,
    print_report,
    save_plots,
    wilson_interval,
)

# 10 cases, threshold 0.5 (prob >= 0.5 is positive). By hand:
# positives 0.9 0.8 0.6 -> TP=3, 0.3 -> FN=1; negatives 0.7 0.5 -> FP=2, 0.4 0.2 0.1 0.05 -> TN=4.
Y10 = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
P10 = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.5, 0.4, 0.2, 0.1, 0.05])


def _random_scores(n: int, seed: int, shift: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    score = rng.normal(shift * y, 1.0)
    return y, 1 / (1 + np.exp(-score))


def test_hand_computed_ten_cases() -> None:
    m = compute_metrics(Y10, P10, 0.5, n_boot=200)
    assert m["counts"] == {"tp": 3, "fp": 2, "tn": 4, "fn": 1}
    assert m["confusion_matrix"]["matrix"] == [[4, 2], [1, 3]]  # rows true, cols predicted
    assert m["confusion_matrix"]["labels"] == ["normal", "osteoporosis"]
    assert (m["n"], m["n_positive"], m["n_negative"]) == (10, 4, 6)
    assert m["accuracy"]["value"] == pytest.approx(7 / 10)
    assert m["sensitivity"]["value"] == pytest.approx(3 / 4)
    assert m["specificity"]["value"] == pytest.approx(4 / 6)
    assert m["precision"]["value"] == pytest.approx(3 / 5)
    assert m["npv"]["value"] == pytest.approx(4 / 5)
    assert m["f1"] == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))
    assert (m["sensitivity"]["k"], m["sensitivity"]["n"]) == (3, 4)
    # Brier: mean squared error of the probabilities.
    assert m["brier"] == pytest.approx(np.mean((P10 - Y10) ** 2))
    # Per-class report, like sklearn's classification_report.
    pc = m["per_class"]
    assert pc["normal"]["recall"] == pytest.approx(4 / 6)
    assert pc["osteoporosis"]["precision"] == pytest.approx(3 / 5)
    assert pc["osteoporosis"]["support"] == 4 and pc["normal"]["support"] == 6
    assert pc["macro avg"]["recall"] == pytest.approx((4 / 6 + 3 / 4) / 2)
    assert pc["weighted avg"]["recall"] == pytest.approx(0.6 * 4 / 6 + 0.4 * 3 / 4)
    assert pc["accuracy"] == pytest.approx(0.7)


def test_metrics_are_json_ready() -> None:
    import json

    m = compute_metrics(Y10, P10, 0.5, n_boot=50)
    assert json.loads(json.dumps(m)) == m


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [(8, 10, 0.490, 0.943), (0, 10, 0.0, 0.278), (10, 10, 0.722, 1.0)],
)
def test_wilson_interval_textbook(k: int, n: int, lo: float, hi: float) -> None:
    entry = wilson_interval(k, n)
    assert entry["value"] == pytest.approx(k / n)
    assert entry["ci"][0] == pytest.approx(lo, abs=5e-4)
    assert entry["ci"][1] == pytest.approx(hi, abs=5e-4)


def test_wilson_used_for_sensitivity() -> None:
    y = np.array([1] * 10 + [0] * 5)
    p = np.array([0.9] * 8 + [0.1] * 2 + [0.2] * 5)
    sens = compute_metrics(y, p, 0.5, n_boot=50)["sensitivity"]
    assert (sens["k"], sens["n"]) == (8, 10)
    assert sens["ci"] == pytest.approx([0.490, 0.943], abs=5e-4)


def test_auc_equals_pairwise_count_with_ties() -> None:
    # Positives 0.8 0.5 0.5 vs negatives 0.5 0.2 0.5: by hand 3 + 2 + 2 = 7 wins (ties = 1/2) of 9.
    y = np.array([1, 1, 1, 0, 0, 0])
    p = np.array([0.8, 0.5, 0.5, 0.5, 0.2, 0.5])
    assert compute_metrics(y, p, 0.5, n_boot=50)["auc"]["value"] == pytest.approx(7 / 9)

    y, p = _random_scores(60, seed=3)
    p = np.round(p, 1)  # many ties
    pos, neg = p[y == 1], p[y == 0]
    wins = sum((a > b) + 0.5 * (a == b) for a, b in itertools.product(pos, neg))
    assert compute_metrics(y, p, 0.5, n_boot=50)["auc"]["value"] == pytest.approx(wins / (len(pos) * len(neg)))


def test_bootstrap_auc_ci() -> None:
    y, p = _random_scores(80, seed=1)
    m = compute_metrics(y, p, 0.5, seed=7, n_boot=1000)
    lo, hi = m["auc"]["ci"]
    assert lo < m["auc"]["value"] < hi
    assert compute_metrics(y, p, 0.5, seed=7, n_boot=1000)["auc"]["ci"] == [lo, hi]
    assert bootstrap_auc_ci(y, p, seed=8, n_boot=1000) != [lo, hi]

    y_big, p_big = _random_scores(800, seed=1)
    lo_big, hi_big = bootstrap_auc_ci(y_big, p_big, seed=7, n_boot=1000)
    assert hi_big - lo_big < 0.6 * (hi - lo)


def test_parse_threshold_rule() -> None:
    assert parse_threshold_rule("0.5") == ThresholdRule("fixed", 0.5)
    assert parse_threshold_rule(" Youden ") == ThresholdRule("youden", None)
    assert parse_threshold_rule("sens:0.9") == ThresholdRule("sens", 0.9)


@pytest.mark.parametrize("text", ["", "abc", "1.5", "-0.1", "nan", "sens:", "sens:x", "sens:0", "sens:1.2", "youden:1"])
def test_malformed_threshold_rules_raise(text: str) -> None:
    with pytest.raises(DataError):
        parse_threshold_rule(text)


# Validation split for the threshold rules: positives at 0.4 0.6 0.7 0.8 0.9, negatives 0.1 0.2 0.3 0.5.
YV = np.array([0, 0, 0, 1, 0, 1, 1, 1, 1])
PV = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])


def test_fixed_threshold() -> None:
    threshold, desc = choose_threshold(parse_threshold_rule("0.35"), YV, PV)
    assert threshold == 0.35 and "0.35" in desc


def test_youden_hand_example() -> None:
    # By hand: t=0.6 -> sens 4/5, spec 4/4, J=0.80; t=0.4 -> sens 1, spec 3/4, J=0.75; others lower.
    threshold, desc = choose_threshold(parse_threshold_rule("youden"), YV, PV)
    assert threshold == pytest.approx(0.6)
    assert "Youden" in desc and "n=9" in desc


def test_youden_tie_takes_highest_threshold() -> None:
    # t=0.6 and t=0.4 both give J=0.75 here.
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    assert choose_threshold(ThresholdRule("youden"), y, p)[0] == pytest.approx(0.6)


def test_sensitivity_rule_picks_highest_threshold_reaching_target() -> None:
    assert choose_threshold(parse_threshold_rule("sens:0.9"), YV, PV)[0] == pytest.approx(0.4)  # needs 5/5
    assert choose_threshold(parse_threshold_rule("sens:0.8"), YV, PV)[0] == pytest.approx(0.6)  # 4/5 suffices

    y, p = _random_scores(200, seed=5)
    threshold, _ = choose_threshold(parse_threshold_rule("sens:0.9"), y, p)
    assert compute_metrics(y, p, threshold, n_boot=10)["sensitivity"]["value"] >= 0.9
    higher = p[p > threshold].min()  # the next observed threshold up falls short
    assert compute_metrics(y, p, higher, n_boot=10)["sensitivity"]["value"] < 0.9


def test_data_driven_rule_needs_both_classes() -> None:
    with pytest.raises(DataError, match="one class"):
        choose_threshold(parse_threshold_rule("youden"), np.zeros(5, dtype=int), np.linspace(0, 1, 5))


def test_bad_inputs_raise_data_error() -> None:
    with pytest.raises(DataError):
        compute_metrics([0, 1, 1], [0.1, 0.2], 0.5)
    with pytest.raises(DataError):
        compute_metrics([0, 2], [0.1, 0.2], 0.5)
    with pytest.raises(DataError):
        compute_metrics([0, 1], [0.1, 1.2], 0.5)
    with pytest.raises(DataError):
        compute_metrics([], [], 0.5)


def test_single_class_input() -> None:
    y = np.zeros(6, dtype=int)
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.05])
    m = compute_metrics(y, p, 0.5, n_boot=50)
    assert m["auc"]["value"] is None and m["auc"]["ci"] is None
    assert "one class" in m["auc"]["note"]
    assert m["sensitivity"]["value"] is None and m["sensitivity"]["n"] == 0
    assert m["specificity"]["value"] == pytest.approx(4 / 6)
    out = io.StringIO()
    print_report(m, Console(file=out, width=120), title="single class")
    assert "n/a" in out.getvalue()


def test_age_baseline() -> None:
    rng = np.random.default_rng(0)
    y_tr, y_te = rng.integers(0, 2, 1000), rng.integers(0, 2, 1000)
    random = age_baseline_auc(rng.uniform(40, 90, 1000), y_tr, rng.uniform(40, 90, 1000), y_te)
    assert random["n"] == 1000
    assert abs(random["auc"] - 0.5) < 0.06
    assert random["ci"][0] < 0.5 < random["ci"][1]

    def ages(y: np.ndarray) -> np.ndarray:
        return 55 + 20 * y + rng.normal(0, 4, len(y))

    separating = age_baseline_auc(ages(y_tr), y_tr, ages(y_te), y_te)
    assert separating["auc"] > 0.95
    # Younger = positive also separates (the logistic slope is negative).
    assert age_baseline_auc(-ages(y_tr), y_tr, -ages(y_te), y_te)["auc"] > 0.95


def test_age_baseline_skips_missing_ages() -> None:
    y = np.array([0, 1, 0, 1, 0, 1])
    age = np.array([50, 70, 52, np.nan, 49, 75], dtype=float)
    result = age_baseline_auc(age, y, age, y, n_boot=50)
    assert result["n"] == 5 and result["n_missing"] == 1
    assert result["auc"] == pytest.approx(1.0)


def _assert_png(path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        img.verify()


def test_save_plots_writes_valid_pngs(tmp_path) -> None:
    y, p = _random_scores(120, seed=2)
    paths = save_plots(tmp_path / "plots", y, p, 0.5, n_boot=100)
    assert [q.name for q in paths] == ["confusion.png", "roc.png", "calibration.png"]
    for path in paths:
        _assert_png(path)
    assert sorted(q.name for q in (tmp_path / "plots").iterdir()) == sorted(q.name for q in paths)  # no temp files


def test_save_plots_single_class(tmp_path) -> None:
    paths = save_plots(tmp_path, np.ones(5, dtype=int), np.linspace(0.1, 0.9, 5), 0.5)
    for path in paths:
        _assert_png(path)


def test_print_report_layout() -> None:
    m = compute_metrics(Y10, P10, 0.5, n_boot=100)
    m["threshold_rule"] = "Youden's J on validation (n=100)"
    out = io.StringIO()
    print_report(m, Console(file=out, width=160), title="Test set (synthetic phantom data)")
    text = out.getvalue()
    for expected in ("synthetic phantom data", "normal", "osteoporosis", "macro avg", "weighted avg",
                     "precision", "recall", "f1-score", "support", "Sensitivity", "Specificity",
                     "0.750 (95% CI", "3/4", "AUC", "Youden's J on validation (n=100)"):
        assert expected in text, expected
