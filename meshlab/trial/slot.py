"""A trial's place in the run: the plan entry, which attempt of it this is, its id and its
directory. The engine makes slots; a testbed runs them; the judge writes into them."""

from __future__ import annotations

from dataclasses import dataclass

from meshlab.record.format import PlanEntry
from meshlab.record.rundir import TrialDir


@dataclass(frozen=True)
class TrialSlot:
    """One plan entry's attempt: where it writes and what it is called."""

    entry: PlanEntry
    attempt: int
    id: str
    dir: TrialDir
