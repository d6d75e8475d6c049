"""The cloud testbed's steps (`meshlab engine next|prepare|ingest`): the playbook runs each step
across the nodes; the engine says which step is next, prepares its trial and judges what the
playbook fetched. Each message is also appended to the run's events.jsonl, as the local loop's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshlab.experiment.engine import next_step, record, slots
from meshlab.experiment.progress import line
from meshlab.experiment.protocol import NextStep, StepResult
from meshlab.experiment.state import RunState
from meshlab.record.rundir import RunDir


def next_cloud(run_dir: Path) -> NextStep:
    rs = RunState.load(RunDir(run_dir))
    msg = next_step(rs)
    rs.run.append_event(msg.model_dump(), line(msg))
    return msg


def prepare(run_dir: Path, index: int, target_url: str, k6_memory_limit: int) -> dict[str, Any]:
    from meshlab.testbeds.cloud import CloudTestbed

    rs = RunState.load(RunDir(run_dir))
    (slot,) = slots(rs, [index])
    return CloudTestbed().prepare(rs.manifest, slot, target_url, k6_memory_limit)


def ingest(run_dir: Path, index: int, raw: Path) -> StepResult:
    from meshlab.testbeds.cloud import CloudTestbed

    rs = RunState.load(RunDir(run_dir))
    (slot,) = slots(rs, [index])
    result = CloudTestbed().ingest(rs.manifest, slot, raw)
    msg = record(rs, [slot], [result])
    rs.run.append_event(msg.model_dump(), line(msg))
    return msg
