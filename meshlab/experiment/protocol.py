"""The messages between the experiment playbook and the engine: typed, and told apart by
their `kind`, never by the name of the task that printed them.

Every engine command prints exactly one message as a JSON object on stdout; the playbook reads
its fields (`from_json`), and `meshlab run` recognises it by kind in whatever task printed it.
While the local testbed's trials run (one long engine process), the engine also appends each
message to the run's events.jsonl, which `meshlab run` follows for live progress.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def json_line(self) -> str:
        return self.model_dump_json()


class Planned(_Message):
    """`engine init`: the run exists, its plan is written; what the testbed must look like
    for the first step still to run."""

    kind: Literal["planned"] = "planned"
    run_dir: str
    testbed: Literal["local", "cloud"]
    planned: int
    done: int
    duet: bool
    dataplanes: list[str]
    first_flood: str
    first_placement: str
    max_steps: int  # the cloud play's step loop bound (every trial re-queued to its limit)
    max_segments: int  # the local play's block loop bound (each block once, plus one)
    discarded_unfinished: list[str] = []


class StopProgress(BaseModel):
    half_width_percent: float
    target_percent: float
    rounds_left: int | None


class NextStep(_Message):
    """`engine next` (and the local loop): the step to run, or that the plan is done."""

    kind: Literal["next-step"] = "next-step"
    done: bool
    reason: str = ""  # done: complete | environment-unfit
    stopped_early: list[str] = []
    indexes: list[int] = []
    flood: dict[str, Any] = {}  # label, pods, services
    placement: str = ""
    dataplanes: dict[str, str] = {}  # pod pair -> dataplane
    label: str = ""  # 'ebpf r03 [flood 50x500]'
    position: int = 0
    total: int = 0
    reruns: int = 0
    stop: StopProgress | None = None


class TrialLine(BaseModel):
    id: str
    arm: str
    round: int
    block: str
    status: str
    p50_ms: float | None
    steal_max_percent: float
    reasons: list[str]


class StepResult(_Message):
    """A step's trials, judged (`engine ingest` on the cloud, the local loop per step)."""

    kind: Literal["step-result"] = "step-result"
    trials: list[TrialLine]
    done: int
    total: int
    reruns: int = 0
    so_far: list[str] = []
    # the run's wall time so far and the share of it inside measured windows
    wall_s: float | None = None
    measuring_share: float | None = None
    # window end of the previous trial -> window start of this step's first, seconds
    overhead_s: float | None = None


class Waiting(_Message):
    """The host is not quiet enough to start a trial; the engine waits (within its budget)."""

    kind: Literal["waiting"] = "waiting"
    reason: str  # 'steal 23.0 % > 0.5 %'
    waited_s: float
    budget_left_s: float


class SegmentEnd(_Message):
    """`engine run` (local testbed): why the loop returned to the playbook."""

    kind: Literal["segment-end"] = "segment-end"
    reason: Literal["done", "block-change", "environment-unfit"]
    placement: str = ""  # block-change: what the next step needs
    flood: str = ""
    detail: str = ""


class RunClosed(_Message):
    """`engine finish`: how the run ended, with its answer in one line."""

    kind: Literal["run-closed"] = "run-closed"
    run_dir: str
    status: str
    trials: int
    valid: int
    rejected: int
    answer: str
    decided: bool


Message = Annotated[
    Planned | NextStep | StepResult | Waiting | SegmentEnd | RunClosed, Field(discriminator="kind")
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(Message)


AnyMessage = Planned | NextStep | StepResult | Waiting | SegmentEnd | RunClosed


def parse(text: str) -> AnyMessage | None:
    """The message in a task's stdout (or an events.jsonl line); None when it holds none."""
    text = text.strip()
    if not text.startswith("{"):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return parse_doc(doc)


def parse_doc(doc: Any) -> AnyMessage | None:
    if not isinstance(doc, dict) or "kind" not in doc:
        return None
    try:
        return _ADAPTER.validate_python(doc)
    except ValidationError:
        return None
