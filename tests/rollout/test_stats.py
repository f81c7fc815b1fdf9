"""Rollout statistics against hand-computed and published values, Monte-Carlo coverage of their
intervals, and the degenerate inputs a live rollout produces (no labels yet, one class only).

Every Monte-Carlo check is seeded, so it is deterministic; its bounds are wide enough for the
method under test and narrow enough that the naive alternative (Wald) fails them.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import optimize, stats

from xgbops.rollout.stats import (
    EXACT_MCNEMAR_BELOW,
    Interval,
    TestResult,
    agreement_rate,
    auc_interval,
    brier_score,
    calibration,
    delong_paired,
    delong_unpaired,
    log_loss,
    mcnemar_test,
    population_stability_index,
    score_shift,
    two_proportion_test,
    wilson_interval,
)
from xgbops.rollout.stats import _midranks  # pylint: disable=wrong-import-position  # checked

#: Two-sided 95% standard normal quantile.
Z95 = 1.959963984540054


def _half_width(interval):
    """Half the width of an Interval's or a TestResult's confidence interval."""
    return (interval.high - interval.low) / 2


def _plain_float(value):
    """A Python float, not a numpy scalar (np.float64 subclasses float but is a np.generic)."""
    return isinstance(value, float) and not isinstance(value, np.generic)


def _separable(rng, n, shift):
    """Labels with about half positives, and scores = label * shift + N(0, 1) noise."""
    labels = rng.integers(0, 2, size=n)
    return labels, labels * shift + rng.normal(size=n)


# --- Wilson ------------------------------------------------------------------------------------


def test_wilson_small_case_matches_the_closed_formula():
    """3 successes of 10 at 95%, by hand from the closed formula.

    z = 1.959964, z^2 = 3.841459, p = 0.3, z^2/n = 0.3841459
    centre = (p + z^2/(2n)) / (1 + z^2/n) = 0.4920729 / 1.3841459 = 0.3555066
    half   = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/(4n^2))
           = 1.4160097 * sqrt(0.021 + 0.0096036) = 1.4160097 * 0.1749390 = 0.2477153
    -> [0.1077913, 0.6032219]
    """
    interval = wilson_interval(3, 10)
    assert interval.estimate == pytest.approx(0.3)
    assert interval.low == pytest.approx(0.1077913, abs=1e-6)
    assert interval.high == pytest.approx(0.6032219, abs=1e-6)


def test_wilson_at_zero_and_n_is_not_degenerate():
    """At 0 of n Wald collapses to [0, 0]; Wilson's upper bound is z^2 / (n + z^2).

    0 of 20: 3.841459 / 23.841459 = 0.1611248; n of n mirrors it.
    """
    zero = wilson_interval(0, 20)
    assert (zero.estimate, zero.low) == (0.0, 0.0)
    assert zero.high == pytest.approx(0.1611248, abs=1e-6)
    full = wilson_interval(20, 20)
    assert (full.estimate, full.high) == (1.0, 1.0)
    assert full.low == pytest.approx(1.0 - 0.1611248, abs=1e-6)


def test_wilson_without_trials_is_nan_over_the_unit_interval():
    """n == 0: nothing is known, the proportion can be anything."""
    interval = wilson_interval(0, 0)
    assert math.isnan(interval.estimate)
    assert (interval.low, interval.high) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("successes", "n", "confidence"),
    [(11, 10, 0.95), (-1, 10, 0.95), (1, 10, 1.0), (1, 10, 0.0)],
)
def test_wilson_rejects_invalid_input(successes, n, confidence):
    """More successes than trials, negative counts or a confidence of 0 or 1."""
    with pytest.raises(ValueError):
        wilson_interval(successes, n, confidence)


def test_wilson_coverage_near_zero_monte_carlo():
    """p = 0.03, n = 100: Wilson covers about 97% of draws (exact: 0.969), Wald only 80%."""
    rng = np.random.default_rng(20240601)
    p, n = 0.03, 100
    draws = rng.binomial(n, p, size=2000)
    covered = [wilson_interval(int(k), n) for k in draws]
    coverage = np.mean([i.low <= p <= i.high for i in covered])
    assert 0.93 <= coverage <= 0.99


# --- two proportions ---------------------------------------------------------------------------


def test_two_proportion_textbook_case():
    """Newcombe (1998), Stat Med 17:873, example (b): 56/70 against 48/80.

    Arm B has 56 errors of 70 (0.8), arm A 48 of 80 (0.6): difference 0.2.
    pooled = 104/150 = 0.693333; se = sqrt(0.693333 * 0.306667 * (1/70 + 1/80))
           = sqrt(0.2126222 * 0.0267857) = sqrt(0.0056952) = 0.0754668
    z = 0.2 / 0.0754668 = 2.650172, two-sided p = 0.008045, one-sided (B worse) 0.004023.
    Newcombe's hybrid score interval (method 10 of the paper's table): 0.0524 to 0.3339.
    """
    result = two_proportion_test(errors_a=48, n_a=80, errors_b=56, n_b=70)
    assert result.difference == pytest.approx(0.2)
    assert result.statistic == pytest.approx(2.650172, abs=1e-6)
    assert result.p_value == pytest.approx(0.008045, abs=1e-6)
    assert result.p_worse == pytest.approx(0.004023, abs=1e-6)
    assert (round(result.low, 4), round(result.high, 4)) == (0.0524, 0.3339)
    # The pooled z-test is the uncorrected chi-square test of the 2x2 table.
    chi2 = stats.chi2_contingency([[56, 14], [48, 32]], correction=False).statistic
    assert result.statistic**2 == pytest.approx(chi2)
    assert "two-proportion z (independent)" in result.method


def test_two_proportion_newcombe_second_published_case():
    """Newcombe (1998), example (c): 9/10 against 3/10, method 10: 0.1705 to 0.8090."""
    result = two_proportion_test(3, 10, 9, 10)
    assert (round(result.low, 4), round(result.high, 4)) == (0.1705, 0.8090)


def test_two_proportion_is_symmetric_under_swapping_arms():
    """Swapping A and B negates the difference and mirrors the interval; p is unchanged and
    "B worse" of one order is "B better" of the other: the two one-sided p-values sum to 1."""
    forward = two_proportion_test(30, 400, 45, 380)
    backward = two_proportion_test(45, 380, 30, 400)
    assert backward.difference == pytest.approx(-forward.difference)
    assert (backward.low, backward.high) == pytest.approx((-forward.high, -forward.low))
    assert backward.p_value == pytest.approx(forward.p_value)
    assert forward.p_worse + backward.p_worse == pytest.approx(1.0)
    assert forward.p_worse < 0.5 < backward.p_worse  # B errs more in the forward order


def test_two_proportion_degenerate_arms():
    """An arm without labels gives NaN and says so; no errors anywhere gives p = 1."""
    empty = two_proportion_test(0, 0, 3, 50)
    assert math.isnan(empty.difference) and math.isnan(empty.p_value)
    assert "no labelled samples in arm A" in empty.method
    clean = two_proportion_test(0, 50, 0, 60)
    assert (clean.difference, clean.statistic, clean.p_value) == (0.0, 0.0, 1.0)
    assert clean.low < 0.0 < clean.high
    with pytest.raises(ValueError, match="errors_b"):
        two_proportion_test(1, 10, 11, 10)


# --- McNemar -----------------------------------------------------------------------------------


def test_mcnemar_chi_square_with_continuity_correction():
    """Wikipedia, "McNemar's test", first example: a=101, b=121, c=59, d=33 (n = 314).

    With Edwards' continuity correction chi2 = (|121 - 59| - 1)^2 / 180 = 61^2 / 180
    = 3721 / 180 = 20.672222 (the uncorrected 62^2 / 180 = 21.356 of the page would fail);
    p = P(chi2_1 >= 20.672222) = 5.4501e-6. B errs in 121 of the discordant pairs: worse.
    """
    result = mcnemar_test(a_right_b_wrong=121, a_wrong_b_right=59, n=314)
    assert result.statistic == pytest.approx(3721 / 180)
    assert result.p_value == pytest.approx(stats.chi2.sf(3721 / 180, 1))
    assert result.p_value == pytest.approx(5.4501e-6, rel=1e-4)
    assert result.p_worse == pytest.approx(result.p_value / 2)
    assert result.difference == pytest.approx(62 / 314)
    assert "continuity correction" in result.method


def test_mcnemar_exact_small_case_matches_binomtest():
    """b=7, c=1: 8 discordant pairs, exact binomial. P(X <= 1 | 8, 1/2) = 9/256, so the
    two-sided p = 18/256 = 0.0703125 and P(X >= 7) = 9/256 is the one-sided "B worse"."""
    result = mcnemar_test(7, 1, 30)
    assert result.p_value == pytest.approx(stats.binomtest(7, 8, 0.5).pvalue)
    assert result.p_value == pytest.approx(18 / 256)
    assert result.p_worse == pytest.approx(stats.binomtest(7, 8, 0.5, alternative="greater").pvalue)
    assert result.p_worse == pytest.approx(9 / 256)
    assert result.statistic == 7.0
    assert "exact" in result.method
    better = mcnemar_test(1, 7, 30)  # B is the better one: P(X >= 1 | 8) = 255/256
    assert better.p_worse == pytest.approx(255 / 256)
    assert better.p_value == pytest.approx(result.p_value)


def test_mcnemar_switches_to_chi_square_at_25_discordant_pairs():
    """24 discordant pairs are tested exactly, 25 with the chi-square; b == c gives p = 1."""
    assert EXACT_MCNEMAR_BELOW == 25
    assert "exact" in mcnemar_test(12, 12, 100).method
    tied = mcnemar_test(13, 13, 100)
    assert "chi-square" in tied.method
    assert (tied.statistic, tied.p_value) == (0.0, 1.0)


def test_mcnemar_without_discordant_pairs():
    """No discordant pair: p = 1, difference 0, and Tango's interval is not the Wald point
    [0, 0] but +- z^2 / (n + z^2) = +- 3.841459 / 53.841459 = +- 0.0713476 for n = 50."""
    result = mcnemar_test(0, 0, 50)
    assert (result.difference, result.p_value, result.p_worse) == (0.0, 1.0, 1.0)
    assert result.low == pytest.approx(-0.0713476, abs=1e-6)
    assert result.high == pytest.approx(0.0713476, abs=1e-6)


def test_mcnemar_without_pairs_and_invalid_counts():
    """n == 0 has no difference but nothing to reject (p = 1); counts must add up."""
    empty = mcnemar_test(0, 0, 0)
    assert math.isnan(empty.difference) and empty.p_value == 1.0
    with pytest.raises(ValueError, match="exceeds n"):
        mcnemar_test(5, 6, 10)


def _tango_quartic_roots(n, b, c, z=Z95):
    """Real roots of the quartic whose extreme roots are Tango's limits, from the closed form
    of Yang, Sun & Hardin (2013), "A non-iterative implementation of Tango's score confidence
    interval for a paired difference of proportions", Statistics in Medicine."""
    g = z * z
    coefficients = [
        n**2 * (n / g + 1) ** 2,
        -n * (b - c) * (n / g + 1) * (4 * n / g + 1),
        2 * n * (b - c) ** 2 * (3 * n / g + 2) / g - n**2 * ((b + c) / g + 1),
        n * (b - c) * (2 * (b + c) / g + 1) - (b - c) ** 3 * (4 * n / g + 1) / g,
        (b - c) ** 2 * ((b - c) ** 2 / g - (b + c)) / g,
    ]
    roots = np.roots(coefficients)
    return np.sort(roots[np.abs(roots.imag) < 1e-9].real)


