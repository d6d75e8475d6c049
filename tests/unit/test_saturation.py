"""The saturation search (meshlab/analysis/statistics/saturation.py) against a synthetic testbed
model whose limit is known: found within one step of the search's resolution, arms interleaved step
by step, resumable from the recorded trials."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshlab.analysis.statistics.saturation import (
    Limits,
    Outcome,
    SaturationSearch,
    SearchConfig,
    failures,
)
from meshlab.record.rundir import RunDir
from meshlab.record.spec import Gates
from meshlab.synthetic import SyntheticSpec, write_run

LIMITS = Limits(p99_ms=5.0)


@dataclass(frozen=True)
class Model:
    """A deterministic testbed: an arm serves up to `capacity` req/s; its p99 grows as
    base / (1 - utilisation) (a single-server queue), k6's lag grows near saturation."""

    capacity: float
    base_p99_ms: float = 1.0
    lag_ms: float = 3.0  # how far k6's p99 lag climbs as the host fills up

    def run(self, rate: int) -> Outcome:
        rho = rate / self.capacity
        achieved = min(rate, self.capacity * 0.995)  # past capacity the schedule slips
        return Outcome(
            achieved_rate=achieved,
            dropped_iterations=max(0, math.ceil((rate - self.capacity) * 30)),
            schedule_lag_p99_ms=0.5 + self.lag_ms * rho**6,
            schedule_lag_max_ms=5.0 + 10 * rho**6,
            p99_ms=self.base_p99_ms / (1 - min(rho, 0.9999)),
        )

    def limit(self, top: int = 100_000) -> int:
        """The truth, by brute force: the highest integer rate that keeps up."""
        return max(r for r in range(1, top) if not failures(r, self.run(r), LIMITS))


def _drive(search: SaturationSearch, models: dict[str, Model]) -> list[tuple[str, int, Outcome]]:
    history = []
    while not search.done:
        for arm, rate in search.next_rates().items():
            outcome = models[arm].run(rate)
            search.record(arm, rate, outcome)
            history.append((arm, rate, outcome))
    return history


@pytest.mark.parametrize(
    ("capacity", "base", "lag", "start"),
    [
        (1730.0, 1.0, 3.0, 200),  # the p99 limit binds (at 80 % of capacity)
        (900.0, 0.5, 3.0, 4000),  # the same, bracketed from above
        (2000.0, 0.1, 8.0, 300),  # k6's schedule lag binds first
        (1200.0, 0.0001, 3.0, 250),  # only the schedule itself: dropped iterations past capacity
    ],
)
def test_each_arm_is_found_within_one_step_of_the_resolution(
    capacity: float, base: float, lag: float, start: int
) -> None:
    model = Model(capacity, base, lag)
    truth = model.limit(int(capacity) + 10)
    cfg = SearchConfig(LIMITS, start_rate=start, max_rate=20_000, resolution=25)
    search = SaturationSearch(["arm"], cfg)
    _drive(search, {"arm": model})
    res = search.result()["arm"]
    assert res.status == "found"
    assert truth - cfg.resolution <= res.saturation_rate <= truth < res.lowest_failing_rate
    assert res.lowest_failing_rate - res.saturation_rate <= cfg.resolution
    assert all(a.passed == (a.rate <= truth) for a in res.attempts)  # every verdict right
    assert len(res.attempts) <= 20  # bracketing + bisection, not a scan


def test_arms_are_interleaved_step_by_step_and_each_failure_says_why() -> None:
    models = {"iptables": Model(1700.0), "ebpf": Model(2200.0)}
    cfg = SearchConfig(LIMITS, start_rate=400, max_rate=10_000, resolution=20, seed=3)
    search = SaturationSearch(list(models), cfg)
    first = search.next_rates()
    assert set(first) == {"iptables", "ebpf"} and set(first.values()) == {400}
    arm = next(iter(first))
    other = next(a for a in first if a != arm)
    search.record(arm, 400, models[arm].run(400))
    assert search.next_rates() == {other: 400}  # no arm advances before the other has run
    with pytest.raises(ValueError, match=f"{arm} is not due \\(already run in this step\\)"):
        search.record(arm, 800, models[arm].run(800))
    with pytest.raises(ValueError, match=f"{other} is due at 400 req/s, not 800"):
        search.record(other, 800, models[other].run(800))
    search.record(other, 400, models[other].run(400))
    assert search.step == 2 and set(search.next_rates().values()) == {800}
    _drive(search, models)
    res = search.result()
    steps = [[a.step for a in res[arm].attempts] for arm in models]
    assert all(s == list(range(1, len(s) + 1)) for s in steps)  # one trial per step and arm
    failed = [a for a in res["iptables"].attempts if a.passed is False]
    assert failed and all(a.reasons for a in failed)
    assert any("over the declared 5 ms" in r for a in failed for r in a.reasons)
    lo, low, high = search.gain("ebpf", "iptables")
    assert low <= 100 * (models["ebpf"].limit(3000) / models["iptables"].limit(3000) - 1) <= high
    assert low <= lo <= high and high - low < 3.0
    assert res["ebpf"].to_dict()["summary"].startswith("keeps up at ")


