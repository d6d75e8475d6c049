"""Judge one trial from its raw files and samples: one window, every figure over it, each
figure beside an independent one, the gates -> trial.json.

Backend-neutral: the local testbed runner and the cloud adapter hand over the same evidence.
trial.json is written last; its presence marks the trial finished (resume relies on it).

The window is the measured scenario's first to last request start, read from k6's raw CSV;
every figure covers exactly it: latencies (k6's and the sidecars'), CPU (counters interpolated
at its two instants), steal, the achieved rate and the requests CPU is divided by.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meshlab.core import cpuwindow
from meshlab.errors import MeshlabError
from meshlab.k6.results import Measured, read_measured, summarize
from meshlab.k6.schedule import schedule_lag
from meshlab.record.format import (
    HOUSEKEEPING,
    CpuAccount,
    CpuFigure,
    FloodRecord,
    HostProbe,
    LoadGenerator,
    NodeCpu,
    PathEvidence,
    Settle,
    SidecarLatency,
    Steal,
    Summary,
    Timeline,
    TrialRecord,
    Window,
)
from meshlab.record.spec import Experiment, LoadPoint
from meshlab.trial import gates as gate_rules
from meshlab.trial import path as paths
from meshlab.trial import sidecar_log
from meshlab.trial.slot import TrialSlot


@dataclass
class Evidence:
    """What was observed around one trial's k6 run, besides the k6 files in the trial dir."""

    started_at: str
    ended_at: str
    planned_start: float  # launch + warm-up: where the measured scenario was due (unix s)
    settle: dict[str, Any]  # seconds, cpu_busy_percent, rules_stable, timed_out, rules
    stat_rows: list[dict[str, Any]]  # proc-stat samples of the hosts that ran the trial
    cgroup_rows: list[dict[str, Any]]  # cgroup-cpu samples of this trial's components
    rc: int  # k6's exit status
    k6_output: str
    k6_env: dict[str, str]
    pinning: dict[str, str]
    pods: dict[str, str]  # client, server
    sidecar_logs: dict[str, np.ndarray] = field(default_factory=dict)  # sidecar_log.parse rows
    problems: list[str] = field(default_factory=list)  # reasons the backend already found
    timeline: Timeline | None = None  # where the step's time went before the window
    host_probe: HostProbe | None = None  # the host's speed around the window
    # which path the traffic took: the backend's snapshots at k6's launch and exit
    # (trial/path.py judges them), or a path the backend judged itself
    path_snapshots: tuple[dict[str, Any], dict[str, Any]] | None = None
    same_node: bool = True
    shared_counters: bool = False  # duet: the eBPF counters count the other pair too
    path: PathEvidence | None = None


def _submetric(summary: dict[str, Any], name: str, field_: str) -> float:
    metric = summary.get("metrics", {}).get(f"{name}{{scenario:measure}}", {})
    return float(metric.get(field_, 0) or 0)


def _k6_summary(slot: TrialSlot, reasons: list[str]) -> dict[str, Any]:
    try:
        return slot.dir.read_k6_summary() or {}
    except MeshlabError as err:
        reasons.append(str(err)[:200])
        return {}


def _measured(slot: TrialSlot, reasons: list[str]) -> Measured | None:
    path = slot.dir.file(slot.dir.K6_RAW)
    if not path.exists():
        return None
    try:
        return read_measured(path)
    except MeshlabError as err:
        reasons.append(str(err).replace(str(slot.dir.path) + "/", "")[:200])
        return None


def _window(ev: Evidence, lp: LoadPoint, m: Measured | None) -> Window:
    if m is not None and m.starts_s.size >= 2:
        return Window(
            start=float(m.starts_s[0]),
            end=float(m.starts_s[-1]),
            requests=int(m.starts_s.size),
            planned_start=ev.planned_start,
        )
    # No request starts to cut the window from: the planned one keeps the samples meaningful
    # (the trial is rejected: it has no measured requests).
    return Window(
        start=ev.planned_start,
        end=ev.planned_start + lp.duration_s,
        requests=0,
        planned_start=ev.planned_start,
        source="planned",
    )


