"""Calibration by simulation: do the verdicts keep their promises on data with a known truth?

Each simulated experiment draws per-round paired log-ratios for the primary family of three
metrics (p50 latency, node CPU, sidecar CPU) from a noise model of this project's host kind
(noise.py: quiet, storms that hit a random arm, storms that hit one arm), and is judged exactly
as the report judges one: exact signed-rank intervals, exact Wilcoxon tests, Holm within the
family, and for adaptive designs the width-only stopping rule, every look at the level
spec.look_alpha gives it (or, to compare, a level a design names).
`make calibration` prints the tables docs/methodology.md quotes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from meshlab.analysis.statistics import stats
from meshlab.analysis.statistics.noise import QUIET, TODAY, Noise, Timing, draw
from meshlab.record.spec import look_alpha


@dataclass(frozen=True)
class Design:
    name: str
    looks: tuple[int, ...]  # one look: a fixed design
    half_width_percent: float | None = None  # adaptive: stop when every metric is this narrow
    level: float | None = None  # alpha at every look; None: the project's rule (look_alpha)
    timing: Timing = field(default=TODAY)

    @property
    def alpha(self) -> float:
        return self.level if self.level is not None else look_alpha(len(self.looks))

    @property
    def minutes(self) -> float:
        """Wall time of the longest run: two trials a round, one slot each."""
        return 2 * self.looks[-1] * self.timing.slot_s / 60


@dataclass(frozen=True)
class Outcome:
    design: str
    simulations: int
    family_false_positive: float  # any metric with no true change claimed different
    coverage: float  # intervals that held the truth (per metric, averaged)
    mean_rounds: float
    detected: float  # the largest-effect metric claimed, in the right direction
    all_detected: float  # every metric with a true change claimed, in the right direction
    half_width_percent: float  # median over simulations of the p50 interval's half-width


def holm_rows(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p along the last axis of p (s, k), as stats.holm does for one family."""
    k = p.shape[1]
    order = np.argsort(p, axis=1)
    ranked = np.take_along_axis(p, order, axis=1) * (k - np.arange(k))[None, :]
    adjusted = np.minimum(np.maximum.accumulate(ranked, axis=1), 1.0)
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=1)
    return out