def test_a_resumed_search_carries_on_where_it_stopped() -> None:
    models = {"a": Model(1200.0), "b": Model(3100.0), "c": Model(640.0)}
    cfg = SearchConfig(LIMITS, start_rate=300, max_rate=8000, resolution=10, seed=9)
    whole = SaturationSearch(list(models), cfg)
    history = _drive(whole, models)
    for cut in (0, 1, 4, 5, len(history) // 2, len(history) - 1):  # mid-step cuts included
        resumed = SaturationSearch.replay(list(models), cfg, history[:cut])
        rest = _drive(resumed, models)
        assert history[:cut] + rest == history
        assert resumed.result() == whole.result()


def test_unusable_trials_are_rerun_and_an_arm_that_keeps_failing_them_is_undecided() -> None:
    model = Model(1500.0)
    cfg = SearchConfig(LIMITS, start_rate=500, max_rate=4000, resolution=50, max_retries=1)
    search = SaturationSearch(["x"], cfg)
    noisy = Outcome(500.0, 0, 0.5, 5.0, 1.0, unusable="steal_mean_percent 1.4 exceeds 0.5")
    search.record("x", 500, noisy)
    assert search.next_rates() == {"x": 500}  # the same rate again
    search.record("x", 500, model.run(500))
    assert search.next_rates() == {"x": 1000}
    search.record("x", 1000, noisy)
    search.record("x", 1000, noisy)
    res = search.result()["x"]
    assert search.done and res.status == "undecided" and res.saturation_rate == 500
    assert [a.passed for a in res.attempts] == [None, True, None, None]


def test_the_search_stops_at_its_bounds() -> None:
    cfg = SearchConfig(LIMITS, start_rate=1000, max_rate=3000, min_rate=100, resolution=10)
    up = SaturationSearch(["fast"], cfg)
    _drive(up, {"fast": Model(50_000.0)})
    fast = up.result()["fast"]
    assert fast.status == "above-max" and [a.rate for a in fast.attempts] == [1000, 2000, 3000]
    down = SaturationSearch(["slow"], cfg)
    _drive(down, {"slow": Model(60.0)})
    slow = down.result()["slow"]
    assert slow.status == "below-min" and [a.rate for a in slow.attempts] == [
        1000,
        500,
        250,
        125,
        100,
    ]
    assert slow.saturation_rate is None and "fails even at the minimum 100" in slow.summary
    assert up.gain("fast", "fast") is None


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="min_rate"):
        SearchConfig(LIMITS, start_rate=5000, max_rate=1000)
    with pytest.raises(ValueError, match="growth must exceed 1"):
        SearchConfig(LIMITS, start_rate=100, max_rate=1000, growth=1.0)
    with pytest.raises(ValueError, match="distinct"):
        SaturationSearch(["a", "a"], SearchConfig(LIMITS, start_rate=100, max_rate=1000))


def test_outcomes_come_from_trial_records(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, SyntheticSpec(seed=5, rounds=2, reject=((1, "ebpf"),)))
    records = [r for _, r in RunDir(run_dir).records()]
    valid = next(r for r in records if r.valid)
    o = Outcome.from_trial(valid)
    assert o.unusable is None and o.p99_ms == valid.summary.latency_ms["p99"]
    assert o.achieved_rate == valid.summary.achieved_rate and o.dropped_iterations == 0
    limits = Limits.from_gates(Gates(), p99_ms=10.0)
    assert failures(valid.load_point.rate, o, limits) == []
    stolen = Outcome.from_trial(next(r for r in records if not r.valid))
    assert stolen.unusable and "steal_mean_percent" in stolen.unusable
