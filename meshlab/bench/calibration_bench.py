"""Benchmark (not a test): `make calibration` — the verdicts' error rates by simulation with the
report's own decision code (meshlab/analysis/calibration.py), the tables docs/methodology.md
quotes. Sections (`--only`): designs, storms, walltime, stoprule, power, outliers, covariate."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
from scipy import stats as sps

from meshlab.analysis.statistics import power, stats
from meshlab.analysis.statistics.calibration import (
    Design,
    Outcome,
    covariate_run,
    judge,
    rounds_for,
    run_design,
    score,
)
from meshlab.analysis.statistics.noise import QUIET, TODAY, Noise, Storms, Timing, draw

EFFECTS = (-0.12, -0.08, -0.12)  # issue 19's runs: p50, node CPU, sidecar CPU, roughly
STORMS_MODERATE = Noise("storms, random arm, moderate", storms=Storms(0.2, 0.1, 60.0))
STORMS_HEAVY = Noise("storms, random arm, heavy", storms=Storms(0.25, 0.3, 30.0))
STORMS_ONE_ARM = Noise("storms hit the arm only", storms=Storms(0.2, 0.1, 60.0, hits="arm"))
SCENARIOS = (QUIET, STORMS_MODERATE, STORMS_HEAVY, STORMS_ONE_ARM)
SECTIONS = ("designs", "storms", "walltime", "stoprule", "power", "outliers", "covariate")


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def _sd_p50(noise: Noise, timing: Timing, rounds: int = 16) -> float:
    """Median over runs of the p50 log-ratio's sd: what a run of this design would report."""
    d = draw(np.random.default_rng(1), 2000, rounds, noise=noise, timing=timing).d[:, 0, :]
    return float(np.median(d.std(axis=1, ddof=1)))


def designs(rng: np.random.Generator, sims: int) -> None:
    print("### Designs on quiet noise (A/A, and a 3 % p50 effect)\n")
    rows = []
    for design in (
        Design("fixed 8 rounds (default.yml)", (8,)),
        Design("fixed 20 rounds", (20,)),
        Design("adaptive ±2 %, looks 8..20 every 2", tuple(range(8, 21, 2)), 2.0),
        Design("adaptive ±1 %, looks 8..20 every 2", tuple(range(8, 21, 2)), 1.0),
        Design("same ±2 %, Bonferroni 0.05/6 per look", tuple(range(10, 21, 2)), 2.0, 0.05 / 6),
    ):
        aa = run_design(design, rng, sims)
        eff = run_design(design, rng, sims, (-0.03, 0.0, 0.0))
        rows.append(
            [
                design.name,
                _pct(aa.family_false_positive),
                _pct(aa.coverage),
                f"{aa.mean_rounds:.1f}",
                f"{_pct(eff.detected)} ({_pct(eff.coverage)})",
                f"{eff.mean_rounds:.1f}",
            ]
        )
    _table(
        [
            "design",
            "A/A family FP",
            "coverage (A/A)",
            "mean rounds (A/A)",
            "3 % p50 detected (coverage)",
            "mean rounds (effect)",
        ],
        rows,
    )
    for size in (0.03, 0.01):
        n = rounds_for(-size, rng, sims)
        print(
            f"rounds a fixed design needs to detect a {100 * size:g} % p50 change in 80 % of "
            f"runs: {n if n is not None else '> 60'}"
        )
    print()


def _storm_row(name: str, design: Design, noise: Noise, rng, sims: int) -> list[str]:
    aa = run_design(design, rng, sims, noise=noise)
    eff = run_design(design, rng, sims, EFFECTS, noise=noise)
    return [
        name,
        design.name,
        f"{_sd_p50(noise, design.timing):.3f}",
        _pct(aa.family_false_positive),
        _pct(aa.coverage),
        _pct(eff.all_detected),
        _pct(eff.detected),
        _pct(eff.coverage),
        f"{aa.mean_rounds:.1f} / {eff.mean_rounds:.1f}",
        f"{eff.half_width_percent:.1f}",
    ]


_STORM_HEADER = [
    "noise",
    "design",
    "sd of p50 d",
    "A/A family FP",
    "coverage (A/A)",
    "all 3 detected",
    "p50 detected",
    "coverage (effect)",
    "mean rounds A/A / effect",
    "p50 half-width (pp)",
]


def storms(rng: np.random.Generator, sims: int) -> None:
    print(f"### Storms (15-s trials, 25 s between windows; effect {EFFECTS})\n")
    rows = []
    for noise in SCENARIOS:
        for design in (
            Design("fixed 8", (8,)),
            Design("fixed 16", (16,)),
            Design("fixed 24", (24,)),
            Design("adaptive ±5 %, 8..24 every 2", tuple(range(8, 25, 2)), 5.0),
        ):
            rows.append(_storm_row(noise.name, design, noise, rng, sims))
    _table(_STORM_HEADER, rows)


