"""Wait for a quiet host before a trial, within a budget of time: a noisy host is waited out,
not counted (issue 19: a two-minute steal storm rejected 3-4 trials in a row, because the next
trial started straight into it, and a count of rejections then ended the run).

Before every trial the host must be quiet for `gates.quiet_s`: steal at most
`gates.steal_mean_percent` of all CPUs' time and no CPU busier than
`gates.settle_cpu_busy_percent`. The run's noise budget (`gates.noise_budget_s`) pays for the
waiting and for every rejected trial's wall time since the run started or was last resumed;
when it is spent, the run ends environment-unfit, saying how long it waited and why.

The decision works on counter snapshots (cumulative per-CPU idle, iowait and steal seconds), so
it is tested on recorded samples; the local testbed reads /proc/stat for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from meshlab.record.format import TrialRecord
from meshlab.record.spec import Gates

SAMPLE_S = 0.5  # one snapshot every half second while waiting
SAY_EVERY_S = 5.0  # a progress line this often while waiting


@dataclass(frozen=True)
class Snapshot:
    """Cumulative counters of every CPU at one instant (seconds since boot)."""

    t: float  # monotonic seconds
    idle: dict[str, float]  # cpu -> idle + iowait seconds
    steal: dict[str, float]  # cpu -> steal seconds


@dataclass(frozen=True)
class HostState:
    """The host between two snapshots."""

    seconds: float
    steal_percent: float  # of all CPUs' time
    busiest_percent: float  # the busiest CPU: 100 - idle - steal

    def noise(self, gates: Gates) -> str | None:
        """Why this is not quiet enough to start a trial, or None."""
        reasons = []
        if self.steal_percent > gates.steal_mean_percent:
            reasons.append(f"steal {self.steal_percent:.1f} % > {gates.steal_mean_percent:g} %")
        if self.busiest_percent > gates.settle_cpu_busy_percent:
            reasons.append(
                f"busiest CPU {self.busiest_percent:.0f} % > {gates.settle_cpu_busy_percent:g} %"
            )
        return ", ".join(reasons) or None


def between(a: Snapshot, b: Snapshot) -> HostState:
    dt = b.t - a.t
    if dt <= 0:
        return HostState(0.0, 0.0, 0.0)
    cpus = sorted(set(a.idle) & set(b.idle))
    steal = sum(b.steal[c] - a.steal[c] for c in cpus)
    busiest = max(
        (100.0 * (1 - ((b.idle[c] - a.idle[c]) + (b.steal[c] - a.steal[c])) / dt) for c in cpus),
        default=0.0,
    )
    return HostState(dt, 100.0 * steal / (dt * max(1, len(cpus))), max(0.0, busiest))


@dataclass(frozen=True)
class Wait:
    """How a wait for a quiet host ended."""

    quiet: bool  # False: the budget ran out first
    seconds: float  # the whole check, its quiet window included
    waited_s: float  # beyond the quiet window itself: what the noise budget pays
    state: HostState  # the last window looked at
    reason: str | None  # what was noisy last (None when quiet)


def wait_for_quiet(
    snapshot: Callable[[], Snapshot],
    gates: Gates,
    budget_left_s: float,
    say: Callable[[str, float, float], None] = lambda reason, waited, left: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Wait:
    """Wait until the last `gates.quiet_s` were quiet, or until the budget is spent.

    `snapshot` reads the counters (with its own clock); `say(reason, waited_s, left_s)` is
    called every SAY_EVERY_S while waiting. The quiet window itself is not charged to the
    budget: only time beyond it is waiting."""
    history = [snapshot()]
    started = history[0].t
    said = started
    while True:
        sleep(SAMPLE_S)
        history.append(snapshot())
        now = history[-1].t
        # the shortest suffix of the history that spans quiet_s
        first = next(
            (i for i in range(len(history) - 1, -1, -1) if now - history[i].t >= gates.quiet_s),
            None,
        )
        if first is None:
            continue
        history = history[first:]
        state = between(history[0], history[-1])
        reason = state.noise(gates)
        waited = history[0].t - started  # before the window now looked at began
        if reason is None:
            return Wait(True, now - started, waited, state, None)
        if waited >= budget_left_s:
            return Wait(False, now - started, waited, state, reason)
        if now - said >= SAY_EVERY_S:
            say(reason, waited, budget_left_s - waited)
            said = now


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def spent_s(
    records: Iterable[TrialRecord],
    since_iso: str,
    quiet_s: float,
    charged: Callable[[TrialRecord], bool] = lambda r: not r.valid,
) -> float:
    """The noise budget spent since `since_iso` (the run's start or last resume): time waited
    for a quiet host before each trial beyond the quiet window `quiet_s` every trial needs,
    plus the wall time of every rejected trial `charged` says is noise."""
    since = _epoch(since_iso)
    total = 0.0
    steps = set()  # a duet step's two trials share their wait and their wall time
    for r in records:
        started = r.timeline.step_started if r.timeline else _epoch(r.started_at)
        if started < since or started in steps:
            continue
        steps.add(started)
        if r.timeline is not None:
            total += max(0.0, r.timeline.quiet_wait_s - quiet_s)
        if charged(r):
            total += max(0.0, _epoch(r.ended_at) - started)
    return total
