"""Statistics of a live rollout: how the challenger (arm B) compares with the champion (arm A).

In shadow mode both models score the same requests, so their samples are *paired*: the tests that
use the pairing (McNemar, paired DeLong) cancel the case-to-case variation both arms share and
detect a difference with far fewer labels. In canary and A/B modes each request is answered by
one arm only: the samples are independent and their variances add (two-proportion test, unpaired
DeLong).

Conventions of every :class:`TestResult`:

- ``difference`` is B minus A of the compared quantity (error rate, AUC, mean score);
- ``p_worse`` is the one-sided p-value of "B is worse than A" (higher error rate, lower AUC):
  a small value is evidence against the challenger, which is what an automatic guard acts on;
- every number is a Python float, NaN where the quantity is undefined (no samples, one class
  only), with the reason in ``method``.

Degenerate data never raises; invalid input does (:class:`ValueError`): arguments of different
lengths, labels other than 0/1, probabilities outside [0, 1], non-finite scores, a confidence
outside (0, 1). Only numpy and the standard library are used: the API's guard and
``GET /rollout`` run this, and scipy.stats would cost the serving image 60 MB (its budget is
200) for three functions, written here (midranks, the KS statistic and its asymptotic
p-value) and checked against scipy in the tests.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Below this many discordant pairs McNemar's p-value is the exact binomial one: the chi-square
#: approximation of the discordant split is poor for small counts.
EXACT_MCNEMAR_BELOW: Final = 25
#: Floor of a bin's share in the PSI, so an empty bin does not make it infinite (the value
#: :mod:`xgbops.monitoring.drift` uses, so both PSIs read the same).
PSI_EPSILON: Final = 1e-4
#: Halvings of the bracket when inverting Tango's score test: 2 / 2**100 is far below float
#: resolution.
_BISECTION_STEPS: Final = 100
_NAN: Final = math.nan


@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval."""

    estimate: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        """The interval as a JSON-ready mapping."""
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class TestResult:
    """A comparison of arm B with arm A: the difference, its interval and the test's p-values."""

    #: Not a pytest test class, although its name starts with "Test".
    __test__ = False

    method: str
    difference: float
    low: float
    high: float
    statistic: float
    p_value: float
    p_worse: float

    def to_dict(self) -> dict[str, float | str]:
        """The result as a JSON-ready mapping."""
        return {
            "method": self.method,
            "difference": self.difference,
            "low": self.low,
            "high": self.high,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "p_worse": self.p_worse,
        }


@dataclass(frozen=True)
class Calibration:
    """Expected calibration error and the reliability table behind it."""

    ece: float
    bins: list[dict[str, float]]


