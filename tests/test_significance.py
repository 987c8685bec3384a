"""Bootstrap intervals and paired tests over test studies (pipelines.metrics.significance)."""
from __future__ import annotations

import numpy as np
import pytest

from kg.errors import InputError
from sklearn.metrics import roc_auc_score
from pipelines.metrics.significance import bootstrap_ci, column_mean, paired_test, recall_at


def test_interval_covers_the_true_mean_at_about_the_nominal_rate() -> None:
    rng = np.random.default_rng(1)
    trials, covered = 120, 0
    for trial in range(trials):
        scores = rng.normal(0.3, 1.0, size=40)
        ci = bootstrap_ci({"score": scores}, column_mean("score"), n_resamples=200, seed=trial)
        covered += ci.low <= 0.3 <= ci.high
        assert ci.low <= ci.value <= ci.high
    # 95 % nominal; the percentile interval at n=40 runs slightly narrow. Binomial sd ≈ 2 %.
    assert 0.87 <= covered / trials <= 0.99


def test_interval_of_a_non_mean_metric_resamples_and_recomputes() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, size=(80, 2)).astype(float)
    y_prob = np.clip(y_true * 0.3 + rng.random((80, 2)) * 0.7, 0, 1)

    def auroc(table: dict) -> float:
        return float(roc_auc_score(table["y_true"], table["y_prob"], average="macro"))

    ci = bootstrap_ci({"y_true": y_true, "y_prob": y_prob}, auroc, n_resamples=150)
    assert ci.value == pytest.approx(auroc({"y_true": y_true, "y_prob": y_prob}))
    assert 0.5 < ci.low < ci.value < ci.high <= 1.0
    assert ci.n_studies == 80 and ci.n_seeds == 1


def test_interval_is_deterministic_and_narrows_with_more_studies() -> None:
    rng = np.random.default_rng(2)
    small = {"rank": rng.integers(1, 30, size=50)}
    large = {"rank": rng.integers(1, 30, size=800)}
    first, again = (bootstrap_ci(small, recall_at(10, "rank"), n_resamples=300, seed=5) for _ in range(2))
    assert first == again
    wide = first.high - first.low
    narrow = bootstrap_ci(large, recall_at(10, "rank"), n_resamples=300, seed=5)
    assert narrow.high - narrow.low < wide / 2


def test_seeds_are_pooled_by_study_id() -> None:
    ids = np.array([f"s{i}" for i in range(30)])
    correct = np.arange(30) % 2
    seed0 = {"study_id": ids, "correct": correct}
    reordered = np.random.default_rng(0).permutation(30)
    seed1 = {"study_id": ids[reordered], "correct": 1 - correct[reordered]}
    ci = bootstrap_ci([seed0, seed1], column_mean("correct"), n_resamples=200)
    # Study by study the two seeds average to 0.5: with alignment there is no study variance left.
    assert ci.value == 0.5 and ci.low == ci.high == 0.5
    assert ci.n_seeds == 2


def test_a_clear_effect_is_significant() -> None:
    rng = np.random.default_rng(3)
    baseline = rng.normal(0.0, 1.0, size=60)
    variant = baseline + 0.8 + rng.normal(0.0, 0.5, size=60)
    result = paired_test({"score": variant}, {"score": baseline}, column_mean("score"), n_permutations=500,
                         n_resamples=300)
    assert result.p_value < 0.05
    assert result.difference == pytest.approx(variant.mean() - baseline.mean())
    assert 0 < result.low < result.difference < result.high


def test_p_values_are_not_too_small_without_an_effect() -> None:
    rng = np.random.default_rng(4)
    p_values = []
    for trial in range(80):
        shared = rng.normal(0.0, 1.0, size=30)  # per-study difficulty, the same for both
        a = {"score": shared + rng.normal(0.0, 1.0, size=30)}
        b = {"score": shared + rng.normal(0.0, 1.0, size=30)}
        p_values.append(paired_test(a, b, column_mean("score"), n_permutations=100, n_resamples=2,
                                    seed=trial).p_value)
    p_values = np.array(p_values)
    assert np.mean(p_values < 0.05) <= 0.10
    assert 0.3 <= np.mean(p_values < 0.5) <= 0.7  # roughly uniform


def test_identical_outputs_give_p_one_and_a_zero_difference() -> None:
    ranks = {"study_id": np.arange(25), "rank": np.random.default_rng(0).integers(1, 20, size=25)}
    result = paired_test([ranks, ranks], [ranks, ranks], recall_at(5, "rank"), n_permutations=300, n_resamples=100)
    assert result.p_value == 1.0
    assert result.difference == result.low == result.high == 0.0


def test_exact_test_on_few_studies() -> None:
    result = paired_test({"x": np.ones(6)}, {"x": np.zeros(6)}, column_mean("x"), n_resamples=50)
    assert result.n_permutations == 2 ** 6
    assert result.p_value == pytest.approx(2 / 64)  # only "no swap" and "swap all" are as extreme


@pytest.mark.parametrize("variant, baseline, message", [
    ([{"x": np.ones(5)}, {"x": np.ones(5)}], {"x": np.ones(5)}, "pair them"),
    ({"x": np.ones(5)}, {"x": np.ones(6)}, "studies"),
    ({"study_id": np.arange(5), "x": np.ones(5)}, {"study_id": np.arange(1, 6), "x": np.ones(5)}, "same test studies"),
    ({"x": np.ones(5), "y": np.ones(4)}, {"x": np.ones(5)}, "one row per study"),
])
def test_mismatched_inputs_are_named(variant: object, baseline: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        paired_test(variant, baseline, column_mean("x"), n_permutations=10, n_resamples=10)


def test_bad_options_are_errors() -> None:
    with pytest.raises(InputError, match="confidence"):
        bootstrap_ci({"x": np.ones(5)}, column_mean("x"), confidence=95)
    with pytest.raises(InputError, match="method"):
        bootstrap_ci({"x": np.ones(5)}, column_mean("x"), method="normal")
    with pytest.raises(InputError, match="at least 2 studies"):
        bootstrap_ci({"x": np.ones(1)}, column_mean("x"))
