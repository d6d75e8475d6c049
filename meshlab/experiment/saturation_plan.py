"""The saturation search in the run's plan (`saturation:` in the experiment): after the planned
blocks, the engine appends one search step at a time (each arm at its own next rate, in the
search's seeded order) and rebuilds the search from the trials recorded so far, so a resumed
run carries on where it stopped. The search itself is analysis/statistics/saturation.py's
(the report replays it too)."""

from __future__ import annotations

from meshlab.analysis.statistics.saturation import Outcome, is_saturation, replay
from meshlab.record.format import PlanEntry, TrialRecord
from meshlab.record.spec import Experiment


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
