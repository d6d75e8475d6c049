"""The run format (results/README.md): manifest.json and trial.json as typed models.

This module is the one owner of what a run record holds. The engine and the judge write
through it, the analysis reads through it, the synthetic generator generates through it; a
field is added here once (and in results/README.md), never as a dict literal elsewhere.

Reading is strict: an unknown key, a missing key or a wrong type is an error naming the file
and the field. A record of another schema version is refused with a message naming it.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from meshlab.core.arms import Dataplane
from meshlab.core.flood import Flood
from meshlab.core.placement import Placement
from meshlab.errors import MeshlabError
from meshlab.record.spec import Experiment, FloodSize, LoadPoint, validate_named

__all__ = ["validate_named"]  # re-exported for rundir

SCHEMA_VERSION = 3
# Schema 1 runs (before the precise CPU figures and the measured window) are read through
# meshlab.record.upgrade, which re-derives their figures from their raw files. Schema 3 added
# each trial's timeline and host-speed probe (optional: schema-2 trials have neither).
READABLE_VERSIONS = (1, 2, 3)
# The two testbeds, by the one name each has everywhere (code, roles, docs); manifests of
# schema 1-2 named them netns and k8s.
TESTBEDS = ("local", "cloud")
_OLD_TESTBED_NAMES = {"netns": "local", "k8s": "cloud"}
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def now_iso() -> str:
    return datetime.now(UTC).strftime(TIME_FORMAT)


def iso_of(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime(TIME_FORMAT)


# The components whose CPU every trial measures (cgroups on the local testbed, containers on
# the cloud), and the node-wide figure beside them.
COMPONENTS = ("client_sidecar", "server_sidecar", "app", "k6")
# What else runs on the testbed's CPUs, measured the same way so it can be told apart: the
# monitoring daemons (Prometheus, node_exporter) and the harness (the trial step, its samplers).
HOUSEKEEPING = ("monitoring", "harness")
NODE = "node_total"
CPU_FIGURES = (*COMPONENTS, NODE)
# The two sidecars' own request logs (Envoy access logs): client outbound, server inbound.
SIDECARS = ("client", "server")
# summary.latency_ms keys, in order (k6's per-request http_req_duration of the measured window).
LATENCY_KEYS = ("p5", "p25", "p50", "p75", "p90", "p95", "p99", "p999", "mean", "min", "max")
RUN_STATUSES = ("running", "complete", "interrupted", "failed", "environment-unfit")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ---- manifest.json ----------------------------------------------------------------------


class PlanEntry(Model):
    """One trial of the plan; a re-queued attempt is a new entry with `requeue_of`."""

    index: int
    round: int
    arm: str
    load_point: str
    flood: FloodSize
    placement: Placement = "same-node"
    pair: int = 1
    requeue_of: int | None = None

    @property
    def root(self) -> int:
        """The plan index of the original this entry is an attempt of."""
        return self.index if self.requeue_of is None else self.requeue_of


class Git(Model):
    sha: str
    dirty: bool


class Image(Model):
    """A container image the cloud testbed ran, as the preflight resolved it."""

    image: str
    tag: str
    digest: str


class Rejection(Model):
    trial_id: str
    reasons: list[str]


class StopState(Model):
    """Why an adaptive block ended (or how far it is)."""

    rounds: int  # valid paired rounds when last looked at
    half_width_percent: float | None  # the widest primary CI half-width then (at the look level)
    stopped: bool
    reason: str


class Manifest(Model):
    schema_version: Literal[1, 2, 3] = SCHEMA_VERSION
    experiment: Experiment
    spec_hash: str
    spec_file: str | None = None
    seed: int
    plan: list[PlanEntry]
    status: Literal["running", "complete", "interrupted", "failed", "environment-unfit"]
    started_at: str
    finished_at: str | None = None
    resumed_at: list[str] = []
    git: Git
    versions: dict[str, str]
    host: dict[str, Any]
    inventory: dict[str, Any]
    # per placement (schema 2 runs from before placements: one flat same-node layout)
    pinning: dict[str, dict[str, str]] | dict[str, str] | str
    images: dict[str, Image] = {}
    rejections: list[Rejection] = []
    # adaptive runs: per block ("<load point>/<flood>/<placement>"), the stopping rule's last look
    stopping: dict[str, StopState] = {}
    # how the run ended, in one line: the answer, or why the environment was unfit
    outcome: str | None = None

    @property
    def testbed(self) -> str:
        """local or cloud (older manifests said netns or k8s)."""
        name = str(self.host.get("testbed", "local"))
        return _OLD_TESTBED_NAMES.get(name, name)


# ---- trial.json -------------------------------------------------------------------------


class FloodRecord(Model):
    """The flood a trial ran under, with the rule count node 1 had when it started (and every
    node's: kube-proxy writes the same rules on each)."""

    spec: FloodSize
    pods: int
    services: int
    rules: int | None = None
    rules_by_node: list[int] = []

    @classmethod
    def of(cls, flood: Flood, rules: int | None, by_node: list[int] | None = None) -> FloodRecord:
        return cls(
            spec=flood, pods=flood.pods, services=flood.services, rules=rules,
            rules_by_node=by_node or [],
        )  # fmt: skip


class Window(Model):
    """The one window every figure of a trial covers, unix seconds: k6's first to last
    measured request start (source "k6 iteration starts"). `planned_start` is launch + warm-up,
    where the measured scenario was due; "planned" marks an upgraded schema-1 trial, whose
    window was launch + warm-up .. + duration."""

    start: float
    end: float
    requests: int | None = None
    planned_start: float | None = None
    source: Literal["k6 iteration starts", "planned"] = "k6 iteration starts"

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Settle(Model):
    seconds: float | None
    cpu_busy_percent: float | None
    rules_stable: bool
    timed_out: bool


class Gate(Model):
    value: int | float | None
    limit: int | float
    passed: bool = Field(alias="pass")


class Summary(Model):
    requests: int
    achieved_rate: float
    failed_requests: int
    latency_ms: dict[str, float]


class CpuFigure(Model):
    """CPU of one component (or the node) over the window."""

    cpu_seconds: float
    per_1000_requests: float | None
    max_percent: float | None


class Steal(Model):
    mean_percent: float
    max_percent: float


class ScheduleLag(Model):
    """How late k6 started requests against its own constant-arrival-rate schedule."""

    p50_ms: float
    p99_ms: float
    max_ms: float
    stalls_over_5ms: int  # consecutive starts more than 5 ms further apart than 1/rate
    max_gap_ms: float


class LoadGenerator(Model):
    env: dict[str, str]  # the environment k6 ran with (GC, output buffering)
    schedule_lag: ScheduleLag | None


class SidecarLatency(Model):
    """One sidecar's own request durations over the window (Envoy access log), ms."""

    count: int
    p50: float
    p90: float
    p99: float
    p999: float
    max: float


class CpuAccount(Model):
    """One CPU over the window, seconds (meshlab.core.cpuwindow.CpuAccount)."""

    elapsed: float
    busy: float
    idle: float
    iowait: float
    steal: float
    task: float | None
    ticks: dict[str, float]


class Timeline(Model):
    """Where a step's time went before its window, so that the overhead between one window
    and the next is recorded rather than guessed (unix seconds, durations in seconds)."""

    step_started: float  # the step began: the previous step's records were written
    quiet_wait_s: float  # waiting for a quiet host (steal and busy CPU under the gates)
    arm_s: float  # applying the arm(s) of the step
    settle_s: float  # the rule-stability check at a block's first step (0 otherwise)
    probe_s: float  # the host-speed probe, before and after the window
    launched: float  # k6 started; its warm-up and start-up lie between this and the window


class HostProbe(Model):
    """How long a fixed amount of work took on each CPU just before and just after the window
    (seconds, the median of a few repetitions): the host's speed, measured apart from the arm
    (the probe runs in the harness' cgroup, not a pod's, with no load running)."""

    work: str  # what the work is, so that only like probes are compared
    before: dict[str, float]  # CPU -> seconds
    after: dict[str, float]

    def seconds(self) -> float:
        """The geometric mean over CPUs and both ends: one figure of the host's speed."""
        values = [*self.before.values(), *self.after.values()]
        return float(math.exp(sum(math.log(v) for v in values) / len(values)))


# The three hops of a request through the mesh, and what can carry each (trial.json `path`).
HOPS = ("k6->client_sidecar", "client_sidecar->server_sidecar", "server_sidecar->app")
Carrier = Literal["iptables-redirect", "ebpf-connect", "sockmap", "none", "mixed", "unknown"]


class Hop(Model):
    """What carried one hop over the trial (k6's launch to its exit), and what the arm expects.
    iptables-redirect: a REDIRECT rule's packets (nat sees a connection's first packet only,
    so: connections); ebpf-connect: connect-time rewrites; sockmap: spliced sockets, whose
    messages sk_msg moved (`messages`); none: no mechanism (plain TCP, or no such hop)."""

    carrier: Carrier
    expected: Carrier
    connections: int | None = None  # connections the carrier took over the trial
    messages: int | None = None  # messages spliced over the trial (local testbed's sk_msg)


class PathEvidence(Model):
    """Which path the trial's traffic really took (schema 3; meshlab/trial/path.py): per hop,
    and the eBPF arm each pod's cgroup was in when k6 started and when it ended."""

    hops: dict[str, Hop]
    # local: pod -> off | ebpf | ebpf-connect; cloud: node -> off | ebpf (Merbridge attached)
    programs_start: dict[str, str]
    programs_end: dict[str, str]
    counters: dict[str, int]  # the counter deltas the carriers were read from
    sidecar_requests: dict[str, int] = {}  # requests each sidecar logged over the trial


class NodeCpu(Model):
    """Where node_total comes from: per host and CPU, busy = elapsed - idle - iowait - steal;
    `task_source` names the independent per-CPU task time, or is empty."""

    source: Literal["idle complement"] = "idle complement"
    task_source: str
    hosts: dict[str, dict[str, CpuAccount]]


class TrialRecord(Model):
    schema_version: Literal[2, 3] = SCHEMA_VERSION
    trial_id: str
    plan_index: int
    round: int
    arm: str
    dataplane: Dataplane
    pair: int
    attempt: Annotated[int, Field(ge=1)]
    requeue_of: int | None = None
    load_point: LoadPoint
    flood: FloodRecord
    placement: Placement = "same-node"  # schema-1 trials all ran on one node
    started_at: str
    ended_at: str
    window: Window
    settle: Settle
    status: Literal["valid", "rejected"]
    rejection_reasons: list[str]
    gates: dict[str, Gate]
    summary: Summary
    load_generator: LoadGenerator
    sidecar_latency_ms: dict[str, SidecarLatency]
    cpu: dict[str, CpuFigure]
    node: NodeCpu | None
    steal: Steal
    pinning: dict[str, str]
    pods: dict[str, str]
    timeline: Timeline | None = None  # schema 3
    host_probe: HostProbe | None = None  # schema 3
    path: PathEvidence | None = None  # schema 3: which path each hop took

    @model_validator(mode="after")
    def _a_valid_trial_has_its_latencies(self) -> TrialRecord:
        missing = [k for k in LATENCY_KEYS if k not in self.summary.latency_ms]
        if self.status == "valid" and missing:
            raise ValueError(f"a valid trial lacks summary.latency_ms {', '.join(missing)}")
        return self

    @property
    def valid(self) -> bool:
        return self.status == "valid"

    def failed_gates(self) -> list[str]:
        return [name for name, gate in self.gates.items() if not gate.passed]


# ---- reading and writing ----------------------------------------------------------------


def read_document(path: Path) -> dict[str, Any]:
    """A record file's JSON object, with its schema version checked; one MeshlabError naming
    the file otherwise (meshlab.record.rundir validates it against its model)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MeshlabError(f"{path}: missing") from None
    except OSError as err:
        raise MeshlabError(f"{path}: cannot read ({err.strerror or err})") from err
    if not text.strip():
        raise MeshlabError(f"{path}: empty file (half-written?)")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise MeshlabError(
            f"{path}: not valid JSON at line {err.lineno} column {err.colno} (half-written?)"
        ) from None
    if not isinstance(doc, dict):
        raise MeshlabError(f"{path}: expected a JSON object")
    version = doc.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise MeshlabError(
            f"{path}: schema_version {version!r} is not supported (this meshlab reads "
            f"{', '.join(map(str, READABLE_VERSIONS))})"
        )
    return doc


def dump(record: BaseModel) -> dict[str, Any]:
    """The JSON document of a record (aliases as the format spells them, e.g. `pass`)."""
    return record.model_dump(mode="json", by_alias=True)
