"""The analysis statistics against scipy (and hand-worked values) on known inputs."""
import math

import numpy as np
import pytest
from scipy import stats as st

from ablate.analysis.stats import bootstrap_diff_ci, holm, mean_ci, paired_test, std

ACC_A = [0.912, 0.925, 0.918, 0.931, 0.909, 0.927, 0.921]
ACC_B = [0.887, 0.902, 0.899, 0.915, 0.893, 0.896, 0.905]


def test_mean_ci_matches_scipy_t_interval():
    ci = mean_ci(ACC_A)
    low, high = st.t.interval(0.95, df=len(ACC_A) - 1, loc=np.mean(ACC_A), scale=st.sem(ACC_A))
    assert ci.n == 7 and ci.mean == pytest.approx(np.mean(ACC_A))
    assert ci.low == pytest.approx(low) and ci.high == pytest.approx(high)
    assert ci.half_width == pytest.approx((high - low) / 2)
    wider = mean_ci(ACC_A, confidence=0.99)
    assert wider.low < ci.low and wider.high > ci.high


def test_mean_ci_hand_worked_two_values():
    # mean 1, sd sqrt(2), sem 1, t(0.975, 1) = 12.7062...: the textbook two-sample case.
    ci = mean_ci([0.0, 2.0])
    assert ci.mean == 1.0 and ci.half_width == pytest.approx(12.7062047, rel=1e-6)


def test_mean_ci_degenerate_inputs_give_nan_not_errors():
    one = mean_ci([0.5])
    assert one.mean == 0.5 and one.n == 1 and math.isnan(one.low) and math.isnan(one.high)
    empty = mean_ci([])
    assert empty.n == 0 and math.isnan(empty.mean)
    # Missing values (a diverged trial's None / NaN) are left out rather than poisoning the mean.
    assert mean_ci([0.2, None, float("nan"), 0.4]).mean == pytest.approx(0.3)
    assert math.isnan(std([1.0])) and std([1.0, 3.0]) == pytest.approx(math.sqrt(2))


def test_bootstrap_diff_ci_agrees_with_scipy_bootstrap():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.92, 0.01, 12), rng.normal(0.90, 0.012, 12)
    ours = bootstrap_diff_ci(a, b, n_resamples=20_000, seed=3)
    ref = st.bootstrap((a, b), lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
                       n_resamples=20_000, method="percentile", vectorized=True, random_state=7).confidence_interval
    assert ours.mean == pytest.approx(a.mean() - b.mean())
    # Different random streams: the two percentile intervals agree to Monte-Carlo error.
    assert ours.low == pytest.approx(ref.low, abs=1e-3) and ours.high == pytest.approx(ref.high, abs=1e-3)
    assert ours.low < ours.mean < ours.high


def test_bootstrap_diff_ci_is_seeded_and_sensible():
    first = bootstrap_diff_ci(ACC_A, ACC_B, seed=0)
    assert first == bootstrap_diff_ci(ACC_A, ACC_B, seed=0)
    assert first != bootstrap_diff_ci(ACC_A, ACC_B, seed=1)
    # A is better under every seed, so the whole interval lies above zero.
    assert 0 < first.low < first.mean < first.high
    swapped = bootstrap_diff_ci(ACC_B, ACC_A, seed=0)
    assert swapped.mean == pytest.approx(-first.mean)
    assert math.isnan(bootstrap_diff_ci([0.5], [0.4]).low)
    assert math.isnan(bootstrap_diff_ci([], [0.4]).mean)


def test_paired_test_uses_wilcoxon_from_six_pairs():
    res = paired_test(ACC_A, ACC_B)
    ref = st.wilcoxon(ACC_A, ACC_B)
    assert res.test == "wilcoxon" and res.n == 7
    assert res.pvalue == pytest.approx(ref.pvalue) and res.statistic == pytest.approx(ref.statistic)
    assert "7 seed pairs" in res.reason
    # the boundary: exactly 6 pairs is enough for the signed-rank test
    six = paired_test(ACC_A[:6], ACC_B[:6])
    assert six.test == "wilcoxon" and six.pvalue == pytest.approx(st.wilcoxon(ACC_A[:6], ACC_B[:6]).pvalue)


def test_paired_test_uses_paired_t_below_six_pairs():
    a, b = ACC_A[:5], ACC_B[:5][::-1]
    res = paired_test(a, b)
    ref = st.ttest_rel(a, b)
    assert res.test == "paired t" and res.n == 5
    assert res.pvalue == pytest.approx(ref.pvalue) and res.statistic == pytest.approx(ref.statistic)
    assert "too few" in res.reason


def test_paired_test_edge_cases():
    assert paired_test([0.5], [0.4]).test == "none"
    same = paired_test([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert same.test == "none" and same.pvalue == 1.0
    constant = paired_test([0.6, 0.7, 0.8], [0.5, 0.6, 0.7])
    assert constant.test == "paired t" and constant.pvalue == 0.0 and constant.statistic > 0
    # Pairs with a missing side drop out together.
    assert paired_test([0.5, float("nan"), 0.7, 0.9], [0.4, 0.3, 0.5, 0.6]).n == 3
    with pytest.raises(ValueError):
        paired_test([0.1, 0.2], [0.1])


def test_holm_hand_worked_and_monotone():
    # Sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    out = holm([0.2, float("nan"), 0.01])
    assert out[0] == pytest.approx(0.2) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    p = np.random.default_rng(0).uniform(0, 0.2, 10)
    adj = np.array(holm(p))
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0) and np.all(adj >= p) and np.all(adj <= 1)
    assert holm([]) == []


def test_holm_matches_bonferroni_for_the_smallest_p():
    p = [0.004, 0.02, 0.3, 0.01]
    assert min(holm(p)) == pytest.approx(min(p) * len(p))
