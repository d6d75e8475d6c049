"""Load and validate a run directory (format: results/README.md, schema_version 1).

Everything the analysis needs is read here, once; later stages never touch the raw JSON.
Problems a user must fix raise MeshlabError("<path>: <problem>"); a run that is merely
incomplete (running, interrupted, trials missing) loads, with notes saying what is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from meshlab.errors import MeshlabError

SCHEMA_VERSION = 1
DEFAULT_MARGIN_PERCENT = 2.0
COMPLETE = "complete"
CPU_COMPONENTS = ("client_sidecar", "server_sidecar", "app", "k6", "node_total")
_MANIFEST_KEYS = ("schema_version", "experiment", "plan", "status")
_TRIAL_KEYS = ("trial_id", "round", "arm", "status", "load_point")
_LATENCY_KEYS = ("p5", "p25", "p50", "p75", "p90", "p95", "p99", "p999", "mean")
# experiment.analysis.primary_metric as the experiment schema spells it -> metric key
PRIMARY_METRICS = {
    "p50": "latency_p50",
    "p90": "latency_p90",
    "p99": "latency_p99",
    "cpu": "cpu_node_total",
}
DEFAULT_REJECTED_SHARE = 0.2  # methodology T5: above this share of rejections, "environment unfit"


@dataclass(frozen=True)
class Trial:
    """One trial.json, flattened to what the analysis uses."""

    dir: Path
    trial_id: str
    plan_index: int | None
    round: int
    arm: str
    dataplane: str
    attempt: int
    pair: int
    load_point: str
    rate: float
    connection_mode: str
    flood: str
    flood_rules: int | None
    status: str
    rejection_reasons: tuple[str, ...]
    failed_gates: tuple[str, ...]
    started_at: float | None
    window: tuple[float, float] | None
    requests: float | None
    achieved_rate: float | None
    latency: dict[str, float]
    cpu: dict[str, dict[str, float | None]]
    steal_mean: float | None
    steal_max: float | None

    @property
    def valid(self) -> bool:
        return self.status == "valid"

    def cpu_value(self, component: str, key: str) -> float | None:
        value = self.cpu.get(component, {}).get(key)
        return None if value is None else float(value)


@dataclass
class Run:
    """A loaded run: manifest facts plus every recorded trial."""

    path: Path
    manifest: dict[str, Any]
    experiment: dict[str, Any]
    status: str
    seed: int
    spec_hash: str
    arms: list[str]
    margin_percent: float
    primary_metric: str
    max_rejected_share: float
    plan: list[dict[str, Any]]
    trials: list[Trial]
    in_progress: list[str] = field(default_factory=list)
    missing_planned: list[dict[str, Any]] = field(default_factory=list)
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
        """Load point names, by rate then name."""
        rates: dict[str, float] = {}
        for t in self.trials:
            rates.setdefault(t.load_point, t.rate)
        for entry in self.plan:
            rates.setdefault(str(entry.get("load_point")), float("inf"))
        return sorted(rates, key=lambda name: (rates[name], name))

    def floods(self) -> list[str]:
        """Flood labels, smallest first ('off' before any PxS)."""
        labels = {t.flood for t in self.trials} | {str(e.get("flood")) for e in self.plan}
        return sorted(labels, key=flood_size)


def flood_size(label: str) -> tuple[int, str]:
    """Sort key for flood labels: 'off' = 0, 'PxS' = P*S."""
    pods, _, services = label.partition("x")
    if pods.isdigit() and services.isdigit():
        return int(pods) * int(services), label
    return 0, label


def load_run(run_dir: Path | str) -> Run:
    """Read and validate RUN_DIR; raise MeshlabError naming the path and the problem."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MeshlabError(f"{run_dir}: not a directory (expected a run directory under results/)")
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise MeshlabError(f"{manifest_path}: missing — {run_dir} is not a meshlab run directory")
    manifest = _read_json(manifest_path)
    _check_schema(manifest_path, manifest)
    for key in _MANIFEST_KEYS:
        if key not in manifest:
            raise MeshlabError(f"{manifest_path}: missing key '{key}' (half-written manifest?)")
    experiment = manifest["experiment"]
    plan = manifest["plan"]
    if not isinstance(experiment, dict):
        raise MeshlabError(f"{manifest_path}: 'experiment' must be an object")
    if not isinstance(plan, list) or not all(isinstance(e, dict) for e in plan):
        raise MeshlabError(f"{manifest_path}: 'plan' must be a list of objects")

    plan_by_index = {e.get("index"): e for e in plan}
    trials, in_progress = _load_trials(run_dir, plan_by_index)
    if not trials:
        raise MeshlabError(
            f"{run_dir}: no finished trials yet (status {manifest['status']}, "
            f"{len(plan)} planned) — nothing to report"
        )
    arms = _arms(manifest_path, experiment, plan, trials)
    run = Run(
        path=run_dir,
        manifest=manifest,
        experiment=experiment,
        status=str(manifest["status"]),
        seed=int(manifest.get("seed") or experiment.get("seed") or 0),
        spec_hash=str(manifest.get("spec_hash") or ""),
        arms=arms,
        margin_percent=_margin(manifest_path, experiment),
        primary_metric=_primary(manifest_path, experiment),
        max_rejected_share=float(
            (experiment.get("gates") or {}).get("max_rejected_share", DEFAULT_REJECTED_SHARE)
        ),
        plan=plan,
        trials=sorted(trials, key=lambda t: (t.started_at or 0.0, t.plan_index or 0)),
        in_progress=in_progress,
    )
    recorded = {t.plan_index for t in trials}
    run.missing_planned = [e for e in plan if e.get("index") not in recorded]
    run.notes = _partial_notes(run)
    return run


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise MeshlabError(f"{path}: cannot read ({err.strerror or err})") from err
    if not text.strip():
        raise MeshlabError(f"{path}: empty file (half-written?)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise MeshlabError(
            f"{path}: not valid JSON at line {err.lineno} column {err.colno} (half-written?)"
        ) from err