@pytest.mark.parametrize(("n", "b", "c"), [(21, 1, 7), (314, 121, 59), (30, 7, 1), (40, 0, 5)])
def test_mcnemar_interval_is_tangos_closed_form(n, b, c):
    """The bisection's bounds are the extreme roots of the published non-iterative quartic."""
    result = mcnemar_test(b, c, n)
    roots = _tango_quartic_roots(n, b, c)
    assert result.low == pytest.approx(roots[0], abs=1e-7)
    assert result.high == pytest.approx(roots[-1], abs=1e-7)


def test_mcnemar_interval_bounds_are_score_test_boundaries():
    """At each bound the score statistic, with the null cell probability maximised
    numerically (not by the module's quadratic), is +- z."""
    b, c, n = 9, 3, 40
    result = mcnemar_test(b, c, n)
    for bound, expected in ((result.low, Z95), (result.high, -Z95)):

        def negative_log_likelihood(q, delta=bound):
            return -(
                b * np.log(q + delta) + c * np.log(q) + (n - b - c) * np.log(1 - 2 * q - delta)
            )

        q = optimize.minimize_scalar(
            negative_log_likelihood,
            bounds=(max(0.0, -bound) + 1e-12, (1 - bound) / 2 - 1e-12),
            method="bounded",
            options={"xatol": 1e-12},
        ).x
        score = (b - c - n * bound) / math.sqrt(n * (2 * q + bound * (1 - bound)))
        assert score == pytest.approx(expected, abs=1e-4)