def walltime(rng: np.random.Generator, sims: int) -> None:
    print("### Designs at equal wall time (budget: 8 rounds of 15-s trials at each overhead)\n")
    rows = []
    for overhead in (0.0, 5.0, 25.0):
        budget = 2 * 8 * (15 + overhead)
        for noise in (
            QUIET,
            STORMS_MODERATE,
            STORMS_HEAVY,
            Noise("quiet, all averaging", averaging_share=1.0),
        ):
            for duration in (15.0, 8.0, 5.0):
                timing = Timing(duration, overhead)
                rounds = int(budget // (2 * timing.slot_s))
                design = Design(f"{duration:g} s x {rounds}", (rounds,), timing=timing)
                row = _storm_row(noise.name, design, noise, rng, sims)
                rows.append([f"{overhead:g} s", f"{design.minutes:.1f}", *row])
    _table(["overhead per trial", "minutes", *_STORM_HEADER], rows)


def stoprule(rng: np.random.Generator, sims: int) -> None:
    print(
        "### The per-look level of adaptive designs (width-only stop rule; worst over targets "
        "±0.6, 0.8, 1.0, 1.5, 2 %)\n"
    )
    noises = (
        Noise("normal, independent metrics", df=math.inf, outlier_p=0.0, host_share=0.0),
        Noise("t(4) + outliers, independent", host_share=0.0),
        Noise("normal, host-correlated metrics", df=math.inf, outlier_p=0.0),
    )
    rows = []
    for noise in noises:
        for looks in (tuple(range(8, 25, 2)), tuple(range(7, 41))):
            d = draw(rng, sims, looks[-1], noise=noise).d
            eff = draw(rng, sims, looks[-1], (-0.015, 0.0, 0.0), noise=noise).d
            bonf = tuple(n for n in looks if n >= stats.min_rounds_exact(3, 0.05 / len(looks)))
            for label, design_looks, level in (
                ("0.05", looks, 0.05),
                ("0.045", looks, 0.045),
                ("0.04 (chosen)", looks, None),
                (f"Bonferroni 0.05/{len(bonf)}", bonf, 0.05 / len(bonf)),
            ):
                outs = [
                    (
                        h,
                        score(
                            Design("", design_looks, h, level),
                            d[:, :, : design_looks[-1]],
                            (0, 0, 0),
                        ),
                    )
                    for h in (0.6, 0.8, 1.0, 1.5, 2.0)
                ]
                fp = max(outs, key=lambda o: o[1].family_false_positive)
                cov = min(outs, key=lambda o: o[1].coverage)
                p = score(Design("", design_looks, 1.0, level), eff, (-0.015, 0, 0))
                rows.append(
                    [
                        noise.name,
                        f"{design_looks[0]}..{design_looks[-1]} ({len(design_looks)} looks)",
                        label,
                        f"{_pct(fp[1].family_false_positive)} (±{fp[0]:g})",
                        f"{_pct(cov[1].coverage)} (±{cov[0]:g})",
                        _pct(p.detected),
                        f"{p.mean_rounds:.1f}",
                    ]
                )
    _table(
        [
            "noise",
            "looks",
            "alpha per look",
            "worst A/A family FP (target)",
            "worst coverage (target)",
            "1.5 % p50 detected at ±1 %",
            "mean rounds",
        ],
        rows,
    )


def _rule_power(effect_sd: float, n: int, tests: int, rng, sims: int, margin_sd=0.0) -> float:
    """Share of runs (normal rounds, sd 1) the rule settles for metric 0: claims its change
    (Holm over `tests`, the others null) or, given a margin, shows it equivalent."""
    d = rng.standard_normal((sims, tests, n))
    d[:, 0] += effect_sd
    differs, ci = judge(d, stats.ALPHA)
    settled = differs[:, 0] & (ci[:, 0, 0] > 0)
    if margin_sd > 0:
        st = stats.paired_stats(d[:, 0, :], margin_sd)
        settled |= stats.equivalent(st.ci95, st.tost_p, margin_sd)
    return float(settled.mean())


def power_check(rng: np.random.Generator, sims: int) -> None:
    print("### MDE and rounds needed against the decision rule (normal rounds)\n")
    rows = []
    for n, tests in ((8, 1), (8, 3), (14, 3), (24, 3), (40, 3)):
        m = power.mde_sd(n, stats.ALPHA, tests)
        old = (sps.t.ppf(0.975, n - 1) + sps.t.ppf(0.8, n - 1)) / math.sqrt(n)
        rows.append(
            [
                f"MDE, {n} rounds, family of {tests}",
                f"{m:.3f} sd",
                _pct(_rule_power(m, n, tests, rng, sims)),
                f"t formula {old:.3f} sd: {_pct(_rule_power(old, n, tests, rng, sims))}",
            ]
        )
    margin = math.log1p(0.02)
    for effect, sd in (
        (math.log(0.88), 0.12),
        (math.log(0.97), 0.02),
        (math.log(0.99), 0.02),
        (0.0, 0.02),
    ):
        n = int(power.rounds_needed(effect, sd, margin, stats.ALPHA, 3))
        got = _rule_power(-effect / sd, n, 3, rng, sims, margin / sd)
        below = _rule_power(-effect / sd, n - 1, 3, rng, sims, margin / sd)
        rows.append(
            [
                f"rounds needed, {100 * math.expm1(effect):+.0f} % at sd {sd}, family of 3",
                f"{n}",
                _pct(got),
                f"at {n - 1} rounds: {_pct(below)}",
            ]
        )
    _table(
        [
            "claim (rounds needed: a claimed change or equivalence within ±2 %)",
            "value",
            "rule's power there",
            "before / one round fewer",
        ],
        rows,
    )


def outliers(rng: np.random.Generator, sims: int) -> None:
    print("### Outlier flag: quiet runs with a round flagged (normal noise, independent metrics)\n")
    rows = []
    for family in (1, 3):
        for n in (6, 8, 12, 16, 24):
            d = rng.standard_normal((sims, family, n))
            fixed = stats.outlier_rounds(d.reshape(-1, n), 5.0).reshape(sims, -1).any(axis=1)
            z = stats.outlier_threshold(n, family)
            ours = stats.outlier_rounds(d.reshape(-1, n), z).reshape(sims, -1).any(axis=1)
            rows.append([str(family), str(n), _pct(fixed.mean()), f"{z:.2f}", _pct(ours.mean())])
    _table(["family", "rounds", "fixed z > 5", "family threshold", "with it"], rows)


def _cov_cell(o: Outcome, effect: bool) -> str:
    first = o.all_detected if effect else o.family_false_positive
    return f"{_pct(first)} / {_pct(o.coverage)} / {o.half_width_percent:.2f}"


def covariate(rng: np.random.Generator, sims: int) -> None:
    print(
        "### Host-speed covariate (probe r ~0.9 with the noise): per method A/A family FP (or, "
        "with an effect, all 3 detected) / coverage / p50 half-width in pp\n"
    )
    k6 = math.log(1 - 0.034)
    rows = []
    for noise in (QUIET, STORMS_HEAVY):
        for rounds in (8, 12, 16):
            for what, effects, shift in (
                ("A/A, probe arm-independent", (0.0, 0.0, 0.0), 0.0),
                ("effect, probe arm-independent", EFFECTS, 0.0),
                ("A/A, probe -3.4 % with the arm (k6 CPU)", (0.0, 0.0, 0.0), k6),
                ("effect, probe -3.4 % with the arm", EFFECTS, k6),
            ):
                row = covariate_run(what, rng, sims, rounds, effects, noise, 0.9, shift)
                eff = any(effects)
                rows.append(
                    [noise.name, str(rounds), what, f"{row.r:.2f}"]
                    + [
                        _cov_cell(o, eff)
                        for o in (row.raw, row.adjusted, row.in_sample, row.centred)
                    ]
                )
    _table(
        [
            "noise",
            "rounds",
            "scenario",
            "median r",
            "raw",
            "adjusted (cross-fit, x centred on 0)",
            "in-sample slope",
            "textbook CUPED (x - mean x)",
        ],
        rows,
    )


RUNNERS: dict[str, Callable[[np.random.Generator, int], None]] = {
    "designs": designs,
    "storms": storms,
    "walltime": walltime,
    "stoprule": stoprule,
    "power": power_check,
    "outliers": outliers,
    "covariate": covariate,
}


def main(simulations: int = 2000, seed: int = 2026, only: tuple[str, ...] = SECTIONS) -> int:
    for name in only:
        if name not in RUNNERS:
            raise ValueError(f"--only: unknown section {name!r}, one of {', '.join(SECTIONS)}")
    started = time.perf_counter()
    print(
        f"{simulations} simulated experiments per row, seed {seed} "
        f"(trial timing unless said: {TODAY.duration_s:g} s + {TODAY.overhead_s:g} s)\n"
    )
    for name in only:
        section = time.perf_counter()
        RUNNERS[name](np.random.default_rng([seed, SECTIONS.index(name)]), simulations)
        print(f"({name}: {time.perf_counter() - section:.0f} s)\n")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0