# --- proportions -------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Proportion with its Wilson score interval.

    Wilson inverts the score test, so its interval stays inside [0, 1] and keeps close to the
    nominal coverage near 0 and 1, where error rates of good models live; the Wald interval
    p +- z*sqrt(p(1-p)/n) collapses to a single point at 0 errors and under-covers nearby.

    Args:
        successes: events counted (errors, agreements, ...).
        n: trials.
        confidence: two-sided confidence level.

    Returns:
        ``successes / n`` and its interval; NaN estimate and [0, 1] when ``n`` is 0.

    Raises:
        ValueError: a negative count, ``successes > n`` or a confidence outside (0, 1).
    """
    successes, n = _proportion("successes", successes, "n", n)
    z = _z(confidence)
    if n == 0:
        return Interval(_NAN, 0.0, 1.0)
    low, high = _wilson_bounds(successes, n, z)
    return Interval(successes / n, low, high)


def two_proportion_test(
    errors_a: int, n_a: int, errors_b: int, n_b: int, confidence: float = 0.95
) -> TestResult:
    """Error rates of two independent arms (canary, A/B): pooled z-test, Newcombe interval.

    Under "equal rates" both arms share one rate, so the z-test pools them for its standard
    error. The interval of the difference is Newcombe's hybrid score method (1998, method 10):
    it combines the two Wilson intervals, so unlike the Wald interval it keeps its coverage
    when the error rates are near 0 or the arms are small.

    Args:
        errors_a: errors of arm A (the champion) among ``n_a`` labelled predictions.
        n_a: labelled predictions of arm A.
        errors_b: errors of arm B (the challenger) among ``n_b``.
        n_b: labelled predictions of arm B.
        confidence: two-sided confidence level of the interval.

    Returns:
        ``difference`` = error rate B - A, ``statistic`` = z, ``p_worse`` = P(Z >= z), the
        one-sided p-value of "B errs more often". NaN everywhere when an arm has no samples.

    Raises:
        ValueError: a negative count, more errors than samples, or a bad confidence.
    """
    errors_a, n_a = _proportion("errors_a", errors_a, "n_a", n_a)
    errors_b, n_b = _proportion("errors_b", errors_b, "n_b", n_b)
    z_c = _z(confidence)
    method = "two-proportion z (independent), Newcombe hybrid score interval"
    if n_a == 0 or n_b == 0:
        arm = "A" if n_a == 0 else "B"
        return _undefined(f"{method}: no labelled samples in arm {arm}")
    rate_a, rate_b = errors_a / n_a, errors_b / n_b
    difference = rate_b - rate_a
    low_a, high_a = _wilson_bounds(errors_a, n_a, z_c)
    low_b, high_b = _wilson_bounds(errors_b, n_b, z_c)
    low = difference - math.hypot(rate_b - low_b, high_a - rate_a)
    high = difference + math.hypot(high_b - rate_b, rate_a - low_a)
    pooled = (errors_a + errors_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b))
    if se == 0.0:  # no errors, or nothing but errors, in both arms: equal rates, nothing to test
        return TestResult(f"{method}: equal rates of 0 or 1", difference, low, high, 0.0, 1.0, 0.5)
    z = difference / se
    return TestResult(method, difference, low, high, z, _two_sided(z), _upper_tail(z))


def mcnemar_test(
    a_right_b_wrong: int, a_wrong_b_right: int, n: int, confidence: float = 0.95
) -> TestResult:
    """Correctness of two models on the same cases (shadow mode): McNemar's test.

    Pairs both arms got right, or both wrong, say nothing about which arm is better; McNemar
    conditions on the discordant pairs, which split 50/50 under "equal error rates". Below
    :data:`EXACT_MCNEMAR_BELOW` discordant pairs the p-value is the exact binomial one; above,
    the chi-square with Edwards' continuity correction, (|b - c| - 1)^2 / (b + c) (the
    correction floored at 0, so b == c gives p = 1).

    The interval of the paired difference is Tango's score interval (1998): it needs only
    the discordant counts and n (Newcombe's paired method also needs how the concordant pairs
    split), and unlike the Wald interval it does not collapse to a point with no discordant
    pairs or leave [-1, 1].

    Args:
        a_right_b_wrong: pairs where A (the champion) is right and B wrong, ``b``.
        a_wrong_b_right: pairs where A is wrong and B right, ``c``.
        n: all pairs with a label, concordant ones included.
        confidence: two-sided confidence level of the interval.

    Returns:
        ``difference`` = error rate B - A = (b - c) / n; ``statistic`` = b for the exact test
        (the binomial count), the chi-square otherwise; ``p_worse`` is the one-sided p-value of
        "B errs more often". With no pairs the difference is NaN and p = 1.

    Raises:
        ValueError: a negative count, more discordant pairs than pairs, or a bad confidence.
    """
    b = _count("a_right_b_wrong", a_right_b_wrong)
    c = _count("a_wrong_b_right", a_wrong_b_right)
    n = _count("n", n)
    if b + c > n:
        raise ValueError(f"a_right_b_wrong + a_wrong_b_right ({b + c}) exceeds n ({n})")
    z_c = _z(confidence)
    if n == 0:
        return TestResult("McNemar (paired): no labelled pairs", _NAN, _NAN, _NAN, 0.0, 1.0, 1.0)
    low, high = _tango_interval(b, c, n, z_c)
    discordant = b + c
    if discordant < EXACT_MCNEMAR_BELOW:
        method = "McNemar exact binomial (paired), Tango score interval"
        statistic = float(b)
        p_value = min(1.0, 2.0 * _binomial_half_tail(min(b, c), discordant, upper=False))
        p_worse = _binomial_half_tail(b, discordant, upper=True)
    else:
        method = "McNemar chi-square with continuity correction (paired), Tango score interval"
        z = math.copysign(max(abs(b - c) - 1, 0), b - c) / math.sqrt(discordant)
        statistic, p_value, p_worse = z * z, _two_sided(z), _upper_tail(z)
    return TestResult(method, (b - c) / n, low, high, statistic, p_value, p_worse)


# --- AUC ---------------------------------------------------------------------------------------


def auc_interval(
    y_true: npt.ArrayLike, scores: npt.ArrayLike, confidence: float = 0.95
) -> Interval:
    """ROC AUC with DeLong's confidence interval.

    DeLong's variance is nonparametric: the AUC is a two-sample U-statistic and its variance
    comes from each case's structural component (the share of the other class it outranks),
    with no assumption on the score distributions. The components are computed from midranks
    (Sun & Xu 2014), O(n log n), and ties count one half. The interval is Wald's on the AUC,
    clipped to [0, 1]; it has zero width when the classes are perfectly separated.

    Args:
        y_true: 0/1 labels, 1 the positive class.
        scores: the model's scores (higher = more likely positive).
        confidence: two-sided confidence level.

    Returns:
        NaN everywhere when ``y_true`` holds one class only (or nothing), NaN bounds when a
        class has a single case (its variance is undefined).

    Raises:
        ValueError: lengths differ, labels other than 0/1, non-finite scores, bad confidence.
    """
    z_c = _z(confidence)
    labels = _labels("y_true", y_true)
    values = _scores("scores", scores)
    _same_length(y_true=labels, scores=values)
    if _one_class(labels):
        return Interval(_NAN, _NAN, _NAN)
    auc, v10, v01 = _delong_components(labels, values)
    half = z_c * math.sqrt(_delong_variance(v10, v01))
    return Interval(auc, _clip(auc - half, 0.0, 1.0), _clip(auc + half, 0.0, 1.0))


def delong_paired(
    y_true: npt.ArrayLike,
    scores_a: npt.ArrayLike,
    scores_b: npt.ArrayLike,
    confidence: float = 0.95,
) -> TestResult:
    """AUCs of two models on the same cases (shadow mode): DeLong's paired test.

    Both AUCs come from the same cases, so they are correlated; DeLong's covariance of the
    structural components accounts for it. The difference's variance is that of the
    per-case component differences, which is much smaller than the sum of the two variances
    when the models rank alike.

    Args:
        y_true: 0/1 labels of the shared cases.
        scores_a: arm A's (the champion's) scores of those cases.
        scores_b: arm B's (the challenger's) scores of the same cases, same order.
        confidence: two-sided confidence level of the interval.

    Returns:
        ``difference`` = AUC B - AUC A, ``statistic`` = z, ``p_worse`` = P(Z <= z), the
        one-sided p-value of "B's AUC is lower". NaN when ``y_true`` holds one class only.

    Raises:
        ValueError: lengths differ, labels other than 0/1, non-finite scores, bad confidence.
    """
    z_c = _z(confidence)
    labels = _labels("y_true", y_true)
    values_a, values_b = _scores("scores_a", scores_a), _scores("scores_b", scores_b)
    _same_length(y_true=labels, scores_a=values_a, scores_b=values_b)
    method = "DeLong (paired)"
    if _one_class(labels):
        return _undefined(f"{method}: AUC undefined, y_true holds only one class")
    auc_a, v10_a, v01_a = _delong_components(labels, values_a)
    auc_b, v10_b, v01_b = _delong_components(labels, values_b)
    variance = _delong_variance(v10_b - v10_a, v01_b - v01_a)
    return _normal_result(method, auc_b - auc_a, variance, z_c)


def delong_unpaired(
    y_a: npt.ArrayLike,
    scores_a: npt.ArrayLike,
    y_b: npt.ArrayLike,
    scores_b: npt.ArrayLike,
    confidence: float = 0.95,
) -> TestResult:
    """AUCs of two models on different cases (canary, A/B): DeLong variances added.

    Independent samples have no covariance, so the variance of the difference is the sum of
    each arm's DeLong variance.

    Args:
        y_a: 0/1 labels of arm A's cases.
        scores_a: arm A's scores of them.
        y_b: 0/1 labels of arm B's cases.
        scores_b: arm B's scores of them.
        confidence: two-sided confidence level of the interval.

    Returns:
        As :func:`delong_paired`; NaN when an arm's labels hold one class only.

    Raises:
        ValueError: lengths differ, labels other than 0/1, non-finite scores, bad confidence.
    """
    z_c = _z(confidence)
    labels_a, labels_b = _labels("y_a", y_a), _labels("y_b", y_b)
    values_a, values_b = _scores("scores_a", scores_a), _scores("scores_b", scores_b)
    _same_length(y_a=labels_a, scores_a=values_a)
    _same_length(y_b=labels_b, scores_b=values_b)
    method = "DeLong (unpaired)"
    for arm, labels in (("A", labels_a), ("B", labels_b)):
        if _one_class(labels):
            return _undefined(f"{method}: AUC undefined, arm {arm}'s labels hold only one class")
    auc_a, v10_a, v01_a = _delong_components(labels_a, values_a)
    auc_b, v10_b, v01_b = _delong_components(labels_b, values_b)
    variance = _delong_variance(v10_a, v01_a) + _delong_variance(v10_b, v01_b)
    return _normal_result(method, auc_b - auc_a, variance, z_c)


# --- probabilities -----------------------------------------------------------------------------


def log_loss(y_true: npt.ArrayLike, probabilities: npt.ArrayLike, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood of the labels, probabilities clipped to [eps, 1 - eps].

    A proper scoring rule that punishes confident mistakes hard; the clipping keeps a
    probability of exactly 0 or 1 from making it infinite. The clip applies to the probability
    given to the observed label (``p`` for a positive, ``1 - p`` for a negative), so both kinds
    of certain mistake cost exactly ``-ln(eps)``: ``1 - (1 - eps)`` is not ``eps`` in floats.

    Args:
        y_true: 0/1 labels.
        probabilities: predicted probabilities of the positive class.
        eps: clipping margin, in (0, 0.5).

    Returns:
        NaN for empty inputs.

    Raises:
        ValueError: lengths differ, labels other than 0/1, probabilities outside [0, 1].
    """
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    labels, probs = _labelled_probabilities(y_true, probabilities)
    if labels.size == 0:
        return _NAN
    observed = np.clip(np.where(labels, probs, 1.0 - probs), eps, 1.0 - eps)
    return float(-np.mean(np.log(observed)))


