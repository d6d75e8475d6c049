"""The host-speed covariate adjustment (meshlab/analysis/covariate.py): its algebra, its API,
and, by simulation with the report's decision rule, when its figures keep their promises."""

from __future__ import annotations

import math

import numpy as np
import pytest

from meshlab.analysis.statistics import covariate, stats
from meshlab.analysis.statistics.calibration import covariate_run
from meshlab.analysis.statistics.noise import Noise, Storms

STORMS = Noise(storms=Storms(0.25, 0.3, 30.0))  # p50 log-ratio sd ~0.13, as in issue 19's runs
EFFECTS = (-0.12, -0.08, -0.12)


def test_each_round_is_adjusted_by_the_slope_of_the_other_rounds() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.05, 9)
    d = np.vstack([0.8 * x + rng.normal(-0.1, 0.01, 9), rng.normal(0, 0.02, 9)])
    adj = covariate.adjust(d, x)
    for k in range(2):
        for r in range(9):
            others = np.arange(9) != r
            slope = np.polyfit(x[others], d[k, others], 1)[0]
            assert adj.d[k, r] == pytest.approx(d[k, r] - slope * x[r], abs=1e-12)
        assert adj.beta[k] == pytest.approx(np.polyfit(x, d[k], 1)[0], abs=1e-12)
    assert adj.r[0] > 0.9 and abs(adj.r[1]) < 0.9
    # an effect moves the adjusted rounds as it moves the raw ones: the exact interval applies
    shifted = covariate.adjust(d + 0.03, x)
    np.testing.assert_allclose(shifted.d, adj.d + 0.03, atol=1e-12)


def test_bad_input_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="covariate x has 5 rounds, the log-ratios d have 6"):
        covariate.adjust(np.zeros((1, 6)), np.zeros(5))
    with pytest.raises(ValueError, match="at least 4 rounds"):
        covariate.adjust(np.zeros((1, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="must be finite"):
        covariate.adjust(np.array([[0.1, np.nan, 0.2, 0.1]]), np.zeros(4))
    flat = covariate.adjust(np.array([[0.1, 0.2, 0.15, 0.12]]), np.zeros(4))
    np.testing.assert_allclose(flat.d, [[0.1, 0.2, 0.15, 0.12]])  # a flat probe changes nothing


def test_raw_and_adjusted_side_by_side() -> None:
    rng = np.random.default_rng(2)
    host = rng.normal(0, 0.1, 8)
    d = np.vstack([host + rng.normal(-0.1, 0.01, 8), 0.7 * host + rng.normal(-0.05, 0.01, 8)])
    x = host + rng.normal(0, 0.01, 8)
    rows, adj = covariate.raw_and_adjusted(d, x, 2.0, ("p50", "node CPU"))
    assert [r.label for r in rows] == ["p50", "node CPU"]
    for row in rows:
        assert row.adjusted.half_width_percent < row.raw.half_width_percent / 2
        assert row.adjusted.verdict == "lower" and row.r > 0.9
    text = covariate.format_side_by_side(rows, adj)
    assert text.splitlines()[1].startswith("p50 | ") and "covariate: " in text


def test_an_arm_independent_probe_narrows_the_intervals_and_keeps_the_error_rates() -> None:
    """Storms (p50 log-ratio sd ~0.13), a probe correlated ~0.9 with the noise, 8 rounds: the
    adjusted figures keep family false positives <= 5 % and coverage >= 94 % (binomial sd over
    2000 runs: 0.5 pp) and their intervals are about half as wide (residual sd √(1 - 0.9²) =
    0.44 of the raw one, less what cross-fitting costs at 8 rounds)."""
    rng = np.random.default_rng(3)
    aa = covariate_run("aa", rng, 2000, 8, noise=STORMS)
    assert 0.8 < aa.r < 0.97
    for out in (aa.raw, aa.adjusted):
        assert out.family_false_positive <= 0.06 and out.coverage >= 0.94, out
    assert aa.adjusted.half_width_percent < 0.6 * aa.raw.half_width_percent
    effect = covariate_run("effect", rng, 2000, 8, EFFECTS, noise=STORMS)
    assert effect.adjusted.all_detected > effect.raw.all_detected + 0.3
    assert effect.adjusted.coverage >= 0.94


def test_a_probe_that_carries_part_of_the_arm_s_effect_biases_the_adjusted_figures() -> None:
    """k6's own CPU: 3.4 % lower under ebpf. Used as the covariate it shifts every adjusted
    effect by -beta x ln(0.966): raw figures stay honest, adjusted ones claim what is not."""
    rng = np.random.default_rng(4)
    out = covariate_run("k6", rng, 2000, 16, noise=STORMS, arm_shift=math.log(1 - 0.034))
    assert out.raw.family_false_positive <= 0.06 and out.raw.coverage >= 0.94
    assert out.adjusted.family_false_positive > 0.15 and out.adjusted.coverage < 0.8


def test_textbook_cuped_centring_would_claim_a_precision_the_estimate_lacks() -> None:
    """d - beta (x - mean x): in a one-sample paired design its mean is exactly the raw mean,
    yet its rounds scatter like residuals (why covariate.py centres x on 0 by construction)."""
    rng = np.random.default_rng(5)
    out = covariate_run("cuped", rng, 1000, 8, noise=STORMS)
    assert out.centred.coverage < 0.8 and out.centred.family_false_positive > 0.2
    d = rng.normal(0, 0.05, (1, 8))
    x = rng.normal(0, 0.05, 8)
    centred = d - 0.5 * (x - x.mean())
    assert centred.mean() == pytest.approx(d.mean())
    assert stats.hodges_lehmann(covariate.adjust(d, x).d).shape == (1,)
