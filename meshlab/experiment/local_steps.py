"""The local testbed's steps, all in this process (`meshlab engine run RUN_DIR`): for each
step, wait for a quiet host within the noise budget, apply the arm, run k6 and judge, record;
until the plan is done, the budget is spent, or the next step needs another block than the
testbed is in (the playbook moves the pods or writes the flood, then calls this again)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshlab.experiment.engine import end_unfit, next_step, record, slots
from meshlab.experiment.progress import line
from meshlab.experiment.protocol import SegmentEnd, Waiting
from meshlab.experiment.state import RunState
from meshlab.record.rundir import RunDir


def run_local(run_dir: Path) -> SegmentEnd:
    """Run steps until the plan is done, the budget is spent, or the next step needs another
    block than the testbed is in (the playbook moves the pods or writes the flood, then
    calls this again). Each step: wait for a quiet host, apply the arm, run, judge, record."""
    from meshlab.testbeds.local import LocalTestbed
    from meshlab.testbeds.local.step import StepClock

    rs = RunState.load(RunDir(run_dir))
    session = LocalTestbed().open()
    gates = rs.manifest.experiment.gates

    def emit(msg: Any) -> None:
        rs.run.append_event(msg.model_dump(), line(msg))

    try:
        while True:
            nxt = next_step(rs)
            if nxt.done:
                emit(nxt)
                return SegmentEnd(reason="done" if nxt.reason == "complete" else nxt.reason)
            if (nxt.placement, str(nxt.flood["label"])) != (session.placement, session.flood):
                end = SegmentEnd(
                    reason="block-change", placement=nxt.placement, flood=nxt.flood["label"]
                )
                emit(end)
                return end
            emit(nxt)
            clock = StepClock(step_started=datetime.now(UTC).timestamp())

            def say(reason: str, waited: float, left: float) -> None:
                emit(Waiting(reason=reason, waited_s=round(waited, 1), budget_left_s=round(left)))

            wait = session.wait_quiet(gates, rs.budget_left(), say)
            clock.quiet_wait_s = wait.seconds
            if not wait.quiet:
                rs.waited_s = wait.waited_s
                end_unfit(rs, f"the host stayed noisy ({wait.reason})")
                return SegmentEnd(reason="environment-unfit", detail=rs.manifest.outcome or "")
            clock.arm_s = session.apply_arms(nxt.dataplanes)
            group = slots(rs, nxt.indexes)
            results = session.run(rs.manifest, group, clock, wait)
            emit(record(rs, group, results))
    finally:
        session.close()
