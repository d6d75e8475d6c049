"""Load a run directory for the analysis (format: meshlab.record, results/README.md).

Everything the analysis needs is read here, once, through the run format's models; later
stages never touch the raw JSON. Problems a user must fix raise MeshlabError("<path>: <problem>");
a run that is merely incomplete (running, interrupted, trials missing) loads, with notes saying
what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from meshlab.core.flood import parse_flood
from meshlab.core.placement import PLACEMENTS
from meshlab.errors import MeshlabError
from meshlab.record.format import CPU_FIGURES, NODE, Manifest, PlanEntry, TrialRecord
from meshlab.record.rundir import RunDir, TrialDir
from meshlab.record.spec import SATURATION_PREFIX

COMPLETE = "complete"
Block = tuple[str, str, str]  # (load point, flood, placement): one block of the plan


def block_title(block: Block) -> str:
    lp, flood, placement = block
    return f"{lp} · flood {flood} · {placement}"


CPU_COMPONENTS = CPU_FIGURES


class Trial:
    """One trial as the analysis sees it: a read-only view of its trial.json record (the one
    trial model, meshlab/record/format.py) with the few derived figures the analysis uses."""

    __slots__ = ("cpu", "dir", "latency", "record", "schedule_lag", "sidecar", "started_at")

    def __init__(self, tdir: TrialDir, record: TrialRecord) -> None:
        self.dir = tdir
        self.record = record
        # plain mappings, computed once: the metrics read them for every comparison
        self.latency: dict[str, float] = dict(record.summary.latency_ms)
        self.cpu: dict[str, dict[str, float | None]] = {
            name: fig.model_dump() for name, fig in record.cpu.items()
        }
        self.sidecar = {n: s.model_dump() for n, s in record.sidecar_latency_ms.items()}
        lag = record.load_generator.schedule_lag
        self.schedule_lag: dict[str, float] = lag.model_dump() if lag else {}
        self.started_at = _epoch(record.started_at)

    @classmethod
    def of(cls, tdir: TrialDir, r: TrialRecord) -> Trial:
        return cls(tdir, r)

    def __getattr__(self, name: str) -> Any:
        # the record's own fields (trial_id, round, arm, status, pair, attempt, ...)
        return getattr(self.record, name)

    @property
    def valid(self) -> bool:
        return self.record.valid

    @property
    def load_point(self) -> str:
        return self.record.load_point.name

    @property
    def rate(self) -> float:
        return float(self.record.load_point.rate)

    @property
    def connection_mode(self) -> str:
        return self.record.load_point.connection_mode

    @property
    def flood(self) -> str:
        return str(self.record.flood.spec)

    @property
    def flood_rules(self) -> int | None:
        return self.record.flood.rules

    @property
    def rejection_reasons(self) -> tuple[str, ...]:
        return tuple(self.record.rejection_reasons)

    @property
    def failed_gates(self) -> tuple[str, ...]:
        return tuple(self.record.failed_gates())

    @property
    def window(self) -> tuple[float, float]:
        return (self.record.window.start, self.record.window.end)

    @property
    def window_source(self) -> str:
        return self.record.window.source

    @property
    def requests(self) -> float | None:
        return self.record.summary.requests

    @property
    def achieved_rate(self) -> float | None:
        return self.record.summary.achieved_rate

    @property
    def steal_mean(self) -> float | None:
        return self.record.steal.mean_percent

    @property
    def steal_max(self) -> float | None:
        return self.record.steal.max_percent

    @property
    def node_seconds(self) -> dict[str, float | None]:
        """Node CPU seconds over the window: precise busy, the tasks' run time (None: no
        source), what the tick-sampled busy columns claimed (their bias), elapsed."""
        return _node_seconds(self.record)

    @property
    def host_probe_s(self) -> float | None:
        probe = self.record.host_probe
        return probe.seconds() if probe else None

    def cpu_value(self, component: str, key: str) -> float | None:
        value = self.cpu.get(component, {}).get(key)
        return None if value is None else float(value)

    @property
    def block(self) -> Block:
        return (self.load_point, self.flood, self.placement)

    def cgroups_seconds(self) -> float:
        """CPU-s of every cgroup the trial sampled (components and housekeeping)."""
        return sum(float(f.get("cpu_seconds") or 0) for n, f in self.cpu.items() if n != NODE)


@dataclass
class Run:
    """A loaded run: manifest facts plus every recorded trial."""

    path: Path
    manifest: Manifest
    experiment: dict[str, Any]
    status: str
    seed: int
    spec_hash: str
    arms: list[str]
    margin_percent: float
    primary: list[str]
    plan: list[PlanEntry]
    trials: list[Trial]
    in_progress: list[str] = field(default_factory=list)
    missing_planned: list[PlanEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def baseline(self) -> str:
        return self.arms[0]

    @property
    def partial(self) -> bool:
        return self.status != COMPLETE or bool(self.missing_planned) or bool(self.in_progress)

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def experiment_id(self) -> str:
        return str(self.experiment.get("id") or self.path.parent.name)

    def valid_trials(self) -> list[Trial]:
        return [t for t in self.trials if t.valid]

    def load_points(self) -> list[str]:
        """Load point names, by rate then name (the saturation search's are its own: they are
        compared by experiment/saturation.py, not paired round by round)."""
        rates: dict[str, float] = {}
        for t in self.trials:
            rates.setdefault(t.load_point, t.rate)
        for entry in self.plan:
            rates.setdefault(entry.load_point, float("inf"))
        rates = {k: v for k, v in rates.items() if not k.startswith(SATURATION_PREFIX)}
        return sorted(rates, key=lambda name: (rates[name], name))

    def placements(self) -> list[str]:
        found = {t.placement for t in self.trials} | {e.placement for e in self.plan}
        return [p for p in PLACEMENTS if p in found]

    def blocks(self) -> list[Block]:
        """Every (load point, flood, placement) block of the plan, in plan-ish order."""
        return [
            (lp, flood, placement)
            for placement in self.placements()
            for flood in self.floods()
            for lp in self.load_points()
        ]

    def floods(self) -> list[str]:
        """Flood labels, smallest first ('off' before any PxS)."""
        labels = {t.flood for t in self.trials} | {str(e.flood) for e in self.plan}
        return sorted(labels, key=lambda label: (parse_flood(label).size, label))


def load_run(run_dir: Path | str) -> Run:
    """Read and validate RUN_DIR; raise MeshlabError naming the path and the problem."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise MeshlabError(f"{run.path}: not a directory (expected a run directory under results/)")
    manifest = run.load_manifest()
    return run_of(run, manifest, list(run.records()), [d.id for d in run.unfinished()])


