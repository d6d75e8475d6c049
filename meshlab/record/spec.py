"""Experiment definitions are data (experiments/*.yml), validated here.

Errors name the file, the field path and what is allowed, in one line.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from meshlab.core.arms import Dataplane
from meshlab.core.flood import OFF, Flood, parse_flood
from meshlab.core.placement import Placement
from meshlab.errors import MeshlabError

CpuList = Annotated[str, Field(pattern=r"^\d+(-\d+)?(,\d+(-\d+)?)*$")]


def _flood(value: Any) -> Flood:
    if value is False:  # YAML 1.1 reads a bare `off` as false
        return OFF
    try:
        return parse_flood(value, field=None)
    except MeshlabError as err:
        raise ValueError(str(err)) from None


# A flood size: typed in Python, its label (`off`, `50x500`) in JSON and YAML.
FloodSize = Annotated[Flood, BeforeValidator(_flood), PlainSerializer(str, return_type=str)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Arm(_Strict):
    dataplane: Dataplane
    description: str = ""


class LoadPoint(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")]
    rate: Annotated[int, Field(gt=0, le=100_000, description="requests per second (open model)")]
    duration_s: Annotated[int, Field(gt=0, le=3600, description="measured window")]
    warmup_s: Annotated[int, Field(ge=0, le=600)] = 5
    connection_mode: Literal["keepalive", "new-connection"] = "keepalive"
    path: Annotated[str, Field(pattern=r"^/")] = "/get"

    @model_validator(mode="after")
    def _warmup_shorter_than_duration(self) -> LoadPoint:
        if self.warmup_s >= self.duration_s:
            raise ValueError(
                f"warmup_s ({self.warmup_s}) must be shorter than duration_s ({self.duration_s})"
            )
        return self


ALPHA = 0.05
# An adaptive run judges every look at this level, not at 0.05/looks: its stop rule reads the
# intervals' widths only, never a sign or a p. Chosen by simulation with the decision code
# (docs/methodology.md, "Adaptive stopping"; meshlab bench calibration --only stoprule): at 0.04
# the family's false positives stayed <= 4.0 % and coverage >= 95.1 % in every noise model and
# target tried, up to 34 looks; at 0.05 they reached 5.1 % and 93.9 %; Bonferroni over the looks
# kept them under 1 % but lost 15 points of power and needs more rounds before its first look.
ADAPTIVE_ALPHA = 0.04


def look_alpha(looks: int) -> float:
    """The level every interval and test of the primary family is at, for a design with this
    many looks (one look: a fixed design)."""
    return ALPHA if looks <= 1 else ADAPTIVE_ALPHA


def first_look_rounds(looks: int, tests: int = 1) -> int:
    """Fewest rounds at which a look can decide anything: Holm's first step asks a p below
    look_alpha/tests, and the exact signed-rank test's smallest two-sided p is 2/2^n."""
    return math.ceil(math.log2(2 * max(tests, 1) / look_alpha(looks)))


