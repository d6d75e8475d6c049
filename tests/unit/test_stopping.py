"""Adaptive stopping: a block ends at a look once its primary intervals are narrow enough, its
remaining rounds are skipped, and the state survives --resume (it is rebuilt from the trials)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from meshlab.experiment import engine
from meshlab.experiment.state import RunState
from meshlab.record.rundir import RunDir
from meshlab.synthetic import SyntheticSpec, write_run


def _next(run_dir: Path) -> dict:
    return engine.next_step(RunState.load(RunDir(run_dir))).model_dump()


def _adaptive(tmp_path: Path, half_width: float, keep_rounds: int) -> Path:
    """A 12-round synthetic run turned adaptive (looks at 8, 10, 12), with only its first
    `keep_rounds` rounds recorded, still running."""
    run_dir = write_run(tmp_path, SyntheticSpec(rounds=12, trial_sd=0.002, round_sd=0.01))
    doc = json.loads((run_dir / "manifest.json").read_text())
    doc["experiment"]["stop"] = {"half_width_percent": half_width, "min_rounds": 8, "every": 2}
    doc["status"] = "running"
    (run_dir / "manifest.json").write_text(json.dumps(doc))
    for tdir in (run_dir / "trials").iterdir():
        if json.loads((tdir / "trial.json").read_text())["round"] > keep_rounds:
            shutil.rmtree(tdir)
    return run_dir


def test_a_block_whose_intervals_are_narrow_stops_at_the_look(tmp_path: Path) -> None:
    run_dir = _adaptive(tmp_path, half_width=20.0, keep_rounds=8)
    nxt = _next(run_dir)
    assert nxt["done"] is True and nxt["stopped_early"] == ["1000rps/50x500/same-node"]
    (state,) = RunDir(run_dir).load_manifest().stopping.values()
    assert state.stopped and state.rounds == 8 and state.half_width_percent < 20
    assert "stopped after 8 paired rounds" in state.reason
    assert engine.finish(run_dir).status == "complete"


def test_a_block_keeps_going_until_its_target_and_forecasts_rounds(tmp_path: Path) -> None:
    run_dir = _adaptive(tmp_path, half_width=0.01, keep_rounds=8)
    nxt = _next(run_dir)
    assert nxt["done"] is False
    assert nxt["stop"]["target_percent"] == 0.01 and nxt["stop"]["half_width_percent"] > 0.01
    assert nxt["stop"]["rounds_left"] == 4  # capped at the rounds the plan holds
    (state,) = RunDir(run_dir).load_manifest().stopping.values()
    assert not state.stopped and "next look at 10" in state.reason


def test_between_looks_nothing_stops_and_a_resume_keeps_the_state(tmp_path: Path) -> None:
    run_dir = _adaptive(tmp_path, half_width=20.0, keep_rounds=9)  # 9 is not a look
    assert _next(run_dir)["done"] is False
    engine.finish(run_dir, interrupted=True)
    resumed = engine.init(Path("unused.yml"), tmp_path, run_dir, "local")
    assert resumed.done == 18
    assert RunDir(run_dir).load_manifest().stopping  # carried in the manifest


def test_an_adaptive_run_names_every_interval_with_its_real_level(tmp_path: Path) -> None:
    """Issue 19: adaptive runs printed "95 % CI" beside a (1 - 0.05/looks) interval. Every look
    of an adaptive run is judged at spec.ADAPTIVE_ALPHA, and every line names that level."""
    from meshlab.analysis.loading.run import load_run
    from meshlab.analysis.report.report import build
    from meshlab.analysis.statistics.analyse import analyse
    from meshlab.analysis.statistics.results import PRIMARY

    run_dir = _adaptive(tmp_path, half_width=20.0, keep_rounds=8)
    _next(run_dir)
    (state,) = RunDir(run_dir).load_manifest().stopping.values()
    assert "every primary 96 % CI half-width" in state.reason
    assert all("96 % CI" in line for line in engine.so_far(RunState.load(RunDir(run_dir))))
    analysis = analyse(load_run(run_dir))
    assert analysis.alpha_primary == 0.04 and analysis.looks == [8, 10, 12]
    texts = []
    for r in analysis.comparisons[0].results:
        level = "96 %" if r.family == PRIMARY else "95 %"
        assert r.level == level and r.confidence95 is not None
        assert r.confidence95 >= (0.96 if r.family == PRIMARY else 0.95)
        if "CI" in r.text:
            assert f"({level} CI " in r.text, r.text
            texts.append(r.text)
    assert texts
    build(run_dir)
    summary = (run_dir / "derived" / "summary.md").read_text()
    html = (run_dir / "derived" / "report.html").read_text()
    assert "95 % CI" not in summary.split("## Verdicts")[1].split("|")[0]  # the primary lines
    assert "| 96 % |" in summary and "96 % CI half-width" in summary
    assert "at alpha 0.04 at each of its 3 looks" in html and "95 % CI</th>" not in html