def _check_schema(path: Path, doc: Any) -> None:
    if not isinstance(doc, dict):
        raise MeshlabError(f"{path}: expected a JSON object")
    version = doc.get("schema_version")
    if version is None:
        raise MeshlabError(f"{path}: no schema_version (expected {SCHEMA_VERSION})")
    if version != SCHEMA_VERSION:
        raise MeshlabError(
            f"{path}: schema_version {version!r} is not supported (this meshlab reads "
            f"{SCHEMA_VERSION})"
        )


def _load_trials(run_dir: Path, plan_by_index: dict[Any, dict]) -> tuple[list[Trial], list[str]]:
    trials_dir = run_dir / "trials"
    if not trials_dir.is_dir():
        return [], []
    trials, in_progress = [], []
    for tdir in sorted(p for p in trials_dir.iterdir() if p.is_dir()):
        tjson = tdir / "trial.json"
        if not tjson.is_file():
            # trial.json is written last (atomically): this trial was still running.
            in_progress.append(tdir.name)
            continue
        doc = _read_json(tjson)
        _check_schema(tjson, doc)
        trials.append(_parse_trial(tjson, doc, plan_by_index))
    return trials, in_progress


def _parse_trial(path: Path, doc: dict, plan_by_index: dict[Any, dict]) -> Trial:
    for key in _TRIAL_KEYS:
        if key not in doc:
            raise MeshlabError(f"{path}: missing key '{key}'")
    status = doc["status"]
    if status not in ("valid", "rejected"):
        raise MeshlabError(f"{path}: status {status!r} is neither 'valid' nor 'rejected'")
    summary = doc.get("summary") or {}
    latency = summary.get("latency_ms") or {}
    if status == "valid":
        for key in _LATENCY_KEYS:
            if not isinstance(latency.get(key), int | float):
                raise MeshlabError(f"{path}: valid trial lacks summary.latency_ms.{key}")
    lp = doc["load_point"] if isinstance(doc["load_point"], dict) else {"name": doc["load_point"]}
    plan_entry = plan_by_index.get(doc.get("plan_index"), {})
    flood = doc.get("flood") or {}
    gates = doc.get("gates") or {}
    window = doc.get("window") or {}
    steal = doc.get("steal") or {}
    return Trial(
        dir=path.parent,
        trial_id=str(doc["trial_id"]),
        plan_index=doc.get("plan_index"),
        round=int(doc["round"]),
        arm=str(doc["arm"]),
        dataplane=str(doc.get("dataplane") or doc["arm"]),
        attempt=int(doc.get("attempt") or 1),
        pair=int(doc.get("pair") or 1),
        load_point=str(lp.get("name") or plan_entry.get("load_point")),
        rate=float(lp.get("rate") or 0.0),
        connection_mode=str(lp.get("connection_mode") or ""),
        flood=str(plan_entry.get("flood") or _flood_label(flood)),
        flood_rules=flood.get("rules"),
        status=status,
        rejection_reasons=tuple(str(r) for r in doc.get("rejection_reasons") or ()),
        failed_gates=tuple(
            name for name, g in gates.items() if isinstance(g, dict) and g.get("pass") is False
        ),
        started_at=_epoch(doc.get("started_at")),
        window=(float(window["start"]), float(window["end"]))
        if "start" in window and "end" in window
        else None,
        requests=summary.get("requests"),
        achieved_rate=summary.get("achieved_rate"),
        latency={k: float(v) for k, v in latency.items() if isinstance(v, int | float)},
        cpu={c: dict(v) for c, v in (doc.get("cpu") or {}).items() if isinstance(v, dict)},
        steal_mean=steal.get("mean_percent"),
        steal_max=steal.get("max_percent"),
    )


def _flood_label(flood: dict) -> str:
    pods, services = flood.get("pods") or 0, flood.get("services") or 0
    return f"{pods}x{services}" if pods and services else "off"


def _epoch(iso: Any) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


def _arms(path: Path, experiment: dict, plan: list[dict], trials: list[Trial]) -> list[str]:
    """Arms in declared order; the first is the baseline. Accepts a mapping or a list."""
    declared = experiment.get("arms")
    if isinstance(declared, dict):
        arms = [str(k) for k in declared]
    elif isinstance(declared, list):
        arms = [str(a.get("name")) if isinstance(a, dict) else str(a) for a in declared]
    else:
        arms = []
    for name in [str(e.get("arm")) for e in plan] + [t.arm for t in trials]:
        if name not in arms:
            arms.append(name)
    if len(arms) < 2:
        raise MeshlabError(f"{path}: experiment.arms names {len(arms)} arm(s); need at least 2")
    return arms


def _margin(path: Path, experiment: dict) -> float:
    value = (experiment.get("analysis") or {}).get(
        "equivalence_margin_percent", DEFAULT_MARGIN_PERCENT
    )
    if not isinstance(value, int | float) or not 0 < value < 100:
        raise MeshlabError(
            f"{path}: experiment.analysis.equivalence_margin_percent must be a number in (0, 100)"
        )
    return float(value)


def _primary(path: Path, experiment: dict) -> str:
    name = str((experiment.get("analysis") or {}).get("primary_metric") or "p50")
    if name in PRIMARY_METRICS.values():
        return name
    if name not in PRIMARY_METRICS:
        allowed = ", ".join(PRIMARY_METRICS)
        raise MeshlabError(
            f"{path}: experiment.analysis.primary_metric {name!r} is not one of {allowed}"
        )
    return PRIMARY_METRICS[name]


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
