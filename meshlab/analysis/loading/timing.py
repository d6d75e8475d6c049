"""Where a run's wall time went: inside measured windows, or between them (waiting for a
quiet host, switching arms, starting k6, its warm-up, judging). Computed from the trials' own
timestamps (trial.json `window` and `timeline`), so progress lines, the report and the
benchmarks all say the same thing."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from meshlab.record.format import Manifest, TrialRecord


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Gap:
    """From one step's window end to the next step's window start, and what filled it."""

    trial_id: str  # the trial whose window the gap ends at
    seconds: float
    quiet_wait_s: float
    arm_s: float
    settle_s: float
    probe_s: float
    judge_s: float  # previous window end -> this step began (k6 exit, probe, judge, record)
    launch_s: float  # k6 launched -> its first measured request (start-up and warm-up)


def _steps(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """One record per step (a duet step's two trials share a window), in time order."""
    seen: dict[float, TrialRecord] = {}
    for r in records:
        seen.setdefault(r.window.start if r.timeline is None else r.timeline.step_started, r)
    return sorted(seen.values(), key=lambda r: r.window.start)


def gaps(records: Iterable[TrialRecord], segment_starts: list[float] | None = None) -> list[Gap]:
    """The gap before every step but a segment's first (a resume is not overhead)."""
    starts = sorted(segment_starts or [])
    out = []
    steps = _steps(records)
    for prev, cur in itertools.pairwise(steps):
        if cur.timeline is None or any(prev.window.end < s <= cur.window.start for s in starts):
            continue
        tl = cur.timeline
        out.append(
            Gap(
                trial_id=cur.trial_id,
                seconds=round(cur.window.start - prev.window.end, 3),
                quiet_wait_s=tl.quiet_wait_s,
                arm_s=tl.arm_s,
                settle_s=tl.settle_s,
                probe_s=tl.probe_s,
                judge_s=round(tl.step_started - prev.window.end, 3),
                launch_s=round(cur.window.start - tl.launched, 3),
            )
        )
    return out


def segment_starts(manifest: Manifest) -> list[float]:
    return [epoch(manifest.started_at), *(epoch(t) for t in manifest.resumed_at)]


def _began(r: TrialRecord) -> float:
    return r.timeline.step_started if r.timeline is not None else r.window.start


def measuring_share(
    manifest: Manifest, records: Iterable[TrialRecord], now: float | None = None
) -> tuple[float, float]:
    """(wall seconds of the trial loop, the share of them inside measured windows). Each
    segment (the run's start, or a resume) counts from its first step to its last window
    end (or `now` for the running one): neither the testbed's set-up before the first trial
    nor the time a run lay interrupted is the loop's overhead."""
    steps = _steps(records)
    starts = segment_starts(manifest)
    wall = 0.0
    for i, start in enumerate(starts):
        end_bound = starts[i + 1] if i + 1 < len(starts) else float("inf")
        mine = [r for r in steps if start <= r.window.start < end_bound]
        if not mine:
            continue
        last = now if (now is not None and i == len(starts) - 1) else mine[-1].window.end
        wall += max(0.0, last - min(_began(r) for r in mine))
    measured = sum(max(0.0, r.window.end - r.window.start) for r in steps)
    return round(wall, 1), (round(measured / wall, 4) if wall > 0 else 0.0)
