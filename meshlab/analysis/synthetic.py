"""Seeded synthetic run directories with a known truth, in the results/README.md format.

Used by the unit tests (does the analysis find an injected effect, and only that?), by the
browser test's fixture and by the report benchmark. Noise model, per metric, in log space:

    log value = log(base) + log(1 + effect[arm]) + flood term + round noise + trial noise

Round noise is shared by all arms of a round (that shared part is what pairing removes);
trial noise is independent. The true paired log-ratio is therefore exactly
log(1 + effect[arm]) for every latency quantile (and `cpu_effect` for CPU per request).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import NormalDist

import numpy as np

from meshlab.core import atomic
from meshlab.core.flood import parse_flood
from meshlab.core.procstat import FIELDS as PROC_STAT_FIELDS
from meshlab.k6.results import summarize
from meshlab.record.format import (
    COMPONENTS,
    CpuAccount,
    CpuFigure,
    FloodRecord,
    Gate,
    Git,
    LoadGenerator,
    Manifest,
    NodeCpu,
    PlanEntry,
    ScheduleLag,
    Settle,
    SidecarLatency,
    Steal,
    Summary,
    TrialRecord,
    Window,
)
from meshlab.record.rundir import RunDir, TrialDir
from meshlab.record.spec import Experiment

T0 = 1_795_600_000.0  # 2026-11-25, fixed so runs are byte-identical for a seed
USER_HZ = 100
_CPU_BASE = {"client_sidecar": 0.20, "server_sidecar": 0.22, "app": 0.05, "k6": 0.12}
_NODE_OVERHEAD = 0.08  # CPU-s per 1000 requests outside the components (kernel, softirq)
_LAT_Q = {"p5": 5, "p25": 25, "p50": 50, "p75": 75, "p90": 90, "p95": 95, "p99": 99}
_LAT_Q["p999"] = 99.9
_LAT_Z = {k: NormalDist().inv_cdf(q / 100) for k, q in _LAT_Q.items()}
K6_HEADER = (
    "metric_name,timestamp,metric_value,check,error,error_code,expected_response,group,method,"
    "name,proto,scenario,service,status,subproto,tls_version,url,extra_tags,metadata\n"
)
# k6 writes ~13 rows per request; the 'full' template reproduces them so the reader is timed
# on realistic files. {s} = scenario, {t} = unix µs, {v} = duration ms, {w} = waiting ms.
_TAGS = ",,,,true,,GET,http://198.19.0.1/get,HTTP/1.1,{s},,200,,,http://198.19.0.1/get,,\n"
_ROW = "{m},{t},{x}" + _TAGS
_FULL_ROWS = [
    _ROW.format(m="http_reqs", t="{t}", x="1.000000", s="{s}"),
    _ROW.format(m="http_req_duration", t="{t}", x="{v}", s="{s}"),
    _ROW.format(m="http_req_blocked", t="{t}", x="0.002000", s="{s}"),
    _ROW.format(m="http_req_connecting", t="{t}", x="0.000000", s="{s}"),
    _ROW.format(m="http_req_tls_handshaking", t="{t}", x="0.000000", s="{s}"),
    _ROW.format(m="http_req_sending", t="{t}", x="0.011000", s="{s}"),
    _ROW.format(m="http_req_waiting", t="{t}", x="{w}", s="{s}"),
    _ROW.format(m="http_req_receiving", t="{t}", x="0.021000", s="{s}"),
    _ROW.format(m="http_req_failed", t="{t}", x="0.000000", s="{s}"),
    "data_sent,{t},84.000000,,,,,,,,,{s},,,,,,,\n",
    "data_received,{t},312.000000,,,,,,,,,{s},,,,,,,\n",
    "iteration_duration,{t},{v},,,,,,,,,{s},,,,,,,\n",
    "iterations,{t},1.000000,,,,,,,,,{s},,,,,,,\n",
]
_SIDECAR_Q = ("p50", "p90", "p99", "p999", "max")
_MINIMAL_ROWS = [_FULL_ROWS[1], _FULL_ROWS[8]]


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
    duration_s: int = 30
    warmup_s: int = 5
    samples_per_trial: int | None = None  # None: no k6-raw.csv.gz, analytic summaries
    k6_rows: str = "minimal"  # "minimal" or "full" (13 rows per request, like real k6)
    write_samples: bool = True  # proc-stat.jsonl and cgroup-cpu.jsonl
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
            "arms": {
                arm: {"dataplane": "ebpf" if "ebpf" in arm else "iptables", "description": arm}
                for arm in spec.arms
            },
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
            "gates": {
                "steal_mean_percent": 0.5,
                "steal_max_percent": 5.0,
                "rate_tolerance_percent": 1.0,
                "max_requeues": 2,
                "settle_cpu_busy_percent": 25.0,
                "settle_timeout_s": 30.0,
            },
            "pinning": {"k6": "0", "client_sidecar": "1", "server_sidecar": "1", "app": "1"},
            "analysis": {"equivalence_margin_percent": spec.margin_percent},
        }
    )


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _rules(flood: str) -> int:
    """iptables-save lines of a kube-proxy-shaped flood: per service a KUBE-SERVICES jump, a
    KUBE-SVC chain with a masquerade rule, per endpoint a jump plus a KUBE-SEP chain with
    MARK-MASQ and DNAT: 3 + 4·P lines. 50x500 gives the thesis' 101,806 with 306 base lines."""
    base = 306
    f = parse_flood(flood)
    return base + f.services * (3 + 4 * f.pods) if not f.off else base


