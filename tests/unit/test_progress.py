"""Progress from the engine's typed messages: what a user (or a CI log) sees during a run.
Messages are found by their kind, whatever task printed them; while the local testbed's
trials run they come from the run's events.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

from meshlab.experiment import progress, protocol
from meshlab.experiment.runner import (
    EXIT_DECIDED,
    EXIT_INCONCLUSIVE,
    EXIT_UNFIT,
    _Watcher,
    exit_code,
)
from meshlab.record.rundir import RunDir


def _ok(task: str, msg: protocol._Message) -> dict:
    return {
        "event": "runner_on_ok",
        "event_data": {"task": task, "res": {"stdout": msg.json_line()}},
    }


def _trial(arm: str, status: str, reasons: list[str]) -> protocol.TrialLine:
    return protocol.TrialLine(
        id=f"000-{arm}-r01", arm=arm, round=1, block="", status=status, p50_ms=0.61,
        steal_max_percent=0.2, reasons=reasons,
    )  # fmt: skip


def _watch() -> tuple[_Watcher, list[str], list[dict]]:
    lines: list[str] = []
    bars: list[dict] = []
    return _Watcher(lines.append, lambda **kw: bars.append(kw)), lines, bars


def _planned(run_dir: Path) -> protocol.Planned:
    return protocol.Planned(
        run_dir=str(run_dir), testbed="local", planned=16, done=0, duet=False,
        dataplanes=["ebpf", "iptables"], first_flood="off", first_placement="same-node",
        max_steps=49, max_segments=2,
    )  # fmt: skip


def test_plays_plan_and_trials_become_lines_found_by_kind_not_task(tmp_path: Path) -> None:
    w, lines, bars = _watch()
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    w({"event": "playbook_on_play_start", "event_data": {"play": "Install the container runtime"}})
    w({"event": "playbook_on_play_start", "event_data": {"play": "Run the trials"}})
    w({"event": "playbook_on_task_start", "event_data": {"task": "Plan"}})
    # any task name: a renamed task keeps its progress lines
    w(_ok("a task renamed last week", _planned(run.path)))
    result = protocol.StepResult(
        trials=[_trial("ebpf", "valid", [])], done=1, total=16, wall_s=60.0,
        measuring_share=0.5, overhead_s=4.2,
    )  # fmt: skip
    run.append_event(result.model_dump())
    w.follow()
    assert lines[0].endswith("] Run the trials")  # the play with no hosts here stays silent
    assert lines[1].endswith(f"] run {run.path}: 16 trials planned, 0 done")
    assert lines[2].endswith(
        "] trial 1/16 ebpf r01: p50 0.610 ms, steal max 0.2 %, valid"
        " | measuring 50 % of 1.0 min, 4.2 s between windows"
    )
    assert bars[-1] == {"total": 16, "completed": 1}
    w.follow()  # nothing new: nothing said twice
    assert len(lines) == 3


def test_a_rejected_trial_says_why_and_the_total_says_it_grew_by_a_rerun() -> None:
    msg = protocol.StepResult(
        trials=[_trial("ebpf", "rejected", ["steal_max_percent 9 exceeds 5.0"])],
        done=1, total=17, reruns=1,
    )  # fmt: skip
    assert progress.line(msg).split("] ", 1)[1] == (
        "trial 1/17 (1 re-run) ebpf r01: p50 0.610 ms, steal max 0.2 %, "
        "REJECTED (steal_max_percent 9 exceeds 5.0)"
    )


def test_the_bar_shows_the_next_trial_and_the_stopping_rule_progress() -> None:
    w, _, bars = _watch()
    w.on_message(
        protocol.NextStep(
            done=False, position=5, total=18, reruns=2, label="ebpf r3",
            stop=protocol.StopProgress(half_width_percent=2.5, target_percent=1.0, rounds_left=7),
        )
    )  # fmt: skip
    assert bars[-1]["description"] == (
        "trial 5/18 (2 re-runs) ebpf r3 | CI ±2.50 % (target ±1 %, ~7 rounds left)"
    )


def test_waiting_for_a_quiet_host_is_said() -> None:
    w, lines, bars = _watch()
    w.on_message(protocol.Waiting(reason="steal 23.0 % > 0.5 %", waited_s=40, budget_left_s=560))
    assert lines[-1].endswith(
        "] waiting for a quiet host: steal 23.0 % > 0.5 %, 40 s (noise budget left 9.3 min)"
    )
    assert "waiting for a quiet host" in bars[-1]["description"]


def test_stdout_that_is_no_message_is_ignored_and_a_torn_event_line_is_skipped(
    tmp_path: Path,
) -> None:
    assert protocol.parse("report: /x/report.html") is None
    assert protocol.parse('{"kind": "no-such-kind"}') is None
    run = RunDir(tmp_path)
    run.append_event({"kind": "waiting", "reason": "x", "waited_s": 1, "budget_left_s": 2})
    with (tmp_path / RunDir.EVENTS).open("a") as fh:
        fh.write('{"kind": "step-res')  # a crash mid-write
    events, offset = run.events()
    assert [e["kind"] for e in events] == ["waiting"]
    assert offset < (tmp_path / RunDir.EVENTS).stat().st_size  # the torn line is read again later
    assert json.loads((tmp_path / RunDir.EVENTS).read_text().splitlines()[0])["reason"] == "x"


def test_exit_codes_say_decided_inconclusive_or_unfit() -> None:
    def closed(status: str, decided: bool) -> protocol.RunClosed:
        return protocol.RunClosed(
            run_dir="r", status=status, trials=2, valid=2, rejected=0, answer="", decided=decided
        )

    assert exit_code([closed("complete", True)]) == EXIT_DECIDED == 0
    assert exit_code([closed("complete", True), closed("complete", False)]) == EXIT_INCONCLUSIVE
    assert exit_code([closed("environment-unfit", False), closed("complete", True)]) == EXIT_UNFIT
