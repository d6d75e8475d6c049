"""Benchmark (not a test): `make calibration` — the verdicts' error rates by simulation
(meshlab/analysis/calibration.py), the table docs/methodology.md quotes."""

from __future__ import annotations

import time

import numpy as np

from meshlab.analysis.calibration import Design, rounds_for, run_design

DESIGNS = (
    Design("fixed 8 rounds (default.yml)", (8,)),
    Design("fixed 20 rounds", (20,)),
    Design("adaptive ±2 %, looks 10..20 every 2", tuple(range(10, 21, 2)), 2.0),
    Design("adaptive ±1 %, looks 10..20 every 2", tuple(range(10, 21, 2)), 1.0),
)


def main(simulations: int = 2000, seed: int = 2026) -> int:
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    print(f"{simulations} simulated experiments per row, seed {seed}")
    print(
        "| design | A/A family false positives | CI coverage (A/A) | mean rounds (A/A) "
        "| 3 % p50 effect detected | mean rounds (effect) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for design in DESIGNS:
        aa = run_design(design, rng, simulations)
        effect = run_design(design, rng, simulations, (-0.03, 0.0, 0.0))
        print(
            f"| {design.name} | {100 * aa.family_false_positive:.1f} % | "
            f"{100 * aa.coverage:.1f} % | {aa.mean_rounds:.1f} | "
            f"{100 * effect.detected:.1f} % (coverage {100 * effect.coverage:.1f} %) | "
            f"{effect.mean_rounds:.1f} |"
        )
    for effect_size in (0.03, 0.01):
        n = rounds_for(-effect_size, rng, simulations)
        print(
            f"rounds a fixed design needs to detect a {100 * effect_size:g} % p50 change in "
            f"80 % of runs: {n if n is not None else '> 60'}"
        )
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0