def test_mcnemar_interval_coverage_monte_carlo():
    """60 pairs, P(A right, B wrong) = 0.15, P(A wrong, B right) = 0.05: true difference 0.1."""
    rng = np.random.default_rng(7)
    cells = rng.multinomial(60, [0.15, 0.05, 0.80], size=300)
    results = [mcnemar_test(int(b), int(c), 60) for b, c, _ in cells]
    coverage = np.mean([r.low <= 0.1 <= r.high for r in results])
    assert 0.90 <= coverage <= 0.99


# --- DeLong ------------------------------------------------------------------------------------


def test_auc_equals_mann_whitney_u_with_ties():
    """AUC = U / (n1 * n2), ties counting one half, on scores rounded to force ties."""
    rng = np.random.default_rng(11)
    labels, scores = _separable(rng, 300, 0.8)
    scores = np.round(scores, 1)
    positives, negatives = scores[labels == 1], scores[labels == 0]
    u_statistic = stats.mannwhitneyu(positives, negatives).statistic
    expected = u_statistic / (positives.size * negatives.size)
    assert auc_interval(labels, scores).estimate == pytest.approx(expected, abs=1e-12)


def test_delong_variance_of_a_hand_example():
    """Positives 0.8, 0.6, 0.4; negatives 0.6, 0.3, 0.1 (one tie, 0.6 = 0.6).

    psi(x, y) = 1 if x > y, 1/2 if x == y, 0 otherwise.
    V10 (per positive, share of negatives beaten): 0.8 -> 3/3, 0.6 -> 2.5/3, 0.4 -> 2/3
    V01 (per negative, share of positives above):  0.6 -> 1.5/3, 0.3 -> 3/3, 0.1 -> 3/3
    AUC = mean(V10) = (1 + 5/6 + 2/3) / 3 = 5/6
    S10 = var(1, 5/6, 4/6; ddof 1) = ((1/6)^2 + 0 + (1/6)^2) / 2 = 1/36
    S01 = var(1/2, 1, 1; ddof 1) = ((1/3)^2 + (1/6)^2 + (1/6)^2) / 2 = 1/12
    Var(AUC) = S10 / 3 + S01 / 3 = 1/108 + 3/108 = 1/27, se = 0.1924501.
    At 50% confidence (z = 0.6744898, so nothing is clipped at 1) the half-width is 0.1298056.
    """
    labels = [1, 1, 1, 0, 0, 0]
    scores = [0.8, 0.6, 0.4, 0.6, 0.3, 0.1]
    interval = auc_interval(labels, scores, confidence=0.5)
    assert interval.estimate == pytest.approx(5 / 6)
    half_width = (interval.high - interval.low) / 2
    assert (half_width / stats.norm.ppf(0.75)) ** 2 == pytest.approx(1 / 27)
    assert half_width == pytest.approx(0.1298056, abs=1e-6)