def judge(exp: Experiment, lp: LoadPoint, slot: TrialSlot, ev: Evidence) -> TrialRecord:
    """Summarise the raw files, apply the gates, write trial.json (last: it marks completion)."""
    reasons: list[str] = list(ev.problems)
    summary_doc = _k6_summary(slot, reasons)
    if ev.rc != 0:
        last = [ln for ln in ev.k6_output.splitlines() if ln.strip()][-1:] or ["no output"]
        reasons.append(f"k6 exited {ev.rc}: {last[0][:200]}")
    measured = _measured(slot, reasons)
    window = _window(ev, lp, measured)
    requests = window.requests or 0
    k6_requests = int(_submetric(summary_doc, "http_reqs", "count"))
    if measured is not None and k6_requests != requests:
        reasons.append(
            f"k6's summary counts {k6_requests} measured requests, its raw CSV {requests}"
        )
    latency = summarize(measured.latency_ms) if measured is not None and requests else {}
    if not latency:
        reasons.append("no measured requests")
    # rate over the window: n starts span n - 1 intervals
    achieved = (requests - 1) / window.seconds if requests > 1 and window.seconds > 0 else 0.0
    lag = schedule_lag(measured.starts_s, lp.rate) if measured is not None else None

    cpu, accounts, task_source = cpuwindow.trial_cpu(
        ev.stat_rows, ev.cgroup_rows, window.start, window.end, requests
    )
    for host in sorted({str(r["host"]) for r in ev.stat_rows} - set(accounts)):
        reasons.append(f"no /proc/stat samples from {host} covering the measured window")
    if not ev.stat_rows:
        reasons.append("no /proc/stat samples covering the measured window")
    for name in sorted({r["component"] for r in ev.cgroup_rows} - set(cpu)):
        reasons.append(f"no cgroup CPU samples of {name} covering the measured window")
    mean, worst = cpuwindow.steal_percent(ev.stat_rows, window.start, window.end)
    steal = {"mean_percent": round(mean, 4), "max_percent": round(worst, 4)}
    node_busy = cpu.get("node_total", {}).get("cpu_seconds")
    gates, failed_gates = gate_rules.evaluate_gates(
        gates=exp.gates,
        rate=lp.rate,
        achieved=achieved,
        dropped=int(_submetric(summary_doc, "dropped_iterations", "count")),
        failed=round(_submetric(summary_doc, "http_req_failed", "passes")),
        steal=steal,
        lag=lag,
        components_over_node=gate_rules.components_over_node_percent(cpu, node_busy),
        accounting=gate_rules.accounting_percent(accounts),
        housekeeping=gate_rules.housekeeping_percent(cpu, window.seconds, HOUSEKEEPING),
        unattributed=gate_rules.unattributed_percent(cpu, node_busy, window.seconds),
    )
    reasons += failed_gates
    if ev.settle.get("timed_out"):
        # The node never settled (rules still changing, or a CPU busier than the threshold):
        # the trial would measure a kube-proxy sync or a neighbour, not the arm.
        reasons.append(
            f"settle timed out after {ev.settle.get('seconds')} s (rules stable: "
            f"{ev.settle.get('rules_stable')}, busiest CPU {ev.settle.get('cpu_busy_percent')} %, "
            f"limit {exp.gates.settle_cpu_busy_percent:g} %)"
        )
    path = ev.path
    if ev.path_snapshots is not None:
        path, wrong = paths.judge(
            exp.arms[slot.entry.arm].dataplane,
            ev.same_node,
            *ev.path_snapshots,
            sidecar_requests={name: len(rows) for name, rows in ev.sidecar_logs.items()},
            requests=requests,
            shared_counters=ev.shared_counters,
        )
        reasons += wrong
    sidecars = {}
    for name, rows in ev.sidecar_logs.items():
        figures = sidecar_log.summarize(rows, window.start, window.end)
        if figures is not None:
            sidecars[name] = SidecarLatency(**figures)

    entry = slot.entry
    record = TrialRecord(
        trial_id=slot.id,
        plan_index=entry.index,
        round=entry.round,
        arm=entry.arm,
        placement=entry.placement,
        dataplane=exp.arms[entry.arm].dataplane,
        pair=entry.pair,
        attempt=slot.attempt,
        requeue_of=entry.requeue_of,
        load_point=lp,
        flood=FloodRecord.of(entry.flood, ev.settle.get("rules"), ev.settle.get("rules_by_node")),
        started_at=ev.started_at,
        ended_at=ev.ended_at,
        window=window,
        settle=Settle(
            **{k: v for k, v in ev.settle.items() if k not in ("rules", "rules_by_node")}
        ),
        status="rejected" if reasons else "valid",
        rejection_reasons=reasons,
        gates=gates,
        summary=Summary(
            requests=requests,
            achieved_rate=round(achieved, 3),
            failed_requests=round(_submetric(summary_doc, "http_req_failed", "passes")),
            latency_ms=latency,
        ),
        load_generator=LoadGenerator(env=ev.k6_env, schedule_lag=lag),
        sidecar_latency_ms=sidecars,
        cpu={name: CpuFigure(**fig) for name, fig in cpu.items()},
        node=NodeCpu(
            task_source=task_source,
            hosts={
                host: {c: CpuAccount(**a.as_dict()) for c, a in cpus.items()}
                for host, cpus in accounts.items()
            },
        )
        if accounts
        else None,
        steal=Steal(**steal),
        pinning=ev.pinning,
        pods=ev.pods,
        timeline=ev.timeline,
        host_probe=ev.host_probe,
        path=path,
    )
    slot.dir.save_record(record)
    return record