def brier_score(y_true: npt.ArrayLike, probabilities: npt.ArrayLike) -> float:
    """Mean squared error of the probabilities: bounded and proper, NaN for empty inputs.

    Raises:
        ValueError: lengths differ, labels other than 0/1, probabilities outside [0, 1].
    """
    labels, probs = _labelled_probabilities(y_true, probabilities)
    if labels.size == 0:
        return _NAN
    return float(np.mean((probs - labels) ** 2))


def calibration(y_true: npt.ArrayLike, probabilities: npt.ArrayLike, bins: int = 10) -> Calibration:
    """Expected calibration error over equal-width probability bins, weighted by count.

    ECE = sum over bins of (count / total) * |mean probability - observed positive rate|: how
    far, on average over the predictions, the stated probability is from what happens. Bin
    ``i`` holds [i / bins, (i + 1) / bins), the last one includes 1.

    Args:
        y_true: 0/1 labels.
        probabilities: predicted probabilities of the positive class.
        bins: number of equal-width bins over [0, 1].

    Returns:
        The ECE (NaN for empty inputs) and one row per non-empty bin: ``low``, ``high``,
        ``mean_probability``, ``observed_rate``, ``count``.

    Raises:
        ValueError: ``bins`` < 1, lengths differ, labels other than 0/1, probabilities
            outside [0, 1].
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    labels, probs = _labelled_probabilities(y_true, probabilities)
    if labels.size == 0:
        return Calibration(_NAN, [])
    index = np.minimum(np.floor(probs * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    sum_probs = np.bincount(index, weights=probs, minlength=bins)
    sum_labels = np.bincount(index, weights=labels.astype(np.float64), minlength=bins)
    rows: list[dict[str, float]] = []
    ece = 0.0
    for i in np.flatnonzero(counts):
        count = int(counts[i])
        mean_probability = float(sum_probs[i]) / count
        observed_rate = float(sum_labels[i]) / count
        ece += count / labels.size * abs(mean_probability - observed_rate)
        rows.append(
            {
                "low": int(i) / bins,
                "high": (int(i) + 1) / bins,
                "mean_probability": mean_probability,
                "observed_rate": observed_rate,
                "count": float(count),
            }
        )
    return Calibration(ece, rows)


# --- agreement and distributions ---------------------------------------------------------------


def agreement_rate(
    labels_a: Sequence[str] | npt.ArrayLike, labels_b: Sequence[str] | npt.ArrayLike
) -> Interval:
    """Share of paired predictions (same requests) on which the arms agree, Wilson interval.

    Needs no ground truth, so it is available from the first shadow request on.

    Raises:
        ValueError: the sequences differ in length or are not one-dimensional.
    """
    first = np.asarray(labels_a, dtype=object)
    second = np.asarray(labels_b, dtype=object)
    for name, array in (("labels_a", first), ("labels_b", second)):
        if array.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got {array.ndim} dimensions")
    _same_length(labels_a=first, labels_b=second)
    agreeing = sum(1 for a, b in zip(first.tolist(), second.tolist()) if a == b)
    return wilson_interval(agreeing, first.size)


def score_shift(scores_a: npt.ArrayLike, scores_b: npt.ArrayLike) -> TestResult:
    """Whether the arms' score distributions differ: two-sample Kolmogorov-Smirnov.

    KS compares whole distributions without assuming a shape, and needs no labels. A shift is
    neither better nor worse, so ``p_worse`` is the two-sided p-value, from Kolmogorov's
    limiting distribution (scipy's ``kstwobign``: a live comparison has hundreds of scores per
    arm, where it is within a few percent of the finite-sample one).
    ``difference`` is mean(B) - mean(A), with a 95% large-sample interval (unequal variances).

    Returns:
        ``statistic`` = KS D. NaN everywhere when an arm has no scores.

    Raises:
        ValueError: non-finite scores.
    """
    values_a, values_b = _scores("scores_a", scores_a), _scores("scores_b", scores_b)
    method = "two-sample Kolmogorov-Smirnov (asymptotic), 95% interval of the mean difference"
    if values_a.size == 0 or values_b.size == 0:
        arm = "A" if values_a.size == 0 else "B"
        return _undefined(f"{method}: no scores in arm {arm}")
    statistic = _ks_statistic(values_a, values_b)
    effective = values_a.size * values_b.size / (values_a.size + values_b.size)
    p_value = _kolmogorov_sf(statistic * math.sqrt(effective))
    difference = float(values_b.mean() - values_a.mean())
    low, high = _mean_difference_interval(values_a, values_b, difference, 0.95)
    return TestResult(method, difference, low, high, statistic, p_value, p_value)


def _ks_statistic(values_a: FloatArray, values_b: FloatArray) -> float:
    """The largest distance between the two empirical distribution functions."""
    a, b = np.sort(values_a), np.sort(values_b)
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / a.size
    cdf_b = np.searchsorted(b, points, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


def _kolmogorov_sf(x: float) -> float:
    """P(K > x) of Kolmogorov's distribution: 2 * sum (-1)^(k-1) exp(-2 k^2 x^2).

    The series converges fast for x above about 0.3; below, the p-value is 1 to within 1e-10.
    """
    if x < 0.3:
        return 1.0
    total = 0.0
    for k in range(1, 101):
        term = math.exp(-2.0 * k * k * x * x)
        total += term if k % 2 else -term
        if term < 1e-16:
            break
    return min(1.0, max(0.0, 2.0 * total))


def population_stability_index(
    expected: npt.ArrayLike, actual: npt.ArrayLike, bins: int = 10
) -> float:
    """PSI = sum((a - e) * ln(a / e)) over the quantile bins of ``expected``.

    Quantile bins give each bin an equal share of the reference, so no bin is nearly empty
    there; shares are floored at :data:`PSI_EPSILON` so an empty bin stays finite. About 0.1
    is a small shift, 0.2 and above a significant one.

    Args:
        expected: reference values (e.g. the champion's scores).
        actual: values compared with them (e.g. the challenger's scores).
        bins: number of quantile bins (fewer when the reference has ties at the cuts).

    Returns:
        The PSI, NaN when either input is empty.

    Raises:
        ValueError: ``bins`` < 1 or non-finite values.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    reference, window = _scores("expected", expected), _scores("actual", actual)
    if reference.size == 0 or window.size == 0:
        return _NAN
    edges = np.unique(np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    slots = edges.size + 1

    def shares(values: FloatArray) -> FloatArray:
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=slots)
        return np.clip(counts / values.size, PSI_EPSILON, None)

    ref_share, win_share = shares(reference), shares(window)
    return float(np.sum((win_share - ref_share) * np.log(win_share / ref_share)))


# --- helpers -----------------------------------------------------------------------------------


def _z(confidence: float) -> float:
    """Two-sided standard normal quantile of a confidence level."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _upper_tail(z: float) -> float:
    """P(Z >= z) for a standard normal Z (erfc keeps tiny tails accurate)."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _two_sided(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def _count(name: str, value: int) -> int:
    """A non-negative integer count (numpy integers accepted, floats refused)."""
    number = operator.index(value)
    if number < 0:
        raise ValueError(f"{name} must be >= 0, got {number}")
    return number


def _proportion(name: str, successes: int, total_name: str, total: int) -> tuple[int, int]:
    """Counts of a proportion: both non-negative, the part no larger than the whole."""
    part, whole = _count(name, successes), _count(total_name, total)
    if part > whole:
        raise ValueError(f"{name} ({part}) exceeds {total_name} ({whole})")
    return part, whole


def _wilson_bounds(successes: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score bounds of successes / n (n > 0), exactly 0 or 1 at the extremes."""
    p = successes / n
    z2n = z * z / n
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n))
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def _binomial_half_tail(k: int, n: int, *, upper: bool) -> float:
    """P(X >= k) (upper) or P(X <= k) of X ~ Binomial(n, 1/2), exact in integers."""
    ks = range(k, n + 1) if upper else range(0, k + 1)
    return sum(math.comb(n, i) for i in ks) / (1 << n)


def _tango_score(b: int, c: int, n: int, delta: float) -> float:
    """Tango's (1998) score statistic of H0: difference = delta, for b, c discordant of n.

    The variance is evaluated at the maximum likelihood estimate of the cell probabilities
    under H0, q = P(A wrong, B right), the root in [0, 1] of 2n q^2 + w q - c delta (1 - delta)
    with w = (2n - b + c) delta - b - c.
    """
    w = (2 * n - b + c) * delta - b - c
    product = c * delta * (1.0 - delta)
    root = math.sqrt(max(w * w + 8.0 * n * product, 0.0))
    # The same root either way; this form avoids cancellation of root - w when w > 0.
    q = 2.0 * product / (root + w) if w > 0 else (root - w) / (4.0 * n)
    variance = n * (2.0 * q + delta * (1.0 - delta))
    excess = b - c - n * delta
    if variance <= 0.0:
        return math.copysign(math.inf, excess) if excess else 0.0
    return excess / math.sqrt(variance)


def _tango_interval(b: int, c: int, n: int, z: float) -> tuple[float, float]:
    """The differences Tango's score test does not reject at level z, by bisection.

    The score decreases in delta from +inf at -1 to -inf at 1 (0 at the estimate), so each
    bound is the single crossing of +z (below the estimate) or -z (above it).
    """
    estimate = (b - c) / n

    def lower(delta: float) -> float:
        return _tango_score(b, c, n, delta) - z

    def upper(delta: float) -> float:
        return _tango_score(b, c, n, delta) + z

    low = -1.0 if lower(-1.0) <= 0.0 else _bisect(lower, -1.0, estimate)
    high = 1.0 if upper(1.0) >= 0.0 else _bisect(upper, estimate, 1.0)
    return low, high


def _bisect(function: Callable[[float], float], low: float, high: float) -> float:
    """Root of a decreasing function, positive at ``low`` and not positive at ``high``."""
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2.0
        if function(middle) > 0.0:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


def _labels(name: str, values: npt.ArrayLike) -> BoolArray:
    """0/1 labels as booleans (True = positive)."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got {array.ndim} dimensions")
    if array.size and not bool(np.isin(array, (0, 1)).all()):
        raise ValueError(f"{name} must hold only 0 and 1")
    return array.astype(bool)


def _scores(name: str, values: npt.ArrayLike) -> FloatArray:
    """Finite scores as a float array."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got {array.ndim} dimensions")
    if not bool(np.isfinite(array).all()):
        raise ValueError(f"{name} must hold only finite numbers")
    return array


def _labelled_probabilities(
    y_true: npt.ArrayLike, probabilities: npt.ArrayLike
) -> tuple[BoolArray, FloatArray]:
    """Validated labels and probabilities of the same length."""
    labels = _labels("y_true", y_true)
    probs = _scores("probabilities", probabilities)
    _same_length(y_true=labels, probabilities=probs)
    if probs.size and not bool(((probs >= 0.0) & (probs <= 1.0)).all()):
        raise ValueError("probabilities must lie in [0, 1]")
    return labels, probs


def _same_length(**arrays: npt.NDArray[np.generic]) -> None:
    """Raise a ValueError naming the arguments when their lengths differ."""
    lengths = {name: array.shape[0] for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name} ({length})" for name, length in lengths.items())
        raise ValueError(f"lengths differ: {described}")


def _one_class(labels: BoolArray) -> bool:
    """True when the labels hold no positive or no negative (AUC undefined)."""
    return bool(labels.all()) or not bool(labels.any())


def _delong_components(
    labels: BoolArray, scores: FloatArray
) -> tuple[float, FloatArray, FloatArray]:
    """AUC and DeLong's structural components from midranks (Sun & Xu 2014).

    V10[i] is the share of negatives positive i outranks (ties one half): the midrank of i
    among all cases minus its midrank among the positives, over the number of negatives.
    V01[j] is the share of positives that outrank negative j, likewise. The AUC is the mean
    of either.
    """
    positives, negatives = scores[labels], scores[~labels]
    m, k = positives.size, negatives.size
    combined = _midranks(np.concatenate([positives, negatives]))
    v10 = (combined[:m] - _midranks(positives)) / k
    v01 = 1.0 - (combined[m:] - _midranks(negatives)) / m
    return float(v10.mean()), v10, v01


def _midranks(values: FloatArray) -> FloatArray:
    """Ranks from 1, ties sharing the mean of their ranks (scipy's ``rankdata``, "average")."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], ordered.size]
    mean_rank = (starts + ends + 1) / 2.0  # ranks start+1..end, their mean
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def _delong_variance(v10: FloatArray, v01: FloatArray) -> float:
    """DeLong's variance S10 / m + S01 / n; NaN with fewer than 2 positives or negatives."""
    if v10.size < 2 or v01.size < 2:
        return _NAN
    return float(np.var(v10, ddof=1) / v10.size + np.var(v01, ddof=1) / v01.size)


def _normal_result(method: str, difference: float, variance: float, z_c: float) -> TestResult:
    """Wald test and interval of an AUC difference (B - A); B is worse when it is negative."""
    if math.isnan(variance):
        reason = "variance undefined with fewer than 2 positives or negatives"
        return TestResult(f"{method}: {reason}", difference, _NAN, _NAN, _NAN, _NAN, _NAN)
    se = math.sqrt(variance)
    if se == 0.0:
        if difference == 0.0:
            return TestResult(f"{method}: arms rank identically", 0.0, 0.0, 0.0, 0.0, 1.0, 0.5)
        reason = "zero variance, test undefined"
        return TestResult(
            f"{method}: {reason}", difference, difference, difference, _NAN, _NAN, _NAN
        )
    z = difference / se
    low = _clip(difference - z_c * se, -1.0, 1.0)
    high = _clip(difference + z_c * se, -1.0, 1.0)
    return TestResult(method, difference, low, high, z, _two_sided(z), _upper_tail(-z))


def _mean_difference_interval(
    values_a: FloatArray, values_b: FloatArray, difference: float, confidence: float
) -> tuple[float, float]:
    """The large-sample interval of mean(B) - mean(A) with unequal variances (Welch's standard
    error, a normal quantile: Welch's t quantile is within 1 % of it from 60 degrees of
    freedom); NaN with fewer than 2 values in an arm."""
    if values_a.size < 2 or values_b.size < 2:
        return _NAN, _NAN
    share_a = float(np.var(values_a, ddof=1)) / values_a.size
    share_b = float(np.var(values_b, ddof=1)) / values_b.size
    se = math.sqrt(share_a + share_b)
    if se == 0.0:
        return difference, difference
    half = NormalDist().inv_cdf(0.5 + confidence / 2.0) * se
    return difference - half, difference + half


def _undefined(method: str) -> TestResult:
    """A result whose every number is NaN, the reason in ``method``."""
    return TestResult(method, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN)


def _clip(value: float, low: float, high: float) -> float:
    """``value`` limited to [low, high]; NaN stays NaN."""
    return value if math.isnan(value) else min(high, max(low, value))