def test_delong_paired_model_against_itself():
    """Same ranking (also after a monotone transform): difference 0, p = 1, no alarm."""
    rng = np.random.default_rng(3)
    labels, scores = _separable(rng, 200, 1.0)
    for other in (scores, np.exp(scores)):
        result = delong_paired(labels, scores, other)
        assert (result.difference, result.low, result.high, result.p_value) == (0, 0, 0, 1)
        assert result.p_worse >= 0.5


def test_delong_paired_detects_a_much_worse_challenger():
    """n = 500 shared cases: A ranks well (noise sd 0.5), B hardly (noise sd 3)."""
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, size=500)
    good = labels + rng.normal(scale=0.5, size=500)
    poor = labels + rng.normal(scale=3.0, size=500)
    worse = delong_paired(labels, scores_a=good, scores_b=poor)
    assert worse.difference < -0.2
    assert worse.p_value < 0.01
    assert worse.p_worse < 1e-6
    assert worse.high < 0.0
    better = delong_paired(labels, scores_a=poor, scores_b=good)
    assert better.difference == pytest.approx(-worse.difference)
    assert better.p_worse > 1 - 1e-6
    assert better.method == "DeLong (paired)"


def test_pairing_narrows_the_interval_of_correlated_models():
    """B = A + small noise: the paired variance is far below the sum of the two variances."""
    rng = np.random.default_rng(9)
    labels, scores_a = _separable(rng, 400, 1.0)
    scores_b = scores_a + rng.normal(scale=0.3, size=400)
    paired = delong_paired(labels, scores_a, scores_b)
    unpaired = delong_unpaired(labels, scores_a, labels, scores_b)
    assert paired.difference == pytest.approx(unpaired.difference)
    assert (paired.high - paired.low) < 0.5 * (unpaired.high - unpaired.low)


