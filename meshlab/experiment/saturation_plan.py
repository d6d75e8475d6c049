"""The saturation search in the run's plan (`saturation:` in the experiment): after the planned
blocks, the engine appends one search step at a time (each arm at its own next rate, in the
search's seeded order) and rebuilds the search from the trials recorded so far, so a resumed
run carries on where it stopped. The search itself is experiment/saturation.py's."""

from __future__ import annotations

from meshlab.experiment.saturation import Limits, Outcome, SaturationSearch, SearchConfig
from meshlab.record.format import PlanEntry, TrialRecord
from meshlab.record.spec import SATURATION_PREFIX, Experiment


def is_saturation(load_point: str) -> bool:
    return load_point.startswith(SATURATION_PREFIX)


def config(exp: Experiment) -> SearchConfig:
    sat = exp.saturation
    assert sat is not None
    return SearchConfig(
        limits=Limits.from_gates(exp.gates, sat.p99_ms),
        start_rate=sat.start_rate,
        max_rate=sat.max_rate,
        min_rate=sat.min_rate,
        resolution=sat.resolution,
        growth=sat.growth,
        max_retries=sat.max_retries,
        seed=exp.seed,
    )


def replay(
    exp: Experiment, plan: list[PlanEntry], done: dict[int, TrialRecord]
) -> SaturationSearch:
    """The search after the saturation trials recorded so far, in the order they ran."""
    history = [
        (e.arm, done[e.index].load_point.rate, Outcome.from_trial(done[e.index]))
        for e in plan
        if is_saturation(e.load_point) and e.index in done
    ]
    return SaturationSearch.replay(list(exp.arms), config(exp), history)


def extend(exp: Experiment, plan: list[PlanEntry], done: dict[int, TrialRecord]) -> list[PlanEntry]:
    """Append the search's next step to `plan` (the plan only grows); [] when it is done."""
    search = replay(exp, plan, done)
    if search.done:
        return []
    sat = exp.saturation
    assert sat is not None
    new = []
    for arm, rate in search.next_rates().items():
        entry = PlanEntry(
            index=len(plan), round=search.step, arm=arm, load_point=sat.load_point(rate).name,
            flood=exp.flood_sizes[0], placement=exp.placement[0],
        )  # fmt: skip
        plan.append(entry)
        new.append(entry)
    return new


def charged(record: TrialRecord) -> bool:
    """Whether a rejected trial's time is charged to the noise budget: a saturation trial that
    failed a capacity gate found what it looked for; only an unusable one is noise."""
    if record.valid:
        return False
    if is_saturation(record.load_point.name):
        return Outcome.from_trial(record).unusable is not None
    return True
