"""Riding out noise instead of giving up (issue 19): the wait for a quiet host and the noise
budget, on /proc/stat samples recorded on this host kind, replayed with their own clock."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from meshlab.core.procstat import USER_HZ, parse_proc_stat
from meshlab.record.format import Timeline
from meshlab.record.spec import Gates
from meshlab.trial import quiet
from meshlab.trial.quiet import Snapshot

FIXTURES = Path(__file__).parent / "fixtures" / "quiet"
GATES = Gates()  # steal 0.5 %, busiest CPU 25 %, quiet for 1 s


def recorded(name: str) -> list[Snapshot]:
    """`T <unix s>` then the cpuN lines of /proc/stat, every 0.5 s (how the fixture was
    recorded on a 2-vCPU host: docs/methodology.md)."""
    out, t, lines = [], None, []
    for line in [*(FIXTURES / name).read_text().splitlines(), "T end"]:
        if line.startswith("T "):
            if t is not None:
                cpus = parse_proc_stat("\n".join(lines))
                out.append(
                    Snapshot(
                        t,
                        {c: (v["idle"] + v["iowait"]) / USER_HZ for c, v in cpus.items()},
                        {c: v["steal"] / USER_HZ for c, v in cpus.items()},
                    )
                )
            t, lines = (None if line == "T end" else float(line[2:])), []
        else:
            lines.append(line)
    return out


def busy_from_its_start() -> list[Snapshot]:
    """busy.txt from the first sample in which a CPU was busy."""
    samples = recorded("busy.txt")
    first = next(
        i for i, (a, b) in enumerate(itertools.pairwise(samples))
        if quiet.between(a, b).busiest_percent > 50
    )  # fmt: skip
    return samples[first:]


class Replay:
    """snapshot() and sleep() for wait_for_quiet over recorded samples: each sleep moves to
    the next sample, so the clock is the recording's."""

    def __init__(self, snapshots: list[Snapshot]) -> None:
        self.snapshots, self.i = snapshots, 0

    def snapshot(self) -> Snapshot:
        return self.snapshots[min(self.i, len(self.snapshots) - 1)]

    def sleep(self, _seconds: float) -> None:
        self.i += 1
        if self.i >= len(self.snapshots):
            raise AssertionError("the wait outlived the recording")


def test_a_busy_host_is_waited_out_with_progress_lines() -> None:
    """Recorded: 4 s idle, 12 s of a CPU-bound process on CPU 1 (issue 19's run 1: a compile
    beside the run), 4 s idle."""
    replay = Replay(busy_from_its_start())
    said: list[tuple[str, float, float]] = []
    wait = quiet.wait_for_quiet(
        replay.snapshot, GATES, 600, lambda *a: said.append(a), replay.sleep
    )
    assert wait.quiet and wait.reason is None
    # the process ran about 12 s; the host is quiet again for the gate's 1 s after it
    assert 12.0 <= wait.seconds <= 14.5
    assert wait.waited_s == pytest.approx(wait.seconds - GATES.quiet_s, abs=0.05)
    assert said, "a long wait says what it waits for"
    reason, waited, left = said[0]
    assert reason.startswith("busiest CPU ") and reason.endswith("% > 25 %")
    assert waited >= quiet.SAY_EVERY_S - GATES.quiet_s - 0.1
    assert left == pytest.approx(600 - waited)
    assert all(b[1] - a[1] >= quiet.SAY_EVERY_S - 1e-9 for a, b in itertools.pairwise(said))


def test_the_budget_runs_out_while_the_host_is_busy_and_says_why() -> None:
    replay = Replay(busy_from_its_start())
    wait = quiet.wait_for_quiet(replay.snapshot, GATES, 5.0, sleep=replay.sleep)
    assert not wait.quiet
    assert 5.0 <= wait.waited_s < 6.0
    assert wait.reason is not None and wait.reason.startswith("busiest CPU")


def test_steal_is_noise_even_on_idle_cpus() -> None:
    """The recorded quiet host with steal added to CPU 0 for 1.5 s (no steal storm came by
    while these fixtures were recorded; docs/methodology.md)."""
    samples = recorded("quiet.txt")
    stolen = [
        Snapshot(s.t, s.idle, {**s.steal, "cpu0": s.steal["cpu0"] + min(i, 3) * 0.05})
        for i, s in enumerate(samples)
    ]
    state = quiet.between(stolen[0], stolen[2])
    assert state.steal_percent == pytest.approx(100 * 0.1 / (2 * (stolen[2].t - stolen[0].t)))
    assert state.noise(GATES).startswith("steal ")
    replay = Replay(stolen)
    wait = quiet.wait_for_quiet(replay.snapshot, GATES, 600, sleep=replay.sleep)
    assert wait.quiet
    assert wait.waited_s == pytest.approx(stolen[3].t - stolen[0].t)  # until steal stopped


def test_a_quiet_host_costs_one_quiet_window_and_nothing_of_the_budget() -> None:
    replay = Replay(recorded("quiet.txt"))
    wait = quiet.wait_for_quiet(replay.snapshot, GATES, 600, sleep=replay.sleep)
    assert wait.quiet and wait.waited_s == 0.0  # the first window looked at was quiet
    assert GATES.quiet_s <= wait.seconds <= GATES.quiet_s + 0.6


def test_a_busy_cpu_is_noise_too() -> None:
    a = Snapshot(0.0, {"cpu0": 100.0, "cpu1": 100.0}, {"cpu0": 0.0, "cpu1": 0.0})
    b = Snapshot(1.0, {"cpu0": 100.1, "cpu1": 101.0}, {"cpu0": 0.0, "cpu1": 0.0})  # cpu0 90 % busy
    state = quiet.between(a, b)
    assert state.busiest_percent == pytest.approx(90.0)
    assert state.noise(GATES) == "busiest CPU 90 % > 25 %"


def _record(started: float, quiet_wait_s: float, status: str, seconds: float) -> object:
    """A stand-in for a TrialRecord: what spent_s reads."""
    from types import SimpleNamespace

    tl = Timeline(step_started=started, quiet_wait_s=quiet_wait_s, arm_s=0, settle_s=0,
                  probe_s=0, launched=started + quiet_wait_s)  # fmt: skip
    return SimpleNamespace(
        timeline=tl, valid=status == "valid", started_at="", ended_at=_iso(started + seconds)
    )


def _iso(t: float) -> str:
    from meshlab.record.format import iso_of

    return iso_of(t)


def test_the_budget_pays_waits_beyond_the_quiet_window_and_rejected_trials() -> None:
    since = _iso(1000.0)
    records = [
        _record(900.0, 50.0, "rejected", 30.0),  # before the last resume: not this segment's
        _record(1000.0, 1.0, "valid", 20.0),  # one quiet window: free
        _record(1020.0, 31.0, "valid", 50.0),  # 30 s of waiting
        _record(1070.0, 1.0, "rejected", 20.0),  # a rejected trial's wall time: 20 s
    ]
    assert quiet.spent_s(records, since, GATES.quiet_s) == pytest.approx(50.0)