def run_of(
    run_dir: RunDir,
    manifest: Manifest,
    records: list[tuple[TrialDir, TrialRecord]],
    in_progress: list[str] | None = None,
) -> Run:
    """The analysis' view of a run whose records are already read (the engine keeps them in
    memory across its steps, so no trial.json is read twice)."""
    if not records:
        raise MeshlabError(
            f"{run_dir.path}: no finished trials yet (status {manifest.status}, "
            f"{len(manifest.plan)} planned) — nothing to report"
        )
    trials = [Trial.of(d, r) for d, r in records]
    exp = manifest.experiment
    arms = list(exp.arms)
    unknown = sorted({t.arm for t in trials} - set(arms))
    if unknown:
        raise MeshlabError(
            f"{run_dir.path}: trials of arm(s) {', '.join(unknown)} that the experiment does "
            "not declare"
        )
    run = Run(
        path=run_dir.path,
        manifest=manifest,
        experiment=exp.canonical(),
        status=manifest.status,
        seed=manifest.seed,
        spec_hash=manifest.spec_hash,
        arms=arms,
        margin_percent=exp.analysis.equivalence_margin_percent,
        primary=list(exp.analysis.primary),
        plan=manifest.plan,
        trials=sorted(trials, key=lambda t: (t.started_at or 0.0, t.plan_index or 0)),
        in_progress=in_progress or [],
    )
    recorded = {t.plan_index for t in trials}
    run.missing_planned = [e for e in manifest.plan if e.index not in recorded]
    run.notes = _partial_notes(run)
    return run


def _node_seconds(r: TrialRecord) -> dict[str, float | None]:
    if r.node is None:
        return {}
    accounts = [a for cpus in r.node.hosts.values() for a in cpus.values()]
    tasks = [a.task for a in accounts]
    return {
        "busy": sum(a.busy for a in accounts),
        "task": None if any(t is None for t in tasks) else sum(t or 0.0 for t in tasks),
        "ticks": sum(sum(a.ticks.values()) for a in accounts),
        "elapsed": sum(a.elapsed for a in accounts),
    }


def _epoch(iso: str) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


def _partial_notes(run: Run) -> list[str]:
    notes = []
    if run.status != COMPLETE:
        notes.append(
            f"Run status is '{run.status}': this report covers only the trials finished so far."
        )
    if run.missing_planned:
        notes.append(
            f"{len(run.plan) - len(run.missing_planned)} of {len(run.plan)} planned trials are "
            f"recorded; {len(run.missing_planned)} are missing."
        )
    if run.in_progress:
        dirs = "directory has" if len(run.in_progress) == 1 else "directories have"
        notes.append(
            f"{len(run.in_progress)} trial {dirs} no trial.json yet (unfinished): "
            f"{', '.join(run.in_progress)}."
        )
    return notes