def test_delong_unpaired_variances_add():
    """Half-width of the difference^2 = sum of each AUC's half-width^2 (same z)."""
    rng = np.random.default_rng(13)
    y_a, scores_a = _separable(rng, 300, 1.0)
    y_b, scores_b = _separable(rng, 250, 0.6)
    result = delong_unpaired(y_a, scores_a, y_b, scores_b)
    half_a = _half_width(auc_interval(y_a, scores_a))
    half_b = _half_width(auc_interval(y_b, scores_b))
    half = _half_width(result)
    assert half**2 == pytest.approx(half_a**2 + half_b**2)
    difference = auc_interval(y_b, scores_b).estimate - auc_interval(y_a, scores_a).estimate
    assert result.difference == pytest.approx(difference)
    assert result.statistic == pytest.approx(result.difference / (half / Z95))


def test_auc_interval_coverage_monte_carlo():
    """100 positives N(1, 1), 100 negatives N(0, 1): true AUC = Phi(1 / sqrt 2) = 0.760250.
    DeLong covers it in 96.5% of these 200 samples; dropping either variance term fails."""
    rng = np.random.default_rng(17)
    true_auc = stats.norm.cdf(1 / math.sqrt(2))
    labels = np.repeat([1, 0], 100)
    covered = 0
    for _ in range(200):
        scores = labels + rng.normal(size=labels.size)
        interval = auc_interval(labels, scores)
        covered += interval.low <= true_auc <= interval.high
    assert 0.90 <= covered / 200 <= 0.99


