"""Each arm's saturation point, found by measurement (issue 23): the highest offered rate at
which the arm still keeps the open-model schedule (achieved rate within the gate, no dropped
iterations, k6's schedule lag within its gates, no failed requests) and its p99 under a declared
limit.

Per arm: bracket (multiply the rate by `growth` until one fails, or divide until one passes),
then bisect the bracket [highest pass, lowest fail] down to `resolution` req/s. The arms are
searched interleaved against time drift: a step runs every unfinished arm at its own next rate
(in a seeded random order), and no arm advances until every arm of the step has run, so each arm's
rates sit in the same stretch of time as the others'. A trial that says nothing about capacity
(rejected for steal, an unsettled node, a broken measurement) is run again at the same rate, at
most `max_retries` times.

A state machine, driven one trial at a time: `next_rates()` -> {arm: rate} still due in this
step, `record(arm, rate, outcome)`, `done`, `result()`. It holds no clock and no I/O, so the
engine can rebuild it from the trials a run recorded (`replay`) and carry on after a resume.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from meshlab.record.format import PlanEntry, TrialRecord
from meshlab.record.spec import SATURATION_PREFIX, Experiment, Gates

Status = Literal["searching", "found", "above-max", "below-min", "undecided"]
# Gates that say the arm could not carry the load; any other failed gate says the trial is not
# evidence either way (measure.evaluate_gates names them).
CAPACITY_GATES = (
    "dropped_iterations", "achieved_rate_error", "failed_requests", "schedule_lag_p99_ms",
    "schedule_lag_max_ms",
)  # fmt: skip


@dataclass(frozen=True)
class Limits:
    """What "still keeps up" means: the run's gates, plus a declared p99 limit."""

    p99_ms: float
    rate_tolerance_percent: float = 1.0
    schedule_lag_p99_ms: float = 4.0
    schedule_lag_max_ms: float = 20.0

    @classmethod
    def from_gates(cls, gates: Gates, p99_ms: float) -> Limits:
        return cls(
            p99_ms=p99_ms,
            rate_tolerance_percent=gates.rate_tolerance_percent,
            schedule_lag_p99_ms=gates.schedule_lag_p99_ms,
            schedule_lag_max_ms=gates.schedule_lag_max_ms,
        )


@dataclass(frozen=True)
class Outcome:
    """What one trial at one offered rate showed."""

    achieved_rate: float
    dropped_iterations: int
    schedule_lag_p99_ms: float | None
    schedule_lag_max_ms: float | None
    p99_ms: float | None
    failed_requests: int = 0
    unusable: str | None = None  # why this trial is no evidence about capacity (it is rerun)

    @classmethod
    def from_trial(cls, record: TrialRecord) -> Outcome:
        """From a judged trial.json: capacity failures count; a trial that also failed any
        other gate (steal, CPU accounting, housekeeping) or never settled is unusable: its
        slowness may be the neighbour's, not the arm's."""
        other = [
            f"{name} {gate.value} exceeds {gate.limit}"
            for name, gate in record.gates.items()
            if not gate.passed and name not in CAPACITY_GATES
        ]
        if record.settle.timed_out:
            other.append("the node never settled")
        other += [r for r in record.rejection_reasons if r.startswith("arm integrity")]
        dropped = record.gates.get("dropped_iterations")
        lag = record.load_generator.schedule_lag
        return cls(
            achieved_rate=record.summary.achieved_rate,
            dropped_iterations=int(dropped.value or 0) if dropped else 0,
            schedule_lag_p99_ms=lag.p99_ms if lag else None,
            schedule_lag_max_ms=lag.max_ms if lag else None,
            p99_ms=record.summary.latency_ms.get("p99"),
            failed_requests=record.summary.failed_requests,
            unusable="; ".join(other) or None,
        )


