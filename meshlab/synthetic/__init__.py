"""Seeded synthetic run directories with a known truth, in the results/README.md format.

Used by the unit tests (does the analysis find an injected effect, and only that?), by the
browser test's fixture and by the report benchmark. The plan is the real planner's, and every
trial is judged by the real judge from raw evidence (synthetic/evidence.py): its figures and
gates are the judge's, never written by hand. Noise model, per metric, in log space:

    log value = log(base) + log(1 + effect[arm]) + flood term + round noise + trial noise

Round noise is shared by all arms of a round (that shared part is what pairing removes);
trial noise is independent. The true paired log-ratio is therefore exactly
log(1 + effect[arm]) for every latency quantile (and `cpu_effect` for CPU per request).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from meshlab.core.flood import parse_flood
from meshlab.experiment import plan as planner
from meshlab.record.format import Git, Manifest, PlanEntry, iso_of
from meshlab.record.rundir import RunDir
from meshlab.record.spec import Experiment
from meshlab.synthetic import evidence
from meshlab.trial.judge import judge
from meshlab.trial.slot import TrialSlot

T0 = 1_795_600_000.0  # 2026-11-25, fixed so runs are byte-identical for a seed
DEFAULT_REQUESTS = 600
_CPU_BASE = {"client_sidecar": 0.20, "server_sidecar": 0.22, "app": 0.05, "k6": 0.12}
_NODE_OVERHEAD = 0.08  # CPU-s per 1000 requests outside the components (kernel, softirq)


@dataclass
class SyntheticSpec:
    """What to generate. Effects are relative changes vs the first arm (0.03 = +3 %)."""

    seed: int = 1  # the experiment's (plan) seed; part of the spec hash
    noise_seed: int | None = None  # the world's randomness; defaults to `seed`
    rounds: int = 12
    arms: tuple[str, ...] = ("iptables", "ebpf")
    effects: dict[str, float] = field(default_factory=lambda: {"ebpf": -0.03})
    cpu_effects: dict[str, float] = field(default_factory=dict)
    load_points: tuple[tuple[str, int], ...] = (("1000rps", 1000),)
    floods: tuple[str, ...] = ("50x500",)
    placements: tuple[str, ...] = ("same-node",)
    # placement -> arm -> effect, overriding `effects` in that placement
    placement_effects: dict[str, dict[str, float]] = field(default_factory=dict)
    # load point -> arm -> effect, overriding `effects` / `cpu_effects` at that load point (a
    # curve across rates whose true shape is known)
    load_point_effects: dict[str, dict[str, float]] = field(default_factory=dict)
    load_point_cpu_effects: dict[str, dict[str, float]] = field(default_factory=dict)
    flood_effect: dict[str, float] = field(default_factory=lambda: {"iptables": 0.04})
    base_p50_ms: float = 0.30
    request_sigma: float = 0.35  # lognormal shape of one trial's per-request latencies
    trial_sd: float = 0.012  # independent per-trial noise (log units)
    round_sd: float = 0.03  # noise shared by the arms of a round (log units)
    duration_s: int = 30  # the load points' (k6's) duration; the judged window is `requests`
    warmup_s: int = 5
    samples_per_trial: int | None = None  # requests measured per trial (None: 600)
    k6_rows: str = "minimal"  # "minimal" or "full" (13 rows per request, like real k6)
    reject: tuple[tuple[int, str], ...] = ()  # (round, arm): first attempt rejected (steal)
    requeue: bool = True  # a rejected trial gets a valid second attempt
    stop_after: int | None = None  # record only the first k executed trials
    in_progress: bool = False  # leave one trial directory without trial.json
    status: str = "complete"
    outcome: str | None = None  # manifest.outcome: the answer, or why the run was unfit
    design: str = "rmit"
    margin_percent: float = 2.0
    experiment_id: str = "synthetic"


def write_run(root: Path | str, spec: SyntheticSpec | None = None) -> Path:
    """Write a run directory under root/<experiment-id>/<run-id>/ and return its path."""
    spec = spec or SyntheticSpec()
    return _Writer(Path(root), spec).write()


def true_log_ratio(
    spec: SyntheticSpec,
    arm: str,
    flood: str,
    family: str = "latency",
    load_point: str | None = None,
    base: str | None = None,
) -> float:
    """The injected paired log-ratio ln(B/A) of `arm` vs `base` (default: the first arm) at
    `load_point` (None: no per-load-point effect): the known truth."""
    base = base or spec.arms[0]
    if family == "cpu":
        cpu = {**spec.cpu_effects, **spec.load_point_cpu_effects.get(load_point or "", {})}
        return math.log1p(cpu.get(arm, 0.0)) - math.log1p(cpu.get(base, 0.0))
    effects = {**spec.effects, **spec.load_point_effects.get(load_point or "", {})}
    flood_term = (
        (spec.flood_effect.get(arm, 0.0) - spec.flood_effect.get(base, 0.0))
        * _rules(flood)
        / 100_000
    )
    return math.log1p(effects.get(arm, 0.0)) - math.log1p(effects.get(base, 0.0)) + flood_term


def true_cpu_per_1000(spec: SyntheticSpec, arm: str, component: str, load_point: str) -> float:
    """The injected CPU-s per 1000 requests of one component (or node_total) of `arm` at
    `load_point`: the median over rounds (the noise terms have median 0)."""
    cpu = {**spec.cpu_effects, **spec.load_point_cpu_effects.get(load_point, {})}
    factor = 1 + cpu.get(arm, 0.0)
    if component == "node_total":
        return factor * (sum(_CPU_BASE.values()) + _NODE_OVERHEAD)
    return factor * _CPU_BASE[component]


def experiment_for(spec: SyntheticSpec) -> Experiment:
    return Experiment.model_validate(
        {
            "id": spec.experiment_id,
            "description": "synthetic run with a known injected effect",
            "arms": {arm: {"dataplane": _dataplane(arm), "description": arm} for arm in spec.arms},
            "load_points": [
                {
                    "name": name,
                    "rate": rate,
                    "duration_s": spec.duration_s,
                    "warmup_s": spec.warmup_s,
                    "connection_mode": "keepalive",
                    "path": "/get",
                }
                for name, rate in spec.load_points
            ],
            "flood_sizes": list(spec.floods),
            "placement": list(spec.placements),
            "rounds": spec.rounds,
            "design": spec.design,
            "seed": spec.seed,
            "gates": {"max_requeues": 2},
            "pinning": {"k6": "0", "client_sidecar": "1", "server_sidecar": "1", "app": "1"},
            "analysis": {"equivalence_margin_percent": spec.margin_percent},
        }
    )


def _dataplane(arm: str) -> str:
    if arm == "no-mesh":
        return "no-mesh"
    return "ebpf" if "ebpf" in arm else "iptables"


def _rules(flood: str) -> int:
    """iptables-save lines of a kube-proxy-shaped flood: per service a KUBE-SERVICES jump, a
    KUBE-SVC chain with a masquerade rule, per endpoint a jump plus a KUBE-SEP chain with
    MARK-MASQ and DNAT: 3 + 4·P lines. 50x500 gives the thesis' 101,806 with 306 base lines."""
    base = 306
    f = parse_flood(flood)
    return base + f.services * (3 + 4 * f.pods) if not f.off else base