def test_auc_is_nan_when_only_one_class_is_present():
    """AUC is undefined without positives or negatives: NaN, and the reason, never a raise."""
    one_class = auc_interval([1, 1, 1], [0.2, 0.5, 0.9])
    assert all(math.isnan(v) for v in one_class.to_dict().values())
    assert math.isnan(auc_interval([], []).estimate)
    paired = delong_paired([0, 0], [0.1, 0.2], [0.3, 0.4])
    assert "only one class" in paired.method and math.isnan(paired.p_worse)
    unpaired = delong_unpaired([0, 1], [0.1, 0.9], [1, 1], [0.3, 0.4])
    assert "arm B" in unpaired.method and math.isnan(unpaired.difference)


def test_auc_with_a_single_positive_has_no_variance():
    """One positive: the AUC exists but its variance (ddof 1) does not."""
    interval = auc_interval([1, 0, 0, 0], [0.9, 0.1, 0.5, 0.95])
    assert interval.estimate == pytest.approx(2 / 3)
    assert math.isnan(interval.low) and math.isnan(interval.high)
    paired = delong_paired([1, 0, 0], [0.9, 0.1, 0.5], [0.4, 0.1, 0.5])
    assert paired.difference == pytest.approx(-0.5)
    assert math.isnan(paired.p_value) and "variance undefined" in paired.method


def test_delong_zero_variance_with_a_difference_is_flagged_not_tested():
    """A separates perfectly, B ties everything: each arm's components are constant, so the
    estimated variance is 0 although the AUCs differ (1 against 0.5). No z can be formed:
    NaN p-values (the guard does not act on them) and the reason in ``method``."""
    result = delong_paired([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2], [0.5, 0.5, 0.5, 0.5])
    assert result.difference == -0.5
    assert (result.low, result.high) == (-0.5, -0.5)
    assert math.isnan(result.p_value) and math.isnan(result.p_worse)
    assert "zero variance" in result.method