class Gates(_Strict):
    steal_mean_percent: Annotated[float, Field(ge=0)] = 0.5
    steal_max_percent: Annotated[float, Field(ge=0)] = 5.0
    rate_tolerance_percent: Annotated[float, Field(ge=0, le=50)] = 1.0
    # k6 must start requests on schedule: how late its starts ran (k6/schedule.py). On a quiet
    # 2-core host the p99 ran 1.1-2.9 ms, under 13-37 % steal 4.4-9.6 ms (experiments/README.md)
    schedule_lag_p99_ms: Annotated[float, Field(gt=0)] = 4.0
    schedule_lag_max_ms: Annotated[float, Field(gt=0)] = 20.0
    # every figure agrees with an independent one (experiment/measure.py)
    components_over_node_percent: Annotated[float, Field(ge=0)] = 1.0
    cpu_accounting_percent: Annotated[float, Field(ge=0)] = 2.0
    # the harness' own processes (the step, its samplers) and the monitoring daemons share the
    # measured CPUs: their CPU, in % of one CPU over the window, is measured and bounded
    housekeeping_cpu_percent: Annotated[float, Field(gt=0, le=200)] = 5.0
    # Local testbed: the node's busy time that no testbed cgroup accounts for, in % of one CPU
    # over the window (kernel threads, the host's daemons, any other process). 624 quiet trials
    # held 6-9 % (5th-95th percentile, at most 14 %) whatever the rate and arm; a neighbour
    # process pushed it to 26-70 % and node CPU per request up by 17-75 % (docs/methodology.md,
    # "Unattributed CPU").
    unattributed_cpu_percent: Annotated[float, Field(gt=0, le=200)] = 20.0
    max_requeues: Annotated[int, Field(ge=0, le=20)] = 2
    # A noisy host is waited out, not counted: before every trial the host must be quiet
    # (steal at most steal_mean_percent, no CPU busier than settle_cpu_busy_percent) for
    # quiet_s; the run ends environment-unfit once waiting and re-running rejected trials
    # have cost noise_budget_s of wall time since it started or was last resumed.
    noise_budget_s: Annotated[float, Field(gt=0, le=86_400)] = 600.0
    quiet_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    settle_cpu_busy_percent: Annotated[float, Field(gt=0, le=100)] = 25.0
    # at a block's first step (after its flood or placement changed): rules must be stable
    settle_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0

    @model_validator(mode="before")
    @classmethod
    def _count_became_a_budget(cls, data: Any) -> Any:
        """Manifests of earlier runs hold max_rejected_share (a count of rejections that ended
        a run); they stay readable. A definition that sets it is refused in parse()."""
        if isinstance(data, dict) and "max_rejected_share" in data:
            data = {k: v for k, v in data.items() if k != "max_rejected_share"}
        return data


class Pinning(_Strict):
    """CPU lists (taskset syntax) per component; duet designs give each pair its own CPUs.
    The defaults are the same-node layout: k6 alone on CPU 0, the system under test on 1."""

    k6: CpuList = "0"
    client_sidecar: CpuList = "1"
    server_sidecar: CpuList = "1"
    app: CpuList = "1"


# Across nodes each node's pods share its CPU, as on the cloud: the client pod (k6 and its
# sidecar) on node 1's CPU 0, the server pod (its sidecar and nginx) on node 2's CPU 1.
DEFAULT_PINNING: dict[str, Pinning] = {
    "same-node": Pinning(),
    "cross-node": Pinning(k6="0", client_sidecar="0", server_sidecar="1", app="1"),
}


def _pinning(value: object) -> object:
    """`pinning: {k6: ...}` (one layout, as schema 1 wrote it) is the same-node layout; the
    other placements keep their defaults."""
    if isinstance(value, dict) and set(value) & set(Pinning.model_fields):
        value = {"same-node": value}
    if isinstance(value, dict):
        return {**DEFAULT_PINNING, **value}
    return value


PinningByPlacement = Annotated[dict[Placement, Pinning], BeforeValidator(_pinning)]


# The metrics the analysis compares (meshlab/analysis/metrics.py names them the same way).
Metric = Literal[
    "latency_p50", "latency_p90", "latency_p99", "latency_p999", "latency_mean",
    "cpu_node_total", "cpu_sidecars", "cpu_client_sidecar", "cpu_server_sidecar", "cpu_app",
    "cpu_k6", "server_sidecar_p50", "server_sidecar_p99",
]  # fmt: skip
# Schema 1 declared one primary metric by a short name.
_OLD_PRIMARY = {"p50": "latency_p50", "p90": "latency_p90", "p99": "latency_p99",
                "cpu": "cpu_node_total"}  # fmt: skip


class Stop(_Strict):
    """Adaptive stopping: after every `every` rounds from `min_rounds`, the run ends once every
    primary metric's CI half-width is at most `half_width_percent`, or at `rounds`. Each look is
    judged at ADAPTIVE_ALPHA (96 % intervals), the level the calibration showed keeps the
    family's error rates with a width-only stop rule (docs/methodology.md)."""

    half_width_percent: Annotated[float, Field(gt=0, le=50)]
    # 8: the fewest at which Holm over the default family of three can decide at a look's 0.04
    min_rounds: Annotated[int, Field(ge=6, le=1000)] = 8
    every: Annotated[int, Field(ge=1, le=100)] = 2


SATURATION_PREFIX = "saturation-"  # load points the saturation search makes: saturation-1500


