"""Adaptive stopping (`stop:` in the experiment): end a block once its answer is known.

A block is one load point under one flood size. At each look (`Experiment.looks()`: every
`stop.every` paired rounds from `stop.min_rounds`, and the last planned round) the primary
family is analysed at spec.ADAPTIVE_ALPHA (96 % intervals). The block stops when every primary
metric's interval half-width is at most the target; its remaining planned rounds are skipped.
The rule reads widths only, never a sign or a p-value: the calibration (docs/methodology.md,
"Adaptive stopping") measured that judging every look at 0.04 keeps the family's false
positives under 5 % and coverage over 94 % whatever the target and however many looks, so alpha
is not split over the looks. The state is recomputed from the trial records at every step, so a
resumed run continues where it was.
"""

from __future__ import annotations

import math

from meshlab.analysis.loading.pairing import build_pairs
from meshlab.analysis.loading.run import Run
from meshlab.analysis.statistics.analyse import pairset_results, primary_alpha
from meshlab.analysis.statistics.fmt import level
from meshlab.analysis.statistics.results import PRIMARY
from meshlab.record.format import Manifest, PlanEntry, StopState


def block_key(load_point: str, flood: object, placement: str) -> str:
    """A block of the plan as the manifest's `stopping` names it: load point/flood/placement."""
    return f"{load_point}/{flood}/{placement}"


def block_of(entry: PlanEntry) -> str:
    return block_key(entry.load_point, entry.flood, entry.placement)


def evaluate(run: Run, manifest: Manifest) -> dict[str, StopState]:
    """The stopping rule's state per block (empty for a fixed design), from the records the
    engine holds (the analysis' view of them)."""
    exp = manifest.experiment
    if exp.stop is None:
        return {}
    alpha, looks = primary_alpha(run)
    target = exp.stop.half_width_percent
    states: dict[str, StopState] = {}
    for ps in build_pairs(run):
        block = block_key(ps.load_point, ps.flood, ps.placement)
        widths = [
            r.half_width_percent
            for r in pairset_results(run, ps, alpha, resamples=0)
            if r.family == PRIMARY
        ]
        width = max(widths) if widths and None not in widths else None  # type: ignore[type-var]
        met = ps.n in looks and width is not None and width <= target
        previous = states.get(block)
        if previous is not None:  # several arms: the block waits for every comparison
            met = met and previous.stopped
            width = (
                None
                if width is None or previous.half_width_percent is None
                else max(width, previous.half_width_percent)
            )
        if met:
            reason = (
                f"stopped after {ps.n} paired rounds: every primary {level(alpha)} CI "
                f"half-width is within ±{target:g} % (widest ±{width:.2f} %)"
            )
        elif ps.n >= exp.rounds:
            reason = (
                f"ran all {exp.rounds} planned rounds; the widest primary {level(alpha)} CI "
                "half-width is "
                + (f"±{width:.2f} %" if width is not None else "not known")
                + f" (target ±{target:g} %)"
            )
        else:
            reason = f"{ps.n} paired rounds; next look at {next_look(looks, ps.n)}"
        states[block] = StopState(rounds=ps.n, half_width_percent=width, stopped=met, reason=reason)
    return states


def next_look(looks: list[int], n: int) -> int:
    return next((k for k in looks if k > n), looks[-1])


def rounds_left(state: StopState, target: float, planned: int) -> int | None:
    """A rough forecast for the progress bar: half-widths shrink as 1/√n."""
    if state.stopped:
        return 0
    if state.half_width_percent is None or state.rounds == 0:
        return None
    need = state.rounds * (state.half_width_percent / target) ** 2
    return max(0, min(planned, math.ceil(need)) - state.rounds)