def failures(rate: int, o: Outcome, limits: Limits) -> list[str]:
    """Why the arm did not keep up at `rate`, one sentence each (empty: it did)."""
    out = []
    error = 100 * abs(o.achieved_rate - rate) / rate
    if error > limits.rate_tolerance_percent:
        out.append(
            f"achieved {o.achieved_rate:.1f} req/s, {error:.1f} % off the offered {rate} "
            f"(gate {limits.rate_tolerance_percent:g} %)"
        )
    if o.dropped_iterations > 0:
        out.append(f"k6 dropped {o.dropped_iterations} iterations")
    if o.failed_requests > 0:
        out.append(f"{o.failed_requests} requests failed")
    for value, limit, name in (
        (o.schedule_lag_p99_ms, limits.schedule_lag_p99_ms, "schedule lag p99"),
        (o.schedule_lag_max_ms, limits.schedule_lag_max_ms, "schedule lag max"),
    ):
        if value is None:
            out.append(f"no k6 {name} measured")
        elif value > limit:
            out.append(f"k6 {name} {value:.2f} ms over its {limit:g} ms gate")
    if o.p99_ms is None:
        out.append("no p99 latency measured")
    elif o.p99_ms > limits.p99_ms:
        out.append(f"p99 {o.p99_ms:.2f} ms over the declared {limits.p99_ms:g} ms")
    return out


@dataclass(frozen=True)
class SearchConfig:
    limits: Limits
    start_rate: int  # req/s, the first rate every arm runs
    max_rate: int  # never offered more: passing here ends the search ("above-max")
    min_rate: int = 1  # never offered less: failing here ends it ("below-min")
    resolution: int = 50  # req/s: the bracket's width when the search stops
    growth: float = 2.0  # bracketing factor
    max_retries: int = 2  # unusable trials per rate before the arm is "undecided"
    seed: int = 0  # the order of the arms within each step

    def __post_init__(self) -> None:
        if not 0 < self.min_rate <= self.start_rate <= self.max_rate:
            raise ValueError(
                f"rates must satisfy 0 < min_rate ({self.min_rate}) <= start_rate "
                f"({self.start_rate}) <= max_rate ({self.max_rate})"
            )
        if self.resolution < 1:
            raise ValueError(f"resolution must be at least 1 req/s, not {self.resolution}")
        if self.growth <= 1:
            raise ValueError(f"growth must exceed 1, not {self.growth}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, not {self.max_retries}")


@dataclass(frozen=True)
class Attempt:
    step: int
    rate: int
    passed: bool | None  # None: unusable, no evidence either way
    reasons: tuple[str, ...]  # why it failed (or why it was unusable)


@dataclass
class ArmResult:
    arm: str
    status: Status
    saturation_rate: int | None  # the highest rate that kept up (None: none did)
    lowest_failing_rate: int | None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def summary(self) -> str:
        lo, hi = self.saturation_rate, self.lowest_failing_rate
        if self.status == "found":
            return f"keeps up at {lo} req/s, not at {hi} req/s"
        if self.status == "above-max":
            return f"keeps up at every rate tried, up to the maximum {lo} req/s"
        if self.status == "below-min":
            return f"fails even at the minimum {hi} req/s"
        if self.status == "undecided":
            return f"undecided: too many unusable trials at {self.attempts[-1].rate} req/s"
        return "still searching"

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "status": self.status,
            "saturation_rate": self.saturation_rate,
            "lowest_failing_rate": self.lowest_failing_rate,
            "summary": self.summary,
            "attempts": [
                {"step": a.step, "rate": a.rate, "passed": a.passed, "reasons": list(a.reasons)}
                for a in self.attempts
            ],
        }


@dataclass
class _Arm:
    pending: int | None
    status: Status = "searching"
    lo: int | None = None  # highest rate that kept up
    hi: int | None = None  # lowest rate that did not
    retries: int = 0
    attempts: list[Attempt] = field(default_factory=list)


