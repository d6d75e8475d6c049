"""Progress lines from ansible-runner events: what a user (or a CI log) sees during a run."""

import json

from meshlab.experiment.runner import NEXT_TASK, PLAN_TASK, STEP_RESULT_TASKS, _Watcher


def _ok(task: str, out: dict) -> dict:
    return {
        "event": "runner_on_ok",
        "event_data": {"task": task, "res": {"stdout": json.dumps(out)}},
    }


def _trial(arm: str, status: str, reasons: list[str]) -> dict:
    return {
        "arm": arm,
        "round": 1,
        "status": status,
        "p50_ms": 0.61,
        "steal_max_percent": 0.2,
        "reasons": reasons,
    }


def _watch() -> tuple[_Watcher, list[str], list[dict]]:
    lines: list[str] = []
    bars: list[dict] = []
    return _Watcher(lines.append, lambda **kw: bars.append(kw)), lines, bars


def test_plays_plan_and_trials_become_lines():
    w, lines, bars = _watch()
    w({"event": "playbook_on_play_start", "event_data": {"play": "Install the container runtime"}})
    w({"event": "playbook_on_play_start", "event_data": {"play": "Run the trials"}})
    w({"event": "playbook_on_task_start", "event_data": {"task": "Plan"}})
    w(_ok(PLAN_TASK, {"run_dir": "/r/x", "planned": 16, "done": 0}))
    w(
        _ok(
            STEP_RESULT_TASKS[0],
            {"trials": [_trial("ebpf", "valid", [])], "done": 1, "total": 16, "so_far": []},
        )
    )
    assert lines[0].endswith("] Run the trials")  # the play with no hosts here stays silent
    assert lines[1] == "run /r/x: 16 trials planned, 0 done"
    assert lines[2] == "trial 1/16 ebpf r01: p50 0.610 ms, steal max 0.2 %, valid"
    assert bars[-1] == {"total": 16, "completed": 1}


def test_a_rejected_trial_says_why_and_the_total_says_it_grew_by_a_rerun():
    w, lines, _ = _watch()
    w(
        _ok(
            STEP_RESULT_TASKS[0],
            {
                "trials": [_trial("ebpf", "rejected", ["steal_max_percent 9 exceeds 5.0"])],
                "done": 1,
                "total": 17,
                "reruns": 1,
                "so_far": [],
            },
        )
    )
    assert lines[-1] == (
        "trial 1/17 (1 re-run) ebpf r01: p50 0.610 ms, steal max 0.2 %, "
        "REJECTED (steal_max_percent 9 exceeds 5.0)"
    )


def test_the_bar_shows_the_next_trial_and_the_stopping_rule_progress():
    w, _, bars = _watch()
    w(
        _ok(
            NEXT_TASK,
            {
                "done": False,
                "position": 5,
                "total": 18,
                "reruns": 2,
                "label": "ebpf r3",
                "stop": {"half_width_percent": 2.5, "target_percent": 1.0, "rounds_left": 7},
            },
        )
    )
    assert bars[-1]["description"] == (
        "trial 5/18 (2 re-runs) ebpf r3 | CI ±2.50 % (target ±1 %, ~7 rounds left)"
    )