def test_auc_inputs_are_validated():
    """Different lengths name both arguments; labels must be 0/1; scores finite."""
    with pytest.raises(ValueError, match=r"y_true \(2\), scores \(1\)"):
        auc_interval([0, 1], [0.1])
    with pytest.raises(ValueError, match="scores_b"):
        delong_paired([0, 1], [0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="only 0 and 1"):
        auc_interval([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        auc_interval([0, 1], [0.1, math.nan])
    with pytest.raises(ValueError, match="one-dimensional"):
        auc_interval([[0, 1]], [[0.1, 0.2]])
    with pytest.raises(ValueError, match="one-dimensional"):
        agreement_rate([["a"]], [["a"]])
    with pytest.raises(ValueError, match="scores must be one-dimensional"):
        auc_interval([0, 1], [[0.1], [0.2]])
    with pytest.raises(ValueError, match="eps"):
        log_loss([0, 1], [0.1, 0.2], eps=0.0)
    with pytest.raises(ValueError, match="bins"):
        population_stability_index([0.1, 0.2], [0.3], bins=0)


# --- probabilities -----------------------------------------------------------------------------


def test_log_loss_and_brier_by_hand():
    """y = 1, 0, 1, 0; p = 0.9, 0.2, 0.6, 0.5.

    log loss = -(ln 0.9 + ln 0.8 + ln 0.6 + ln 0.5) / 4
             = (0.1053605 + 0.2231436 + 0.5108256 + 0.6931472) / 4 = 0.3831192
    Brier = (0.1^2 + 0.2^2 + 0.4^2 + 0.5^2) / 4 = (0.01 + 0.04 + 0.16 + 0.25) / 4 = 0.115
    """
    labels, probabilities = [1, 0, 1, 0], [0.9, 0.2, 0.6, 0.5]
    assert log_loss(labels, probabilities) == pytest.approx(0.3831192, abs=1e-7)
    assert brier_score(labels, probabilities) == pytest.approx(0.115)


def test_log_loss_clips_certain_probabilities():
    """p = 0 for a positive costs -ln(1e-15) = 34.538776 instead of infinity."""
    assert log_loss([1, 0], [0.0, 1.0]) == pytest.approx(34.538776, abs=1e-6)
    assert log_loss([1, 0], [1.0, 0.0]) == pytest.approx(0.0, abs=1e-12)


def test_probability_metrics_edge_cases():
    """Empty inputs give NaN; invalid inputs raise naming the problem."""
    assert math.isnan(log_loss([], []))
    assert math.isnan(brier_score([], []))
    calibrated = calibration([], [])
    assert math.isnan(calibrated.ece) and not calibrated.bins
    with pytest.raises(ValueError, match=r"y_true \(2\), probabilities \(3\)"):
        brier_score([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        log_loss([0, 1], [0.1, 1.2])
    with pytest.raises(ValueError, match="bins"):
        calibration([0, 1], [0.1, 0.2], bins=0)


def test_calibration_by_hand():
    """y = 0, 0, 1, 1, 1; p = 0.1, 0.3, 0.35, 0.8, 0.95; 2 bins.

    [0, 0.5):  p 0.1, 0.3, 0.35 -> mean 0.25,  observed 1/3, count 3
    [0.5, 1]:  p 0.8, 0.95      -> mean 0.875, observed 1,   count 2
    ECE = 3/5 * |0.25 - 1/3| + 2/5 * |0.875 - 1| = 0.05 + 0.05 = 0.1
    """
    result = calibration([0, 0, 1, 1, 1], [0.1, 0.3, 0.35, 0.8, 0.95], bins=2)
    assert result.ece == pytest.approx(0.1)
    assert result.bins == [
        pytest.approx(
            {"low": 0.0, "high": 0.5, "mean_probability": 0.25, "observed_rate": 1 / 3, "count": 3}
        ),
        pytest.approx(
            {"low": 0.5, "high": 1.0, "mean_probability": 0.875, "observed_rate": 1.0, "count": 2}
        ),
    ]
    top = calibration([1], [1.0]).bins  # 1.0 falls in the last bin, not an eleventh one
    assert [(row["low"], row["high"]) for row in top] == [(0.9, 1.0)]


def test_calibration_error_of_calibrated_and_shifted_probabilities():
    """Labels drawn with the stated probability: ECE near 0; stated 0.2 too high: ECE large."""
    rng = np.random.default_rng(23)
    probabilities = rng.random(20_000)
    labels = (rng.random(20_000) < probabilities).astype(int)
    assert calibration(labels, probabilities).ece < 0.02
    shifted = np.clip(probabilities + 0.2, 0.0, 1.0)
    assert calibration(labels, shifted).ece > 0.15


# --- agreement, distributions ------------------------------------------------------------------


def test_midranks_are_scipys_average_ranks():
    rng = np.random.default_rng(3)
    values = rng.integers(0, 20, size=500).astype(float)  # many ties
    assert np.array_equal(_midranks(values), stats.rankdata(values))
    assert list(_midranks(np.array([3.0, 1.0, 3.0, 2.0]))) == [3.5, 1.0, 3.5, 2.0]


def test_agreement_rate():
    """3 of 4 paired labels agree: the Wilson interval of 3/4; works on arrays too."""
    result = agreement_rate(["churn", "stay", "churn", "stay"], ["churn", "stay", "stay", "stay"])
    assert result == wilson_interval(3, 4)
    assert agreement_rate(np.array([1, 0, 1]), np.array([1, 0, 1])).estimate == 1.0
    empty = agreement_rate([], [])
    assert math.isnan(empty.estimate) and (empty.low, empty.high) == (0.0, 1.0)
    with pytest.raises(ValueError, match="labels_a"):
        agreement_rate(["a"], ["a", "b"])


def test_score_shift():
    """Same distribution: no evidence; shifted by 0.5: KS flags it; statistic and asymptotic
    p-value are scipy's, the mean difference's interval within 1 % of Welch's t interval."""
    rng = np.random.default_rng(29)
    scores_a = rng.normal(size=400)
    same = score_shift(scores_a, rng.normal(size=400))
    assert same.p_value > 0.05
    scores_b = rng.normal(loc=0.5, size=300)
    shifted = score_shift(scores_a, scores_b)
    assert shifted.statistic == pytest.approx(stats.ks_2samp(scores_a, scores_b).statistic)
    assert shifted.p_value < 1e-6 and shifted.p_worse == shifted.p_value
    for size_b, loc in ((400, 0.0), (300, 0.15), (50, 0.3)):  # p-values near 0.05 and above
        other = rng.normal(loc=loc, size=size_b)
        ours = score_shift(scores_a, other)
        theirs = stats.ks_2samp(scores_a, other, method="asymp")
        assert ours.statistic == pytest.approx(theirs.statistic)
        scale = math.sqrt(400 * size_b / (400 + size_b))  # Kolmogorov's limiting distribution
        limit = stats.kstwobign.sf(theirs.statistic * scale)
        assert ours.p_value == pytest.approx(limit, rel=1e-9, abs=1e-12)
        assert ours.p_value == pytest.approx(theirs.pvalue, rel=0.1)  # scipy's finite-n one
    assert shifted.difference == pytest.approx(scores_b.mean() - scores_a.mean())
    welch = stats.ttest_ind(scores_b, scores_a, equal_var=False).confidence_interval(0.95)
    assert (shifted.low, shifted.high) == pytest.approx((welch.low, welch.high), rel=0.01)
    empty = score_shift([], [0.1])
    assert math.isnan(empty.p_value) and "arm A" in empty.method
    single = score_shift([0.5], [0.1, 0.2])  # KS runs, a variance needs 2 values per arm
    assert single.difference == pytest.approx(-0.35) and math.isnan(single.low)
    constant = score_shift([0.5, 0.5], [0.7, 0.7])
    assert (constant.low, constant.high) == pytest.approx((0.2, 0.2))


def test_population_stability_index_by_hand():
    """Expected 0..99 in 4 quantile bins (cuts 24.75, 49.5, 74.25): 25% each. Actual: half 0,
    half 99, so shares 0.5, 0, 0, 0.5, the empty ones floored at 1e-4.

    PSI = 2 * (0.5 - 0.25) * ln(0.5 / 0.25) + 2 * (1e-4 - 0.25) * ln(1e-4 / 0.25)
        = 2 * 0.1732868 + 2 * 1.9552291 = 4.2570318
    """
    expected = np.arange(100)
    actual = np.array([0] * 50 + [99] * 50)
    assert population_stability_index(expected, actual, bins=4) == pytest.approx(4.2570318)
    assert population_stability_index(expected, expected) == 0.0
    assert math.isnan(population_stability_index([], [1.0]))


# --- results -----------------------------------------------------------------------------------


def test_results_are_json_ready_python_floats():
    """Every number is a Python float (numpy scalars are not JSON-serialisable by default)."""
    rng = np.random.default_rng(31)
    labels, scores = _separable(rng, 100, 1.0)
    results = [
        mcnemar_test(10, 4, 100),
        two_proportion_test(5, 100, 9, 100),
        delong_paired(labels, scores, scores[::-1]),
        delong_unpaired(labels, scores, labels, scores),
        score_shift(scores, scores + 0.1),
    ]
    for result in results:
        assert isinstance(result, TestResult)
        values = result.to_dict()
        assert all(_plain_float(v) for k, v in values.items() if k != "method")
        json.dumps(values)
    interval = auc_interval(labels, scores)
    assert isinstance(interval, Interval)
    assert all(_plain_float(v) for v in interval.to_dict().values())
    assert all(
        _plain_float(v) for row in calibration(labels, rng.random(100)).bins for v in row.values()
    )
    assert _plain_float(log_loss(labels, rng.random(100)))
    assert _plain_float(brier_score(labels, rng.random(100)))
    assert _plain_float(population_stability_index(scores, scores + 1.0))