class SaturationSearch:
    def __init__(self, arms: Sequence[str], config: SearchConfig) -> None:
        if not arms or len(set(arms)) != len(arms):
            raise ValueError(f"arms must be distinct and not empty, got {list(arms)}")
        self.config = config
        self.arms = list(arms)
        self.step = 1
        self._state = {a: _Arm(pending=config.start_rate) for a in arms}
        self._this_step: dict[str, tuple[int, Outcome]] = {}

    @classmethod
    def replay(
        cls, arms: Sequence[str], config: SearchConfig, history: Iterable[tuple[str, int, Outcome]]
    ) -> SaturationSearch:
        """The search as it stands after `history` (arm, rate, outcome), in the order the
        trials ran: a resumed run carries on where it stopped, mid-step included."""
        search = cls(arms, config)
        for arm, rate, outcome in history:
            search.record(arm, rate, outcome)
        return search

    @property
    def done(self) -> bool:
        return all(s.pending is None for s in self._state.values())

    def next_rates(self) -> dict[str, int]:
        """{arm: rate} still to run in this step, in the order to run them (empty: done)."""
        order = list(self.arms)
        # a fresh order per step, reproducible from the seed (as the plan shuffles its rounds)
        random.Random(f"{self.config.seed}/{self.step}").shuffle(order)  # noqa: S311
        return {
            a: self._state[a].pending  # type: ignore[misc]
            for a in order
            if self._state[a].pending is not None and a not in self._this_step
        }

    def record(self, arm: str, rate: int, outcome: Outcome) -> None:
        """One trial's outcome. The step advances once every arm due in it has run."""
        due = self.next_rates()
        if arm not in due:
            why = "done" if arm in self._state and self._state[arm].pending is None else (
                "already run in this step" if arm in self._this_step else "not an arm searched"
            )  # fmt: skip
            raise ValueError(f"step {self.step}: {arm} is not due ({why})")
        if rate != due[arm]:
            raise ValueError(f"step {self.step}: {arm} is due at {due[arm]} req/s, not {rate}")
        self._this_step[arm] = (rate, outcome)
        if not self.next_rates():
            for a, (r, o) in self._this_step.items():
                self._advance(self._state[a], r, o)
            self._this_step = {}
            self.step += 1

    def _advance(self, s: _Arm, rate: int, o: Outcome) -> None:
        cfg = self.config
        if o.unusable:
            s.attempts.append(Attempt(self.step, rate, None, (o.unusable,)))
            s.retries += 1
            if s.retries > cfg.max_retries:
                s.status, s.pending = "undecided", None
            return
        s.retries = 0
        reasons = failures(rate, o, cfg.limits)
        s.attempts.append(Attempt(self.step, rate, not reasons, tuple(reasons)))
        if reasons:
            s.hi = rate if s.hi is None else min(s.hi, rate)
        else:
            s.lo = rate if s.lo is None else max(s.lo, rate)
        if s.hi is None:  # bracketing up: everything so far kept up
            if rate >= cfg.max_rate:
                s.status, s.pending = "above-max", None
            else:
                s.pending = min(cfg.max_rate, math.ceil(rate * cfg.growth))
        elif s.lo is None:  # bracketing down: nothing kept up yet
            if rate <= cfg.min_rate:
                s.status, s.pending = "below-min", None
            else:
                s.pending = max(cfg.min_rate, math.floor(rate / cfg.growth))
        elif s.hi - s.lo <= cfg.resolution:
            s.status, s.pending = "found", None
        else:
            s.pending = (s.lo + s.hi) // 2

    def result(self) -> dict[str, ArmResult]:
        """Per arm, where its search stands (final once `done`)."""
        return {
            a: ArmResult(a, s.status, s.lo, s.hi, list(s.attempts)) for a, s in self._state.items()
        }

    def gain(self, arm: str, baseline: str) -> tuple[float, float, float] | None:
        """How much more load `arm` carries than `baseline` at the same limits, in % of the
        baseline's: (estimate from the highest passing rates, lowest and highest the brackets
        allow). None unless both were found."""
        a, b = self._state[arm], self._state[baseline]
        if a.status != "found" or b.status != "found":
            return None
        if a.lo is None or a.hi is None or b.lo is None or b.hi is None:  # found: never
            return None
        return (
            100 * (a.lo / b.lo - 1),
            100 * (a.lo / b.hi - 1),
            100 * (a.hi / b.lo - 1),
        )


# ---- the search as a run records it ---------------------------------------------------------


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
