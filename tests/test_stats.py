"""The report's statistics agree with scipy.stats computed directly, and say
nothing (NaN, not resolved) where one value cannot say anything."""

import math
import warnings

import numpy as np
import pytest
import scipy.stats

from masksep import stats

X = np.array([5.31, 4.87, 5.62, 5.05, 5.44, 4.98])
REF = np.array([4.90, 4.71, 5.10, 4.95, 4.97, 4.80])


def test_describe_is_the_t_interval_of_the_mean():
    got = stats.describe(X)
    low, high = scipy.stats.t.interval(0.95, len(X) - 1, loc=X.mean(), scale=scipy.stats.sem(X))
    assert got["n"] == 6 and got["mean"] == pytest.approx(X.mean())
    assert got["std"] == pytest.approx(X.std(ddof=1))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high))
    # by hand on 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.3027
    small = stats.describe([1.0, 2.0, 3.0])
    assert (small["ci_low"], small["ci_high"]) == pytest.approx((2 - 4.302653 / 3**0.5, 2 + 4.302653 / 3**0.5))
    assert stats.describe(X, confidence=0.99)["ci_low"] < got["ci_low"]  # wider at 99%


def test_one_value_has_a_mean_and_no_spread():
    one = stats.describe([4.2, None, math.nan])
    assert one["n"] == 1 and one["mean"] == 4.2
    assert all(math.isnan(one[k]) for k in ("std", "ci_low", "ci_high"))
    assert stats.describe([])["n"] == 0 and math.isnan(stats.describe([])["mean"])
    pair = stats.paired([5.0], [4.0])
    assert pair["n"] == 1 and pair["mean"] == 1.0
    assert all(math.isnan(pair[k]) for k in ("ci_low", "ci_high", "p_t", "p_wilcoxon"))
    assert stats.verdict(pair["ci_low"], pair["ci_high"]) == stats.NOT_RESOLVED


def test_paired_difference_agrees_with_scipy():
    got = stats.paired(X, REF)
    d = X - REF
    t = scipy.stats.ttest_rel(X, REF)
    low, high = scipy.stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=scipy.stats.sem(d))
    assert got["n"] == 6 and got["mean"] == pytest.approx(d.mean())
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high))
    assert got["p_t"] == pytest.approx(t.pvalue)
    assert got["p_t"] == pytest.approx(scipy.stats.ttest_1samp(d, 0.0).pvalue)  # paired = one-sample on d
    assert got["p_wilcoxon"] == pytest.approx(scipy.stats.wilcoxon(d).pvalue)
    # a Bonferroni-adjusted level widens the interval as scipy's own does
    wide = stats.paired(X, REF, confidence=1 - 0.05 / 3)
    ci = t.confidence_interval(1 - 0.05 / 3)
    assert (wide["ci_low"], wide["ci_high"]) == pytest.approx((ci.low, ci.high))


def test_pairs_with_a_missing_side_are_dropped():
    x = np.append(X, [math.nan, 6.0])
    ref = np.append(REF, [5.0, math.nan])
    assert stats.paired(x, ref) == pytest.approx(stats.paired(X, REF))


def test_wilcoxon_floor_is_the_exact_tests_smallest_p():
    for n in (3, 5, 6):
        assert stats.wilcoxon_floor(n) == pytest.approx(scipy.stats.wilcoxon(np.arange(1.0, n + 1)).pvalue)
    assert stats.wilcoxon_floor(5) > 0.05  # five seeds can never give Wilcoxon p < 0.05


def test_verdict_reads_the_interval_against_its_bound():
    assert stats.verdict(0.1, 0.5) == stats.HOLDS
    assert stats.verdict(-0.5, -0.1) == stats.DOES_NOT_HOLD
    assert stats.verdict(-0.1, 0.5) == stats.NOT_RESOLVED
    assert stats.verdict(-0.2, 0.1, bound=-0.3) == stats.HOLDS  # non-inferiority at a 0.3 dB margin
    assert stats.verdict(-0.5, -0.35, bound=-0.3) == stats.DOES_NOT_HOLD
    assert stats.verdict(math.nan, math.nan) == stats.NOT_RESOLVED


def test_pooled_sd_half_width_and_seeds_needed():
    sd, dof = stats.pooled_sd([(3, 1.0), (5, 2.0), (1, 9.0), (4, math.nan)])  # n = 1 and NaN carry nothing
    assert dof == 6 and sd == pytest.approx(math.sqrt((2 * 1 + 4 * 4) / 6))
    assert stats.pooled_sd([(1, math.nan)]) == (pytest.approx(math.nan, nan_ok=True), 0)
    assert stats.half_width(0.3, 5) == pytest.approx(scipy.stats.t.ppf(0.975, 4) * 0.3 / 5**0.5)
    assert math.isnan(stats.half_width(0.3, 1))
    n = stats.seeds_needed(0.3, 0.2)
    assert n == 12  # t(0.975, 11) * 0.3 / sqrt(12) = 0.191; at 11 seeds 0.2015
    assert stats.half_width(0.3, n) <= 0.2 < stats.half_width(0.3, n - 1)
    assert stats.seeds_needed(math.nan) is None
    assert stats.seeds_needed(0.05, 0.2) == 3  # t(0.975, 1) = 12.7 makes two seeds resolve little
    assert stats.seeds_needed(0.02, 0.2) == 2


def test_values_equal_but_for_rounding_get_their_interval_without_a_warning():
    x = [0.1 + 0.2, 0.3, 0.30000000000000004]  # the same number, as three computations give it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = stats.describe(x)
    assert out["n"] == 3 and out["ci_low"] <= out["mean"] <= out["ci_high"]
    assert out["ci_high"] - out["ci_low"] < 1e-12


def test_power_matches_the_paired_t_tables_and_sizes_a_study():
    # A standardized effect of 0.5 (0.2 dB at an SD of 0.4) needs 34 pairs for 80 %
    # power at a two-sided 5 % (the standard paired-t table; G*Power gives 34 too).
    assert stats.seeds_for_power(0.4, 0.2) == 34
    assert stats.power(0.4, 34, 0.2) >= 0.8 > stats.power(0.4, 33, 0.2)
    # power is more than a CI width: at SD 0.48 a 0.2 dB half-width needs 25 seeds,
    # finding a real 0.2 dB difference four times in five needs about twice that
    assert stats.seeds_needed(0.48, 0.2) == 25 and stats.seeds_for_power(0.48, 0.2) == 48
    assert stats.seeds_for_power(float("nan")) is None


def test_p_against_a_bound_agrees_with_the_ci_and_holm_is_step_down():
    rng = np.random.default_rng(3)
    ref = rng.normal(5, 1, 8)
    x = ref - 0.1 + rng.normal(0, 0.05, 8)
    low, high = stats.paired(x, ref)["ci_low"], stats.paired(x, ref)["ci_high"]
    for bound in (-0.3, -0.1, 0.0):
        p = stats.p_against(x, ref, bound)
        assert (p < 0.05) == (not low <= bound <= high)
        assert p == pytest.approx(scipy.stats.ttest_1samp(x - ref, bound).pvalue)
    assert stats.holm([0.01, 0.04, 0.03, math.nan, 0.005]) == pytest.approx(
        [0.03, 0.06, 0.06, math.nan, 0.02], nan_ok=True)