class Saturation(_Strict):
    """Each arm's saturation point, searched after the planned blocks (experiment/saturation.py):
    the highest offered rate at which the arm keeps the open-model schedule (the run's rate,
    dropped-iteration and schedule-lag gates) and its p99 under `p99_ms`; bracketed by `growth`
    from `start_rate`, then bisected to `resolution`, all arms interleaved step by step."""

    p99_ms: Annotated[float, Field(gt=0, le=10_000)]
    start_rate: Annotated[int, Field(gt=0, le=100_000)]
    max_rate: Annotated[int, Field(gt=0, le=100_000)]
    min_rate: Annotated[int, Field(gt=0, le=100_000)] = 50
    resolution: Annotated[int, Field(ge=1, le=10_000)] = 100
    growth: Annotated[float, Field(gt=1, le=10)] = 2.0
    duration_s: Annotated[int, Field(gt=0, le=600)] = 8
    warmup_s: Annotated[int, Field(ge=0, le=60)] = 2
    connection_mode: Literal["keepalive", "new-connection"] = "keepalive"
    max_retries: Annotated[int, Field(ge=0, le=10)] = 2

    @model_validator(mode="after")
    def _rates_in_order(self) -> Saturation:
        if not self.min_rate <= self.start_rate <= self.max_rate:
            raise ValueError(
                f"needs min_rate ({self.min_rate}) <= start_rate ({self.start_rate}) <= "
                f"max_rate ({self.max_rate})"
            )
        if self.warmup_s >= self.duration_s:
            raise ValueError(
                f"warmup_s ({self.warmup_s}) must be shorter than duration_s ({self.duration_s})"
            )
        return self

    def load_point(self, rate: int) -> LoadPoint:
        return LoadPoint(
            name=f"{SATURATION_PREFIX}{rate}", rate=rate, duration_s=self.duration_s,
            warmup_s=self.warmup_s, connection_mode=self.connection_mode,
        )  # fmt: skip


class Analysis(_Strict):
    equivalence_margin_percent: Annotated[float, Field(gt=0, le=50)] = 2.0
    # The question the experiment answers: Holm-corrected within this family. Every other
    # metric is reported as exploratory, Holm-corrected within its own family.
    primary: Annotated[list[Metric], Field(min_length=1, max_length=6)] = [
        "latency_p50", "cpu_node_total", "cpu_sidecars",
    ]  # fmt: skip
    # The primaries adjusted by the host-speed probe (analysis/host_speed.py): `report` shows
    # them beside the raw ones; `decide` lets them decide the verdicts from 12 paired rounds,
    # where the calibration keeps the family's error rates (docs/methodology.md).
    host_speed: Literal["report", "decide"] = "report"

    @model_validator(mode="before")
    @classmethod
    def _schema_1_primary(cls, data: Any) -> Any:
        if isinstance(data, dict) and "primary_metric" in data:
            old = _OLD_PRIMARY.get(str(data["primary_metric"]), "latency_p50")
            data = {k: v for k, v in data.items() if k != "primary_metric"}
            data.setdefault("primary", [old])
        return data

    @field_validator("primary")
    @classmethod
    def _no_repeats(cls, primary: list[str]) -> list[str]:
        if len(set(primary)) != len(primary):
            raise ValueError(f"lists a metric twice: {primary}")
        return primary