def judge(d: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Per simulation and metric (shape (s, k)): claimed different (Holm within the family of
    k), and the interval at level alpha, shape (s, k, 2)."""
    s, k, n = d.shape
    flat = d.reshape(s * k, n)
    ci, _ = stats.exact_ci(flat, alpha)
    adjusted = holm_rows(stats.wilcoxon_p(flat).reshape(s, k))
    differs = stats.differs(ci, adjusted.ravel(), alpha).reshape(s, k)
    return differs, ci.reshape(s, k, 2)


def half_widths(ci: np.ndarray) -> np.ndarray:
    """Half the interval's width in percentage points of the change, as the report computes it."""
    return 100 * (np.expm1(ci[..., 1]) - np.expm1(ci[..., 0])) / 2


def stop_look(d: np.ndarray, design: Design) -> np.ndarray:
    """Per simulation, the index of the look the design stops at: the first at which every
    metric's interval half-width is within the target (widths only, never signs or p)."""
    last = len(design.looks) - 1
    stopped_at = np.full(d.shape[0], last)
    if design.half_width_percent is None:
        return stopped_at
    for li, n in enumerate(design.looks[:-1]):
        live = stopped_at == last
        if not live.any():
            break
        ci, _ = stats.exact_ci(d[live, :, :n].reshape(-1, n), design.alpha)
        narrow = np.all(half_widths(ci).reshape(-1, d.shape[1]) <= design.half_width_percent, 1)
        idx = np.flatnonzero(live)[narrow]
        stopped_at[idx] = li
    return stopped_at


def check(design: Design, family: int = 3) -> None:
    """Refuse an adaptive design whose first look could never decide (as the schema does)."""
    if len(design.looks) > 1 and design.looks[0] < stats.min_rounds_exact(family, design.alpha):
        raise ValueError(
            f"{design.name}: a first look at {design.looks[0]} rounds can never decide at alpha "
            f"{design.alpha:.4f} within a family of {family}; the schema refuses it too "
            "(stop.min_rounds)"
        )


def run_design(
    design: Design,
    rng: np.random.Generator,
    simulations: int,
    effects: tuple[float, float, float] = (0.0, 0.0, 0.0),
    noise: Noise = QUIET,
) -> Outcome:
    check(design)
    d = draw(rng, simulations, design.looks[-1], effects, noise, design.timing).d
    return score(design, d, effects)


def score(design: Design, d: np.ndarray, effects: tuple[float, ...]) -> Outcome:
    """Judge simulated log-ratios d (s, k, rounds) with the design's looks and stop rule."""
    simulations, k, _ = d.shape
    stopped_at = stop_look(d, design)
    differs = np.zeros((simulations, k), dtype=bool)
    ci = np.zeros((simulations, k, 2))
    for li, n in enumerate(design.looks):
        mask = stopped_at == li
        if mask.any():
            differs[mask], ci[mask] = judge(d[mask, :, :n], design.alpha)
    truth = np.log1p(np.array(effects))
    covered = (ci[:, :, 0] <= truth) & (truth <= ci[:, :, 1])
    null = truth == 0
    right_way = np.sign(ci.mean(axis=2)) == np.sign(truth)
    hits = differs & right_way
    effect_metric = int(np.argmax(np.abs(truth)))
    return Outcome(
        design=design.name,
        simulations=simulations,
        family_false_positive=float(differs[:, null].any(axis=1).mean()) if null.any() else 0.0,
        coverage=float(covered.mean()),
        mean_rounds=float(np.array(design.looks)[stopped_at].mean()),
        detected=float(hits[:, effect_metric].mean()) if not null.all() else 0.0,
        all_detected=float(hits[:, ~null].all(axis=1).mean()) if not null.all() else 0.0,
        half_width_percent=float(np.median(half_widths(ci[:, 0]))),
    )


def rounds_for(
    effect: float,
    rng: np.random.Generator,
    simulations: int,
    power: float = 0.8,
    noise: Noise = QUIET,
) -> int | None:
    """Fewest rounds at which a fixed design detects `effect` on p50 (the other two primary
    metrics null) in at least `power` of the simulations."""
    for n in range(6, 61):
        out = run_design(Design(f"fixed {n}", (n,)), rng, simulations, (effect, 0.0, 0.0), noise)
        if out.detected >= power:
            return n
    return None


# --- the host-speed covariate (covariate.py) ------------------------------------------------


def probe(
    rng: np.random.Generator,
    noise: Noise,
    timing: Timing,
    host: np.ndarray,
    target_r: float,
    arm_shift: float = 0.0,
) -> tuple[np.ndarray, float]:
    """A host-speed probe's paired log-ratio x per round for `host` (s, rounds): the host's
    slowness plus the probe's own noise, set so that x correlates `target_r` with the p50
    log-ratio's noise (outlier rounds aside; if even a perfect probe cannot, it gets none), plus
    `arm_shift`, the part of the arm's effect a probe that is not arm-independent carries.
    Returns x and the probe's per-trial noise sd."""
    pilot = draw(
        np.random.default_rng(0), 4000, 8, noise=replace(noise, outlier_p=0.0), timing=timing
    )
    h, d = pilot.host.ravel(), pilot.d[:, 0, :].ravel()
    cov, var_h, var_d = np.cov(h, d)[0, 1], h.var(), d.var()
    var_u = (cov**2 / (target_r**2 * var_d) - var_h) / 2
    sd_u = float(np.sqrt(max(var_u, 0.0)))
    u = sd_u * (rng.standard_normal(host.shape) - rng.standard_normal(host.shape))
    return host + u + arm_shift, sd_u


@dataclass(frozen=True)
class CovariateRow:
    name: str
    r: float  # median over runs of the correlation of x with the p50 log-ratios
    raw: Outcome
    adjusted: Outcome  # covariate.adjust: x centred on 0 by construction, cross-fitted slope
    in_sample: Outcome  # the same with one slope fitted on all rounds: it over-fits
    centred: Outcome  # d - beta (x - mean x), textbook CUPED: invalid in a paired design


def covariate_run(
    name: str,
    rng: np.random.Generator,
    simulations: int,
    rounds: int,
    effects: tuple[float, float, float] = (0.0, 0.0, 0.0),
    noise: Noise = QUIET,
    target_r: float = 0.9,
    arm_shift: float = 0.0,
) -> CovariateRow:
    """One fixed design judged raw, adjusted as covariate.adjust does, and adjusted the two
    ways it does not (for the record), on the same simulated runs."""
    from meshlab.analysis.statistics.covariate import adjust_many

    design = Design(f"fixed {rounds}", (rounds,))
    dr = draw(rng, simulations, rounds, effects, noise, design.timing)
    x, _ = probe(rng, noise, design.timing, dr.host, target_r, arm_shift)
    xc = x - x.mean(axis=1, keepdims=True)
    dc = dr.d - dr.d.mean(axis=2, keepdims=True)
    beta = (dc * xc[:, None, :]).sum(axis=2, keepdims=True) / (xc**2).sum(axis=1)[:, None, None]
    r = np.median([np.corrcoef(dr.d[i, 0], x[i])[0, 1] for i in range(min(simulations, 1000))])
    return CovariateRow(
        name=name,
        r=float(r),
        raw=score(design, dr.d, effects),
        adjusted=score(design, adjust_many(dr.d, x), effects),
        in_sample=score(design, dr.d - beta * x[:, None, :], effects),
        centred=score(design, dr.d - beta * xc[:, None, :], effects),
    )
