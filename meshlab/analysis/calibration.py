"""Calibration by simulation: do the verdicts keep their promises on data with a known truth?

Each simulated experiment draws per-round paired log-ratios for a primary family of three
metrics (p50 latency, node CPU, sidecar CPU) from a noise model measured on this project's
host kind, and is judged exactly as the report judges one: exact signed-rank intervals, exact
Wilcoxon tests, Holm within the family, and for adaptive designs the stopping rule with alpha
spent over its looks. `make calibration` prints the table docs/methodology.md quotes.

Noise model: round log-ratios ~ sd x t(4) (heavier-tailed than normal), plus, with probability
`outlier_p` per round, one round shifted by `outlier_scale` x sd (the aa-duet round 2 that ran
+64 % on one CPU). Default sds are the paired log-ratio sds of the A/A and default runs on the
2-vCPU host: p50 0.02, node CPU 0.013, sidecar CPU 0.015.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meshlab.analysis import stats
from meshlab.record.spec import first_look_rounds

SDS = (0.02, 0.013, 0.015)  # p50, node CPU, sidecar CPU: paired log-ratio sd per round


@dataclass(frozen=True)
class Design:
    name: str
    looks: tuple[int, ...]  # one look: a fixed design
    half_width_percent: float | None = None  # adaptive: stop when every metric is this narrow


@dataclass(frozen=True)
class Outcome:
    design: str
    simulations: int
    family_false_positive: float  # A/A: any primary metric claimed different
    coverage: float  # every metric's interval held the truth (per metric, averaged)
    mean_rounds: float
    detected: float  # effect runs: the effect metric claimed, in the right direction


def draw(
    rng: np.random.Generator,
    simulations: int,
    rounds: int,
    effects: tuple[float, float, float] = (0.0, 0.0, 0.0),
    sds: tuple[float, ...] = SDS,
    outlier_p: float = 0.03,
    outlier_scale: float = 10.0,
) -> np.ndarray:
    """(simulations, 3, rounds) paired log-ratios."""
    sd = np.array(sds)[None, :, None]
    d = sd * rng.standard_t(4, (simulations, 3, rounds)) / np.sqrt(2.0)  # t(4) has sd √2
    hit = rng.random((simulations, 1, rounds)) < outlier_p
    d = d + hit * outlier_scale * sd * rng.choice([-1.0, 1.0], (simulations, 1, rounds))
    return d + np.log1p(np.array(effects))[None, :, None]


def judge(d: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Per simulation and metric (shape (s, 3)): claimed different (Holm within the family of
    three), and the interval at level alpha, shape (s, 3, 2)."""
    s, k, n = d.shape
    flat = d.reshape(s * k, n)
    ci, _ = stats.exact_ci(flat, alpha)
    p = stats.wilcoxon_p(flat).reshape(s, k)
    adjusted = np.vstack([stats.holm(row) for row in p])
    differs = stats.differs(ci, adjusted.ravel(), alpha).reshape(s, k)
    return differs, ci.reshape(s, k, 2)


def run_design(
    design: Design,
    rng: np.random.Generator,
    simulations: int,
    effects: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> Outcome:
    if design.looks[0] < first_look_rounds(len(design.looks)):
        raise ValueError(
            f"{design.name}: a first look at {design.looks[0]} rounds shows no interval at "
            f"alpha 0.05/{len(design.looks)}; the schema refuses it too (stop.min_rounds)"
        )
    alpha = stats.ALPHA / len(design.looks)
    d = draw(rng, simulations, design.looks[-1], effects)
    stopped_at = np.full(simulations, len(design.looks) - 1)
    if design.half_width_percent is not None:
        for li, n in enumerate(design.looks[:-1]):
            _, ci = judge(d[:, :, :n], alpha)
            half = 100 * (np.expm1(ci[:, :, 1]) - np.expm1(ci[:, :, 0])) / 2
            narrow = np.all(half <= design.half_width_percent, axis=1)
            stopped_at = np.where((stopped_at == len(design.looks) - 1) & narrow, li, stopped_at)
    differs = np.zeros((simulations, 3), dtype=bool)
    ci = np.zeros((simulations, 3, 2))
    for li, n in enumerate(design.looks):
        mask = stopped_at == li
        if mask.any():
            differs[mask], ci[mask] = judge(d[mask, :, :n], alpha)
    truth = np.log1p(np.array(effects))
    covered = (ci[:, :, 0] <= truth) & (truth <= ci[:, :, 1])
    null = np.array(effects) == 0
    effect_metric = int(np.argmax(np.abs(effects))) if not null.all() else 0
    right_way = np.sign(effects[effect_metric]) * np.sign(ci[:, effect_metric].mean(axis=1)) > 0
    return Outcome(
        design=design.name,
        simulations=simulations,
        family_false_positive=float(differs[:, null].any(axis=1).mean()) if null.any() else 0.0,
        coverage=float(covered.mean()),
        mean_rounds=float(np.array(design.looks)[stopped_at].mean()),
        detected=float((differs[:, effect_metric] & right_way).mean()) if not null.all() else 0.0,
    )


def rounds_for(
    effect: float, rng: np.random.Generator, simulations: int, power: float = 0.8
) -> int | None:
    """Fewest rounds at which a fixed design detects `effect` on p50 (the other two primary
    metrics null) in at least `power` of the simulations."""
    for n in range(6, 61):
        out = run_design(Design(f"fixed {n}", (n,)), rng, simulations, (effect, 0.0, 0.0))
        if out.detected >= power:
            return n
    return None
