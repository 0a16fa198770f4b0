"""The statistics of masksep's reports (the study report, the analysis), all from scipy.stats: a cell's mean and t
confidence interval, a paired difference with its t-test and Wilcoxon
signed-rank test, a verdict from a CI, and what a design can resolve.

A cell with one value has a mean and nothing else: no std, no CI, no p. Every
function here returns NaN there rather than a number that looks like a result.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

CONFIDENCE = 0.95
HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
NOT_RESOLVED = "not resolved at this n"


def _finite(values: Iterable[Any]) -> np.ndarray:
    x = np.asarray([v for v in values if v is not None], dtype=float)
    return x[np.isfinite(x)]


def describe(values: Iterable[Any], confidence: float = CONFIDENCE) -> dict[str, float]:
    """n, mean, std (ddof 1) and the t confidence interval of the mean."""
    from scipy import stats

    x = _finite(values)
    n = len(x)
    out = {"n": n, "mean": float(x.mean()) if n else math.nan, "std": math.nan,
           "ci_low": math.nan, "ci_high": math.nan}
    if n < 2:
        return out
    out["std"] = float(x.std(ddof=1))
    if out["std"] == 0:  # scipy divides by the std; the interval of identical values is the value
        out["ci_low"] = out["ci_high"] = out["mean"]
        return out
    with warnings.catch_warnings():
        # Values equal but for rounding (e.g. the same initial weights measured per
        # seed): scipy warns of precision loss and still gives the (tiny) interval.
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = stats.ttest_1samp(x, 0.0).confidence_interval(confidence)
    out["ci_low"], out["ci_high"] = float(ci.low), float(ci.high)
    return out


def paired(x: Iterable[Any], reference: Iterable[Any], confidence: float = CONFIDENCE
           ) -> dict[str, float]:
    """x - reference over pairs (same seed): n, mean, std, its CI, the paired
    t-test p (scipy.stats.ttest_rel) and the Wilcoxon signed-rank p
    (scipy.stats.wilcoxon; where n >= 2 and some difference is not zero).
    Pairs with a missing side are dropped."""
    from scipy import stats

    a = np.asarray(list(x), dtype=float)
    b = np.asarray(list(reference), dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    out = {**describe(a - b, confidence), "p_t": math.nan, "p_wilcoxon": math.nan}
    if out["n"] < 2 or out["std"] == 0:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # ties among few pairs: scipy warns, still answers
        test = stats.ttest_rel(a, b)
        ci = test.confidence_interval(confidence)
        out.update(p_t=float(test.pvalue), ci_low=float(ci.low), ci_high=float(ci.high))
        if np.any(a != b):
            out["p_wilcoxon"] = float(stats.wilcoxon(a, b).pvalue)
    return out


def p_against(x: Iterable[Any], reference: Iterable[Any], bound: float = 0.0) -> float:
    """Two-sided paired t p-value of mean(x - reference) == ``bound`` (the test
    whose 95 % CI the verdict reads: p < 0.05 exactly when the CI excludes it)."""
    from scipy import stats

    a = np.asarray(list(x), dtype=float)
    b = np.asarray(list(reference), dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    if len(d) < 2 or np.std(d) == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_1samp(d, bound).pvalue)


def holm(p_values: Iterable[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (NaN stays NaN and
    does not count): reject where the adjusted p < alpha controls the
    family-wise error at alpha. scipy has Benjamini-Hochberg, not Holm."""
    p = [float(v) for v in p_values]
    finite = sorted((v, i) for i, v in enumerate(p) if math.isfinite(v))
    m = len(finite)
    out = [math.nan] * len(p)
    running = 0.0
    for rank, (value, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * value))
        out[i] = running
    return out


def wilcoxon_floor(n: int) -> float:
    """The smallest two-sided p the exact signed-rank test can give with n pairs."""
    return min(1.0, 2.0 / 2**n) if n > 0 else math.nan


def verdict(ci_low: float, ci_high: float, bound: float = 0.0) -> str:
    """holds when the whole CI lies above ``bound``, does not hold when it lies
    below, else (or with no CI) not resolved."""
    if not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return NOT_RESOLVED
    if ci_low > bound:
        return HOLDS
    if ci_high < bound:
        return DOES_NOT_HOLD
    return NOT_RESOLVED


def pooled_sd(groups: Iterable[tuple[int, float]]) -> tuple[float, int]:
    """Pooled standard deviation of (n, sd) groups and its degrees of freedom."""
    parts = [(n - 1, sd) for n, sd in groups if n >= 2 and math.isfinite(sd)]
    dof = sum(d for d, _ in parts)
    if not dof:
        return math.nan, 0
    return math.sqrt(sum(d * sd**2 for d, sd in parts) / dof), dof


def half_width(sd: float, n: int, confidence: float = CONFIDENCE) -> float:
    """Half-width of the t CI of a mean of n values with standard deviation sd."""
    from scipy import stats

    if n < 2 or not math.isfinite(sd):
        return math.nan
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n))


def seeds_needed(sd: float, target: float = 0.2, confidence: float = CONFIDENCE,
                 limit: int = 100_000) -> int | None:
    """Smallest n >= 2 whose CI half-width t_{n-1} * sd / sqrt(n) is <= target
    (None when sd is unknown or no n up to ``limit`` reaches it)."""
    if not math.isfinite(sd):
        return None
    if sd == 0:
        return 2
    # The half-width falls monotonically in n: bisect between 2 and limit.
    lo, hi = 2, limit
    if half_width(sd, hi, confidence) > target:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if half_width(sd, mid, confidence) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def power(sd: float, n: int, effect: float, confidence: float = CONFIDENCE) -> float:
    """The power of a two-sided paired t-test with n pairs to detect a true mean
    difference ``effect`` when the differences have standard deviation ``sd``
    (the noncentral t, scipy.stats.nct)."""
    from scipy import stats

    if n < 2 or not math.isfinite(sd) or sd <= 0:
        return math.nan
    dof = n - 1
    crit = stats.t.ppf(0.5 + confidence / 2, dof)
    shift = effect / sd * math.sqrt(n)
    return float(stats.nct.sf(crit, dof, shift) + stats.nct.cdf(-crit, dof, shift))


def seeds_for_power(sd: float, effect: float = 0.2, target: float = 0.8,
                    confidence: float = CONFIDENCE, limit: int = 10_000) -> int | None:
    """Smallest n >= 2 whose paired t-test detects ``effect`` with probability
    ``target`` (80 %) at this SD: how many seeds a study needs so that a real
    difference of that size is found, not merely a CI of some width. None when
    sd is unknown or no n up to ``limit`` reaches it."""
    if not math.isfinite(sd):
        return None
    if sd == 0:
        return 2
    # Upwards from 2: scipy's noncentral t turns to NaN far out in n, so no bisection.
    for n in range(2, limit + 1):
        if power(sd, n, effect, confidence) >= target:
            return n
    return None