class _Writer:
    def __init__(self, root: Path, spec: SyntheticSpec) -> None:
        self.spec = spec
        noise_seed = spec.seed if spec.noise_seed is None else spec.noise_seed
        self.rng = np.random.default_rng(noise_seed)
        self.experiment = experiment_for(spec)
        ident = f"{spec.seed}/{noise_seed}".encode()
        sha = hashlib.sha1(ident).hexdigest()[:7]  # noqa: S324 - a run id, not security
        run_id = datetime.fromtimestamp(T0, UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{sha}"
        self.run = RunDir(root / spec.experiment_id / run_id)
        self.clock = T0
        # round noise: shared by arms, drawn per (round, load point, flood, placement) and per
        # metric family
        keys = [
            (r, lp, f, p)
            for r in range(1, spec.rounds + 1)
            for lp, _ in spec.load_points
            for f in spec.floods
            for p in spec.placements
        ]
        self.round_noise = {k: self.rng.normal(0, spec.round_sd, 2) for k in keys}

    def write(self) -> Path:
        spec, exp = self.spec, self.experiment
        plan = planner.make_plan(exp)
        if spec.requeue:
            for entry in list(plan):
                if self._is_rejected(entry):
                    planner.requeue(plan, entry.index)
        order = planner.execution_order(plan)
        recorded = order if spec.stop_after is None else order[: spec.stop_after]
        for entry in recorded:
            self._trial(plan, entry)
        if spec.in_progress and len(recorded) < len(order):
            nxt = order[len(recorded)]
            tdir = self.run.trial(planner.trial_id(nxt, planner.attempt_of(plan, nxt)))
            tdir.open_empty().file(tdir.K6_SUMMARY).write_text("{}")
        manifest = Manifest(
            experiment=exp,
            spec_hash=exp.spec_hash(),
            seed=spec.seed,
            plan=plan,
            status=spec.status,
            outcome=spec.outcome,
            started_at=iso_of(T0),
            finished_at=iso_of(self.clock) if spec.status == "complete" else None,
            git=Git(sha="0000000", dirty=False),
            versions={
                "envoy": "1.40.0",
                "k6": "1.1.0",
                "nginx": "1.22.1",
                "kernel": "6.1.0",
                "ansible_core": "2.19.0",
                "meshlab": "0.1.0",
                "python": "3.11.7",
            },
            host={
                "cpu_model": "synthetic",
                "cores": 2,
                "hostname": "synthetic",
                "testbed": "local",
            },
            inventory={"hosts": ["localhost"]},
            pinning={p: exp.pinning_for(p).model_dump() for p in exp.placement},
        )
        self.run.save_manifest(manifest)
        return self.run.path

    def _is_rejected(self, entry: PlanEntry) -> bool:
        return entry.requeue_of is None and (entry.round, entry.arm) in self.spec.reject

    def _trial(self, plan: list[PlanEntry], entry: PlanEntry) -> None:
        spec, rng, exp = self.spec, self.rng, self.experiment
        arm, rnd, lp, flood = entry.arm, entry.round, entry.load_point, str(entry.flood)
        rate = dict(spec.load_points)[lp]
        noise = self.round_noise[(rnd, lp, flood, entry.placement)]
        effects = {
            **spec.effects,
            **spec.placement_effects.get(entry.placement, {}),
            **spec.load_point_effects.get(lp, {}),
        }
        cpu_effects = {**spec.cpu_effects, **spec.load_point_cpu_effects.get(lp, {})}
        noisy = self._is_rejected(entry)
        # latency: load raises it mildly; the flood term scales with rules for arms that scan them
        mu = evidence.mu_of(
            spec.base_p50_ms,
            0.08 * math.log(rate / 1000),
            math.log1p(effects.get(arm, 0.0)),
            spec.flood_effect.get(arm, 0.0) * _rules(flood) / 100_000,
            noise[0],
            rng.normal(0, spec.trial_sd),
            math.log(3.0) if noisy else 0.0,  # a noisy neighbour slows everything
        )
        cpu_factor = math.exp(
            math.log1p(cpu_effects.get(arm, 0.0)) + noise[1] + rng.normal(0, spec.trial_sd)
        ) * (1.5 if noisy else 1.0)
        shape = evidence.Shape(
            dataplane=exp.arms[arm].dataplane,
            rate=rate,
            requests=spec.samples_per_trial or DEFAULT_REQUESTS,
            warmup_s=min(spec.warmup_s, 1.0),  # its rows only: the window is what is judged
            mu=mu,
            sigma=spec.request_sigma,
            cpu_per_1000={c: _CPU_BASE[c] * cpu_factor for c in _CPU_BASE},
            node_overhead_per_1000=_NODE_OVERHEAD * cpu_factor,
            noisy=noisy,
            probe_s=0.005 * math.exp(rng.normal(0, 0.01)),
        )
        attempt = planner.attempt_of(plan, entry)
        tid = planner.trial_id(entry, attempt)
        slot = TrialSlot(entry, attempt, tid, self.run.trial(tid).open_empty())
        launch = self.clock + 1.0
        ev = evidence.write(slot.dir, rng, shape, launch, spec.k6_rows)
        ev.settle["rules"] = _rules(flood)
        ev.settle["rules_by_node"] = [_rules(flood)]
        record = judge(exp, exp.load_point(lp), slot, ev)
        self.clock = record.window.end + 2.0
