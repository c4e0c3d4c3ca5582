"""The analysis statistics against scipy (and hand-worked values) on known inputs."""
import math

import numpy as np
import pytest
from scipy import stats as st

from ablate.analysis.statistics.stats import (holm, image_seed_bootstrap, mcnemar_exact, mean_ci, paired_diff, sign_flip_test,
                                              smallest_sign_flip_p, std)

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


def test_sign_flip_exact_hand_worked():
    # d = (3, -1, 2): of the 8 sign patterns, |sum| >= 4 for (3,1,2), (3,-1,2) and their negatives: p = 4/8.
    p, exact = sign_flip_test([0.03, -0.01, 0.02])
    assert exact and p == pytest.approx(0.5)
    # All differences of one sign: only the observed pattern and its mirror are as extreme: p = 2/2^n.
    for n in (2, 3, 5, 6):
        p, exact = sign_flip_test([0.005] * n)
        assert exact and p == pytest.approx(2 / 2 ** n) == pytest.approx(smallest_sign_flip_p(n))
    assert sign_flip_test([0.0, 0.0, 0.0]) == (1.0, True)


def test_sign_flip_matches_scipy_permutation_test():
    d = np.array(ACC_A) - np.array(ACC_B[::-1])
    ref = st.permutation_test((d,), np.mean, permutation_type="samples", alternative="two-sided",
                              n_resamples=np.inf).pvalue
    p, exact = sign_flip_test(d)
    assert exact and p == pytest.approx(ref)


def test_sign_flip_samples_patterns_above_sixteen_pairs():
    p, exact = sign_flip_test([0.01] * 20)
    # exact p would be 2/2^20; the sampled estimate is (1 + hits) / (1 + samples), hits ~ 0
    assert not exact and 1 / 100_001 <= p < 1e-3
    assert sign_flip_test([0.01] * 20) == (p, exact)  # seeded


def test_paired_diff_matches_scipy():
    a, b = ACC_A[:5], ACC_B[:5][::-1]
    d = np.array(a) - np.array(b)
    res = paired_diff(a, b)
    low, high = st.t.interval(0.95, df=4, loc=d.mean(), scale=st.sem(d))
    ref = st.ttest_rel(a, b)
    assert res.n == 5 and res.mean == pytest.approx(d.mean())
    assert (res.low, res.high) == pytest.approx((low, high))
    assert res.sd == pytest.approx(d.std(ddof=1)) and res.effect == pytest.approx(d.mean() / d.std(ddof=1))
    assert res.t == pytest.approx(ref.statistic) and res.p_t == pytest.approx(ref.pvalue)
    assert res.p_sign_flip == pytest.approx(sign_flip_test(d)[0]) and res.min_p == pytest.approx(2 / 32)


def test_paired_diff_of_a_constant_difference_is_not_p_zero():
    # Two seeds, the same 0.5-pp difference (one test image of 200): the old code said p = 0.0.
    res = paired_diff([0.905, 0.910], [0.900, 0.905])
    assert res.n == 2 and res.mean == pytest.approx(0.005)
    assert res.p_sign_flip == pytest.approx(0.5) and res.min_p == pytest.approx(0.5)
    assert res.sd == 0.0 and math.isinf(res.effect) and math.isnan(res.p_t)
    assert res.low == pytest.approx(0.005) and res.high == pytest.approx(0.005)


def test_paired_diff_edge_cases():
    same = paired_diff([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert same.mean == 0 and same.p_sign_flip == 1.0 and same.effect == 0.0
    one = paired_diff([0.5], [0.4])
    assert one.n == 1 and math.isnan(one.low) and one.p_sign_flip == pytest.approx(1.0)
    # Pairs with a missing side drop out together.
    assert paired_diff([0.5, float("nan"), 0.7, 0.9], [0.4, 0.3, 0.5, 0.6]).n == 3
    assert paired_diff([], []).n == 0
    with pytest.raises(ValueError):
        paired_diff([0.1, 0.2], [0.1])


def test_mcnemar_exact_hand_worked():
    assert mcnemar_exact(10, 0) == pytest.approx(2 * 0.5 ** 10)
    assert mcnemar_exact(3, 1) == pytest.approx(st.binomtest(1, 4, 0.5).pvalue) == pytest.approx(0.625)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(5, 5) == 1.0


def test_image_seed_bootstrap_one_pair_is_the_percentile_bootstrap_over_images():
    rng = np.random.default_rng(4)
    d = rng.choice([-1.0, 0.0, 0.0, 0.0, 1.0, 1.0], size=200)
    ours = image_seed_bootstrap([d], [0], n_resamples=20_000)
    ref = st.bootstrap((d,), np.mean, n_resamples=20_000, method="percentile", random_state=1).confidence_interval
    assert ours.mean == pytest.approx(d.mean()) and ours.n == 1
    assert ours.low == pytest.approx(ref.low, abs=0.006) and ours.high == pytest.approx(ref.high, abs=0.006)


def test_image_seed_bootstrap_shares_one_resample_of_shared_images():
    rng = np.random.default_rng(5)
    d = rng.choice([-1.0, 0.0, 1.0, 1.0], size=300)
    shared = image_seed_bootstrap([d, d], [0, 0])
    own = image_seed_bootstrap([d, d], [0, 1])
    # The same images reused by two seed pairs are one sample: the interval is that of one pair.
    single = image_seed_bootstrap([d], [0])
    assert shared.half_width == pytest.approx(single.half_width, rel=0.05)
    # Two independent image sets average out, except in the half of the draws where the seed resample
    # picks one pair twice: variance (1/2)(s^2/2) + (1/2)s^2 = 3s^2/4, so sqrt(4/3) narrower.
    assert shared.half_width / own.half_width == pytest.approx(math.sqrt(4 / 3), rel=0.08)
    # A difference that is the same on every image and seed has no spread at all.
    ones = image_seed_bootstrap([np.ones(50), np.ones(50)], [0, 0])
    assert (ones.low, ones.mean, ones.high) == (1.0, 1.0, 1.0)


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