class Experiment(_Strict):
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")]
    description: str
    arms: dict[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")], Arm]
    load_points: Annotated[list[LoadPoint], Field(min_length=1)]
    flood_sizes: Annotated[list[FloodSize], Field(min_length=1)] = [OFF]
    # each placement is a block of the plan, like a flood size (core/placement.py)
    placement: Annotated[list[Placement], Field(min_length=1)] = ["same-node"]
    rounds: Annotated[int, Field(ge=1, le=1000)]
    design: Literal["rmit", "abba", "duet", "sequential"] = "rmit"
    seed: int
    gates: Gates = Gates()
    # CPU layout per placement (docs/architecture.md); one layout alone is the same-node one
    pinning: PinningByPlacement = DEFAULT_PINNING
    analysis: Analysis = Analysis()
    stop: Stop | None = None
    saturation: Saturation | None = None

    @field_validator("placement")
    @classmethod
    def _each_placement_once(cls, placement: list[str]) -> list[str]:
        twice = sorted({p for p in placement if placement.count(p) > 1})
        if twice:
            raise ValueError(f"lists {', '.join(twice)} twice (each placement is one block)")
        return placement

    @field_validator("arms")
    @classmethod
    def _two_or_more_arms(cls, arms: dict[str, Arm]) -> dict[str, Arm]:
        if len(arms) < 2:
            raise ValueError("needs at least 2 arms to compare (the first is the baseline)")
        return arms

    @model_validator(mode="after")
    def _design_fits(self) -> Experiment:
        if self.design == "duet" and len(self.arms) != 2:
            raise ValueError("design duet runs exactly 2 arms at once (one per pod pair)")
        if self.design == "abba" and len(self.arms) != 2:
            raise ValueError("design abba alternates the order of exactly 2 arms")
        names = [lp.name for lp in self.load_points]
        if len(set(names)) != len(names):
            raise ValueError(f"load_points: names must be unique, got {names}")
        if self.stop is not None and self.stop.min_rounds > self.rounds:
            raise ValueError(
                f"stop.min_rounds ({self.stop.min_rounds}) exceeds rounds ({self.rounds}), "
                "the most the run may take"
            )
        return self

    def undecidable(self) -> str | None:
        """Why this adaptive design could never decide at its first look, or None. Checked
        for new definitions (parse); a recorded run judged under an earlier rule still loads."""
        if self.stop is None:
            return None
        looks = len(self.looks())
        k = len(self.analysis.primary)
        need = first_look_rounds(looks, k)
        if self.stop.min_rounds >= need:
            return None
        return (
            f"stop.min_rounds ({self.stop.min_rounds}) is too few: each look judges the "
            f"primary family of {k} at alpha {look_alpha(looks):g} with Holm, which the "
            f"exact test cannot reach below {need} rounds (raise min_rounds)"
        )

    def looks(self) -> list[int]:
        """The round counts at which an adaptive run checks whether it may stop (the last is
        `rounds`); a fixed design has one look, at the end."""
        if self.stop is None:
            return [self.rounds]
        out = list(range(self.stop.min_rounds, self.rounds + 1, self.stop.every))
        return out if out[-1] == self.rounds else [*out, self.rounds]

    @property
    def baseline(self) -> str:
        return next(iter(self.arms))

    def load_point(self, name: str) -> LoadPoint:
        for lp in self.load_points:
            if lp.name == name:
                return lp
        rate = name.removeprefix(SATURATION_PREFIX)
        if self.saturation is not None and name.startswith(SATURATION_PREFIX) and rate.isdigit():
            return self.saturation.load_point(int(rate))
        raise MeshlabError(f"load point {name!r} is not in experiment {self.id}")

    def canonical(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def pinning_for(self, placement: str) -> Pinning:
        return self.pinning.get(placement, DEFAULT_PINNING[placement])

    def spec_hash(self) -> str:
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def error_message(err: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key (not part of the experiment schema)"
    if err["type"] == "missing":
        return "required field is missing"
    return str(err["msg"]).removeprefix("Value error, ")


M = TypeVar("M", bound=BaseModel)


def validate_named(model: type[M], data: Any, source: str) -> M:
    """`model` from `data`, or one MeshlabError naming the source, the first bad field and
    how many more there are (every file this package reads is validated this way)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise MeshlabError(
            f"{source}: {field_path(first['loc'])}: {error_message(first)}{more}"
        ) from None


def parse(data: Any, source: str) -> Experiment:
    """Validate already-loaded data; `source` names it in errors."""
    if not isinstance(data, dict):
        raise MeshlabError(f"{source}: expected a mapping of experiment fields at the top level")
    if isinstance(data.get("gates"), dict) and "max_rejected_share" in data["gates"]:
        raise MeshlabError(
            f"{source}: gates.max_rejected_share: no longer a gate; a noisy host is waited out "
            "within gates.noise_budget_s (seconds of waiting and re-runs, default 600; "
            "docs/methodology.md)"
        )
    exp = validate_named(Experiment, data, source)
    why = exp.undecidable()
    if why:
        raise MeshlabError(f"{source}: {why}")
    return exp


def load(path: Path | str) -> Experiment:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise MeshlabError(f"{path}: no such experiment file") from None
    except yaml.YAMLError as err:
        raise MeshlabError(f"{path}: not valid YAML ({err})".replace("\n", " ")) from None
    return parse(data, str(path))
