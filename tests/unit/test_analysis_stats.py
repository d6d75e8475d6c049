"""meshlab.analysis.statistics.stats: the vectorised paired-statistics core, against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest

from meshlab.analysis.statistics import stats


def _brute_hl(x: np.ndarray) -> float:
    walsh = [(x[i] + x[j]) / 2 for i in range(len(x)) for j in range(i, len(x))]
    return float(np.median(walsh))


def test_hodges_lehmann_is_the_median_of_walsh_averages() -> None:
    d = np.random.default_rng(1).normal(0.01, 0.02, (4, 9))
    np.testing.assert_allclose(stats.hodges_lehmann(d), [_brute_hl(row) for row in d])
    # robust: one wild round moves HL far less than the mean
    x = np.array([0.01, 0.012, 0.009, 0.011, 0.010, 0.013, 0.5])
    assert abs(stats.hodges_lehmann(x)[0] - 0.011) < 0.002 < abs(x.mean() - 0.011)


@pytest.mark.parametrize("n", [6, 13])
def test_weighted_bootstrap_equals_resampling_rounds_and_recomputing_hl(n: int) -> None:
    d = np.random.default_rng(n).normal(-0.02, 0.03, (3, n))
    boot = stats.bootstrap_hl(d, np.random.default_rng(99), resamples=300)
    idx = np.random.default_rng(99).integers(0, n, size=(300, n))
    brute = np.array([[_brute_hl(row[ix]) for ix in idx] for row in d])
    np.testing.assert_allclose(boot, brute, atol=1e-15)


def test_expanded_percentile_is_wider_at_small_n_and_tends_to_nominal() -> None:
    assert stats.expanded_alpha(0.05, 6) < 0.01
    assert stats.expanded_alpha(0.05, 20) < 0.05
    assert stats.expanded_alpha(0.05, 2000) == pytest.approx(0.05, abs=0.001)


def test_signed_rank_p_is_exact_at_six_rounds() -> None:
    assert stats.wilcoxon_p(np.array([[0.01, 0.02, 0.03, 0.04, 0.05, 0.06]]))[0] == pytest.approx(
        2 / 2**6
    )
    assert stats.wilcoxon_p(np.zeros((1, 8)))[0] == 1.0


def test_holm_adjustment() -> None:
    np.testing.assert_allclose(
        stats.holm(np.array([0.01, 0.04, 0.03, 0.2])), [0.04, 0.09, 0.09, 0.2]
    )


def test_fewer_than_six_rounds_gives_no_interval_and_no_test() -> None:
    st = stats.paired_stats(np.full((2, 5), 0.05), 0.02, np.random.default_rng(0))
    assert np.isnan(st.ci95).all() and np.isnan(st.wilcoxon_p).all() and np.isnan(st.tost_p).all()
    assert st.estimate == pytest.approx([0.05, 0.05])


def test_equivalence_needs_the_interval_inside_the_margin() -> None:
    rng = np.random.default_rng(3)
    margin = math.log1p(0.02)
    near_zero = rng.normal(0.0, 0.003, (1, 12))
    shifted = rng.normal(0.05, 0.003, (1, 12))
    for d, expect in ((near_zero, True), (shifted, False)):
        st = stats.paired_stats(d, margin, rng)
        assert bool(stats.equivalent(st.ci90, st.tost_p, margin)[0]) is expect
        assert bool(stats.differs(st.ci95, st.wilcoxon_p)[0]) is not expect


def test_cov_percent() -> None:
    assert stats.cov_percent(np.array([9.0, 10.0, 11.0])) == pytest.approx(10.0)
    assert math.isnan(stats.cov_percent(np.array([1.0])))


# Two-sided alpha 0.05 critical values of the signed-rank statistic, as printed in published
# tables (e.g. Hollander & Wolfe, Table A.4; the classic Wilcoxon T table): reject when T <= c.
PUBLISHED_T_05 = {6: 0, 7: 2, 8: 3, 9: 5, 10: 8, 11: 10, 12: 13, 13: 17, 14: 21, 15: 25, 20: 52}


@pytest.mark.parametrize(("n", "c"), sorted(PUBLISHED_T_05.items()))
def test_critical_values_match_the_published_table(n: int, c: int) -> None:
    assert stats.critical_value(n, 0.05) == c


def test_no_interval_exists_below_six_rounds() -> None:
    assert stats.critical_value(5, 0.05) is None
    ci, conf = stats.exact_ci(np.ones((1, 5)), 0.05)
    assert np.isnan(ci).all() and math.isnan(conf)


def test_the_exact_interval_is_order_statistics_of_walsh_averages() -> None:
    d = np.random.default_rng(8).normal(0.01, 0.02, (3, 8))
    ci, conf = stats.exact_ci(d, 0.05)
    for row, (lo, hi) in zip(d, ci, strict=True):
        walsh = sorted((row[i] + row[j]) / 2 for i in range(8) for j in range(i, 8))
        assert (lo, hi) == (walsh[3], walsh[36 - 4])  # c = 3: W(4) and W(33) of 36
    assert conf == pytest.approx(1 - 2 * 5 / 256)  # P(T <= 3) = 5/256 at n = 8: 96.1 %


def test_the_exact_interval_covers_the_truth_at_its_achieved_confidence() -> None:
    rng = np.random.default_rng(2026)
    d = rng.standard_t(3, (4000, 8)) * 0.03 + 0.02  # skewless but heavy-tailed rounds
    ci, conf = stats.exact_ci(d, 0.05)
    covered = ((ci[:, 0] <= 0.02) & (ci[:, 1] >= 0.02)).mean()
    assert covered == pytest.approx(conf, abs=0.012)


def test_a_far_round_is_flagged_and_a_quiet_set_is_not() -> None:
    d = np.array([[0.01, 0.012, 0.009, 0.011, 0.010, 0.013, 0.3, 0.0105]])
    assert stats.outlier_rounds(d)[0].tolist() == [False] * 6 + [True, False]
    quiet = np.random.default_rng(1).normal(0, 0.01, (200, 12))
    assert stats.outlier_rounds(quiet, 5.0).mean() < 0.005  # about 0.3 % of pure-noise rounds
    # MAD 0 (most rounds identical): nothing to measure a distance against, nothing flagged
    tied = np.array([[0.01, 0.01, 0.01, 0.01, 0.012, 0.011]])
    assert not stats.outlier_rounds(tied).any()


def test_equivalence_is_never_claimed_beside_a_95_interval_leaving_the_margin() -> None:
    margin = math.log1p(0.02)
    # the aa-duet shape: tight rounds but one +64 % round
    d = np.array(
        [[0.002, -0.004, 0.006, 0.001, -0.002, 0.003, 0.004, -0.001, 0.0, 0.005, 0.49, 0.002]]
    )
    st = stats.paired_stats(d, margin)
    assert st.ci95[0, 1] < margin or not stats.equivalent(st.ci95, st.tost_p, margin)[0]


def _brute_signed_rank_p(row: np.ndarray, alternative: str = "two-sided") -> float:
    """Every one of the 2^n sign patterns of the non-zero |d| ranks (mid-ranks for ties): the
    permutation distribution the exact test must reproduce."""
    from itertools import product

    from scipy.stats import rankdata

    x = row[row != 0]
    ranks = rankdata(np.abs(x))
    observed = ranks[x > 0].sum()
    t = np.array(list(product((0.0, 1.0), repeat=x.size))) @ ranks
    below, above = (t <= observed + 1e-9).mean(), (t >= observed - 1e-9).mean()
    if alternative == "greater":
        return float(above)
    if alternative == "less":
        return float(below)
    return float(min(1.0, 2 * min(below, above)))


def test_wilcoxon_with_ties_and_zeros_is_exact_for_every_row_of_a_batch() -> None:
    """Integer-µs durations tie and give zero log-ratios; from 14 rounds scipy's `auto` then
    uses a normal approximation without continuity correction (anti-conservative), and a batch
    with one tied row switched every row to it. Each row must get its exact permutation p."""
    rng = np.random.default_rng(19)
    tied = np.round(rng.normal(0.003, 0.006, (5, 16)), 3)  # ties and zeros at this resolution
    clean = rng.normal(0.003, 0.006, (1, 16))
    rows = np.vstack([clean, tied])
    assert (tied == 0).any() and all(len(set(np.abs(r))) < 16 for r in tied)
    p = stats.wilcoxon_p(rows)
    for row, got in zip(rows, p, strict=True):
        assert got == pytest.approx(_brute_signed_rank_p(row), abs=1e-12)
    assert stats.wilcoxon_p(clean)[0] == p[0]  # a tied neighbour changes nothing
    for alternative in ("greater", "less"):
        one_sided = stats.wilcoxon_p(tied, alternative=alternative)
        expect = [_brute_signed_rank_p(row, alternative) for row in tied]
        np.testing.assert_allclose(one_sided, expect, atol=1e-12)


@pytest.mark.parametrize(("n", "family"), [(6, 3), (8, 3), (8, 1), (16, 3), (24, 6)])
def test_a_far_round_is_flagged_in_1_of_20_quiet_runs_per_family(n: int, family: int) -> None:
    """Issue 19: the fixed threshold 5 flagged a round in 4.5 % of quiet 8-round runs per metric,
    but in 13 % per family of three primaries (18 % at 6 rounds, 3 % at 24). The threshold is
    now the family's own: exceeded by chance in 5 % of pure-noise runs of that size."""
    rng = np.random.default_rng(n * 100 + family)
    runs = rng.normal(0.0, 0.02, (4000, family, n))
    flagged = np.array([stats.outlier_rounds(run).any() for run in runs])
    assert flagged.mean() == pytest.approx(0.05, abs=0.015)  # binomial sd 0.35 pp