def _node(busy: float, elapsed: float) -> NodeCpu:
    """Two CPUs sharing the node's busy time, tasks 97 % of it (the rest: kernel work)."""
    cpus = {}
    for name in ("cpu0", "cpu1"):
        b = busy / 2
        cpus[name] = CpuAccount(
            elapsed=elapsed, busy=b, idle=elapsed - b, iowait=0.0, steal=0.0, task=0.97 * b,
            ticks={"user": 0.6 * b, "nice": 0.0, "system": 0.3 * b, "irq": 0.0, "softirq": 0.1 * b},
        )  # fmt: skip
    return NodeCpu(task_source="/proc/schedstat", hosts={"meshlab-node": cpus})


class _Writer:
    def __init__(self, root: Path, spec: SyntheticSpec) -> None:
        self.spec = spec
        noise_seed = spec.seed if spec.noise_seed is None else spec.noise_seed
        self.rng = np.random.default_rng(noise_seed)
        self.experiment = experiment_for(spec)
        ident = f"{spec.seed}/{noise_seed}".encode()
        sha = hashlib.sha1(ident).hexdigest()[:7]  # noqa: S324 - a run id, not security
        run_id = datetime.fromtimestamp(T0, UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{sha}"
        self.run_dir = root / spec.experiment_id / run_id
        self.clock = T0
        self.ticks = {"cpu0": np.zeros(10), "cpu1": np.zeros(10)}
        self.usage = dict.fromkeys(COMPONENTS, 0)
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
        spec = self.spec
        (self.run_dir / "trials").mkdir(parents=True, exist_ok=True)
        plan = self._plan()
        for entry in list(plan):
            if spec.requeue and self._is_rejected(entry):
                plan.append(
                    entry.model_copy(update={"index": len(plan), "requeue_of": entry.index})
                )
        # run in execution order: a re-queued attempt runs at the end of its round
        order = sorted(plan, key=lambda e: (e.round, e.requeue_of is not None, e.index))
        recorded = order if spec.stop_after is None else order[: spec.stop_after]
        for entry in recorded:
            self._trial(entry, rejected=self._is_rejected(entry))
        if spec.in_progress:
            nxt = order[len(recorded)] if len(recorded) < len(order) else None
            if nxt is not None:
                tdir = self.run_dir / "trials" / self._trial_id(nxt)
                tdir.mkdir(exist_ok=True)
                atomic.write_text(tdir / "k6-summary.json", "{}")
        manifest = Manifest(
            experiment=self.experiment,
            spec_hash=self.experiment.spec_hash(),
            seed=spec.seed,
            plan=plan,
            status=spec.status,
            outcome=spec.outcome,
            started_at=_iso(T0),
            finished_at=_iso(self.clock) if spec.status == "complete" else None,
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
            pinning={
                p: self.experiment.pinning_for(p).model_dump() for p in self.experiment.placement
            },
        )
        RunDir(self.run_dir).save_manifest(manifest)
        return self.run_dir

    def _plan(self) -> list[PlanEntry]:
        spec, plan = self.spec, []
        for r in range(1, spec.rounds + 1):
            for lp, _ in spec.load_points:
                for flood in spec.floods:
                    for placement in spec.placements:
                        arms = list(spec.arms)
                        if spec.design == "rmit":
                            arms = [arms[i] for i in self.rng.permutation(len(arms))]
                        for arm in arms:
                            plan.append(
                                PlanEntry(
                                    index=len(plan),
                                    round=r,
                                    arm=arm,
                                    load_point=lp,
                                    flood=flood,
                                    placement=placement,
                                )
                            )
        return plan

    def _is_rejected(self, entry: PlanEntry) -> bool:
        return entry.requeue_of is None and (entry.round, entry.arm) in self.spec.reject

    def _trial_id(self, entry: PlanEntry) -> str:
        tid = f"{entry.index:03d}-{entry.arm}-r{entry.round:02d}"
        return tid + ("-a2" if entry.requeue_of is not None else "")

    def _trial(self, entry: PlanEntry, rejected: bool) -> None:
        spec, rng = self.spec, self.rng
        arm, rnd, lp, flood = entry.arm, entry.round, entry.load_point, str(entry.flood)
        rate = dict(spec.load_points)[lp]
        rules = _rules(flood)
        noise = self.round_noise[(rnd, lp, flood, entry.placement)]
        effects = {
            **spec.effects,
            **spec.placement_effects.get(entry.placement, {}),
            **spec.load_point_effects.get(lp, {}),
        }
        cpu_effects = {**spec.cpu_effects, **spec.load_point_cpu_effects.get(lp, {})}
        # latency: load raises it mildly; the flood term scales with rules for arms that scan them
        mu = (
            math.log(spec.base_p50_ms)
            + 0.08 * math.log(rate / 1000)
            + math.log1p(effects.get(arm, 0.0))
            + spec.flood_effect.get(arm, 0.0) * rules / 100_000
            + noise[0]
            + rng.normal(0, spec.trial_sd)
        )
        cpu_factor = math.exp(
            math.log1p(cpu_effects.get(arm, 0.0)) + noise[1] + rng.normal(0, spec.trial_sd)
        )
        if rejected:  # a noisy neighbour: everything slower, which must never reach the stats
            mu += math.log(3.0)
            cpu_factor *= 1.5
        tdir = self.run_dir / "trials" / self._trial_id(entry)
        tdir.mkdir(exist_ok=True)
        start = self.clock + 3.0
        w0 = start + spec.warmup_s
        w1 = w0 + spec.duration_s
        requests = int(rate * spec.duration_s)
        if spec.samples_per_trial:
            lat = np.exp(mu + spec.request_sigma * rng.standard_normal(spec.samples_per_trial))
            latency = summarize(lat)
            self._k6_csv(tdir / "k6-raw.csv.gz", lat, w0, w1, spec.warmup_s / spec.duration_s)
        else:
            latency = self._analytic_latency(mu)
        cpu = {}
        for comp in COMPONENTS:
            per1000 = _CPU_BASE[comp] * cpu_factor
            cpu[comp] = {
                "cpu_seconds": per1000 * requests / 1000,
                "per_1000_requests": per1000,
                "max_percent": min(100.0, per1000 * rate / 10 * 1.3),
            }
        node = sum(c["per_1000_requests"] for c in cpu.values()) + _NODE_OVERHEAD * cpu_factor
        node_max = min(100.0, node * rate / 1000 / 2 * 100 * (1.15 + abs(rng.normal(0, 0.04))))
        cpu["node_total"] = {
            "cpu_seconds": node * requests / 1000,
            "per_1000_requests": node,
            "max_percent": node_max,
        }
        steal_mean = 1.4 if rejected else float(abs(rng.normal(0.03, 0.02)))
        steal_max = 9.0 if rejected else float(min(4.0, steal_mean * 8 + abs(rng.normal(0, 0.2))))
        gates = {
            "dropped_iterations": {"value": 0, "limit": 0, "pass": True},
            "achieved_rate_error": {"value": 0.1, "limit": 1.0, "pass": True},
            "failed_requests": {"value": 0, "limit": 0, "pass": True},
            "steal_mean_percent": {"value": steal_mean, "limit": 0.5, "pass": steal_mean <= 0.5},
            "steal_max_percent": {"value": steal_max, "limit": 5.0, "pass": steal_max <= 5.0},
            "schedule_lag_p99_ms": {"value": 0.9, "limit": 2.0, "pass": True},
            "schedule_lag_max_ms": {"value": 4.0, "limit": 20.0, "pass": True},
            "components_over_node_percent": {"value": -20.0, "limit": 1.0, "pass": True},
            "cpu_accounting_percent": {"value": -1.5, "limit": 2.0, "pass": True},
        }
        reasons = []
        if rejected:
            reasons = [
                f"steal mean {steal_mean:.2f} % exceeds the 0.5 % limit",
                f"steal reached {steal_max:.1f} % in one second (limit 5 %)",
            ]
        if spec.write_samples:
            self._samples(tdir, start, w1 + 1.0, node_max, steal_mean, steal_max, cpu, rate)
        load_point = next(x for x in self.experiment.load_points if x.name == lp)
        trial = TrialRecord(
            trial_id=self._trial_id(entry),
            plan_index=entry.index,
            round=rnd,
            arm=arm,
            placement=entry.placement,
            dataplane=self.experiment.arms[arm].dataplane,
            pair=1,
            attempt=2 if entry.requeue_of is not None else 1,
            requeue_of=entry.requeue_of,
            load_point=load_point,
            flood=FloodRecord.of(entry.flood, rules),
            started_at=_iso(start),
            ended_at=_iso(w1),
            window=Window(start=w0, end=w1, requests=requests, planned_start=w0 - 0.2),
            settle=Settle(seconds=3.0, cpu_busy_percent=2.0, rules_stable=True, timed_out=False),
            status="rejected" if rejected else "valid",
            rejection_reasons=reasons,
            gates={name: Gate.model_validate(g) for name, g in gates.items()},
            summary=Summary(
                requests=requests,
                achieved_rate=requests / spec.duration_s,
                failed_requests=0,
                latency_ms=latency,
            ),
            load_generator=LoadGenerator(
                env={"GOGC": "off"},
                schedule_lag=ScheduleLag(
                    p50_ms=0.45, p99_ms=0.9, max_ms=4.0, stalls_over_5ms=0, max_gap_ms=4.2
                ),
            ),
            sidecar_latency_ms={
                side: SidecarLatency(
                    count=requests,
                    **{q: latency[q] * share for q in ("p50", "p90", "p99", "p999", "max")},
                )
                for side, share in (("client", 0.8), ("server", 0.45))
            },
            cpu={name: CpuFigure(**fig) for name, fig in cpu.items()},
            node=_node(cpu["node_total"]["cpu_seconds"], w1 - w0),
            steal=Steal(mean_percent=steal_mean, max_percent=steal_max),
            pinning=self.experiment.pinning_for(entry.placement).model_dump(),
            pods={"client": "client", "server": "server"},
        )
        (tdir / "k6-summary.json").write_text(
            json.dumps(
                {
                    "metrics": {
                        "http_reqs": {"count": requests, "rate": rate},
                        "dropped_iterations": {"count": 0},
                        "http_req_duration": {k: latency[k] for k in ("p50", "p90", "p95")},
                    }
                }
            )
        )
        TrialDir(tdir).save_record(trial)
        self.clock = w1 + 2.0

    def _analytic_latency(self, mu: float) -> dict[str, float]:
        s = self.spec.request_sigma
        out = {k: math.exp(mu + s * z) for k, z in _LAT_Z.items()}
        out["mean"] = math.exp(mu + s * s / 2)
        out["min"] = math.exp(mu - 3.7 * s)
        out["max"] = math.exp(mu + 4.5 * s)
        return out

    def _k6_csv(self, path: Path, lat: np.ndarray, w0: float, w1: float, warm_ratio: float) -> None:
        rows = _FULL_ROWS if self.spec.k6_rows == "full" else _MINIMAL_ROWS
        template = "".join(rows)
        n_warm = int(len(lat) * warm_ratio)
        warm = self.rng.choice(lat, n_warm) * 1.1 if n_warm else np.empty(0)
        t_warm = np.linspace(w0 - self.spec.warmup_s, w0, n_warm, endpoint=False)
        t_meas = np.linspace(w0, w1, len(lat), endpoint=False)
        with gzip.open(path, "wt", compresslevel=1, newline="") as fh:
            fh.write(K6_HEADER)
            for scen, ts, vals in (("warmup", t_warm, warm), ("measure", t_meas, lat)):
                us = (ts * 1e6).astype(np.int64).tolist()
                fh.write(
                    "".join(
                        template.format(s=scen, t=t, v=f"{v:.6f}", w=f"{v * 0.9:.6f}")
                        for t, v in zip(us, vals.tolist(), strict=True)
                    )
                )

    def _samples(
        self,
        tdir: Path,
        t0: float,
        t1: float,
        node_max: float,
        steal_mean: float,
        steal_max: float,
        cpu: dict,
        rate: float,
    ) -> None:
        rng = self.rng
        seconds = np.arange(t0, t1, 1.0)
        busy_frac = min(0.95, node_max / 100 / 1.15)
        steal = np.abs(rng.normal(steal_mean, steal_mean / 2 + 0.01, len(seconds)))
        steal[len(seconds) // 2] = steal_max  # the worst second
        proc, cgrp = [], []
        for i, t in enumerate(seconds):
            cpus = {}
            for name in ("cpu0", "cpu1"):
                tk = self.ticks[name]
                st = USER_HZ * steal[i] / 100
                busy = USER_HZ * busy_frac * (1 + rng.normal(0, 0.03))
                # user, nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice
                tk += [
                    busy * 0.6,
                    0,
                    busy * 0.3,
                    max(0.0, USER_HZ - busy - st),
                    0,
                    0,
                    busy * 0.1,
                    st,
                    0,
                    0,
                ]
                cpus[name] = dict(zip(_MODES, np.round(tk).astype(int).tolist(), strict=True))
            cpus["cpu"] = {m: cpus["cpu0"][m] + cpus["cpu1"][m] for m in _MODES}
            proc.append({"t": float(t), "host": "meshlab-node", "cpus": cpus})
            for comp in COMPONENTS:
                self.usage[comp] += int(cpu[comp]["per_1000_requests"] * rate * 1000)
                u = self.usage[comp]
                cgrp.append(
                    {
                        "t": float(t),
                        "host": "meshlab-node",
                        "component": comp,
                        "usage_usec": u,
                        "user_usec": u * 7 // 10,
                        "system_usec": u - u * 7 // 10,
                    }
                )
        atomic.write_jsonl(tdir / "proc-stat.jsonl", proc)
        atomic.write_jsonl(tdir / "cgroup-cpu.jsonl", cgrp)


_MODES = PROC_STAT_FIELDS  # the sampler's own field list: synthetic runs match real ones
