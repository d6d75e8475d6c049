"""Judge one trial from its raw files and samples: summary, CPU, steal, gates -> trial.json.

Backend-neutral: the local testbed runner and the cloud adapter hand over the same evidence.
trial.json is written last; its presence marks the trial finished (resume relies on it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from meshlab.errors import MeshlabError
from meshlab.experiment import measure
from meshlab.experiment.trialdir import TrialSlot
from meshlab.k6.results import read_latencies_ms, summarize
from meshlab.record import store
from meshlab.record.format import (
    CpuFigure,
    FloodRecord,
    Settle,
    Steal,
    Summary,
    TrialRecord,
    Window,
)
from meshlab.record.spec import Experiment, LoadPoint


@dataclass
class Evidence:
    """What was observed around one trial's k6 run, besides the k6 files in the trial dir."""

    started_at: str
    ended_at: str
    window: dict[str, float]  # measured window, unix seconds
    settle: dict[str, Any]  # seconds, cpu_busy_percent, rules_stable, timed_out, rules
    stat_rows: list[dict[str, Any]]  # proc-stat samples of the hosts that count for steal
    cgroup_rows: list[dict[str, Any]]  # cgroup-cpu samples of this trial's components
    rc: int  # k6's exit status
    k6_output: str
    pinning: dict[str, str]
    pods: dict[str, str]  # client, server
    problems: list[str] = field(default_factory=list)  # reasons the backend already found


def _submetric(summary: dict[str, Any], name: str, field_: str) -> float:
    metric = summary.get("metrics", {}).get(f"{name}{{scenario:measure}}", {})
    return float(metric.get(field_, 0) or 0)


def _k6_summary(slot: TrialSlot, reasons: list[str]) -> dict[str, Any]:
    path = slot.dir / "k6-summary.json"
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        reasons.append(f"k6-summary.json unreadable: {err}"[:200])
        return {}
    return doc if isinstance(doc, dict) else {}


def _latency(slot: TrialSlot, reasons: list[str]) -> dict[str, float]:
    path = slot.dir / "k6-raw.csv.gz"
    if not path.exists():
        return {}
    try:
        lat = read_latencies_ms(path)
    except MeshlabError as err:
        reasons.append(str(err).replace(str(slot.dir) + "/", "")[:200])
        return {}
    return summarize(lat) if lat.size else {}


def judge(exp: Experiment, lp: LoadPoint, slot: TrialSlot, ev: Evidence) -> TrialRecord:
    """Summarise the raw files, apply the gates, write trial.json (last: it marks completion)."""
    window = ev.window
    reasons: list[str] = list(ev.problems)
    summary_doc = _k6_summary(slot, reasons)
    if ev.rc != 0:
        last = [ln for ln in ev.k6_output.splitlines() if ln.strip()][-1:] or ["no output"]
        reasons.append(f"k6 exited {ev.rc}: {last[0][:200]}")
    requests = int(_submetric(summary_doc, "http_reqs", "count"))
    dropped = int(_submetric(summary_doc, "dropped_iterations", "count"))
    failed = round(_submetric(summary_doc, "http_req_failed", "passes"))
    achieved = requests / lp.duration_s
    latency = _latency(slot, reasons)
    if not latency:
        reasons.append("no measured requests")
    cpu = measure.component_cpu(ev.cgroup_rows, window["start"], window["end"], requests)
    node, steal = measure.node_cpu_and_steal(ev.stat_rows, window["start"], window["end"], requests)
    cpu.update(node)
    gates, failed_gates = measure.evaluate_gates(
        rate=lp.rate,
        achieved=achieved,
        dropped=dropped,
        failed=failed,
        steal=steal,
        gates=exp.gates,
    )
    reasons += failed_gates
    entry = slot.entry
    record = TrialRecord(
        trial_id=slot.id,
        plan_index=entry.index,
        round=entry.round,
        arm=entry.arm,
        dataplane=exp.arms[entry.arm].dataplane,
        pair=entry.pair,
        attempt=slot.attempt,
        requeue_of=entry.requeue_of,
        load_point=lp,
        flood=FloodRecord.of(entry.flood, ev.settle.get("rules")),
        started_at=ev.started_at,
        ended_at=ev.ended_at,
        window=Window(**window),
        settle=Settle(**{k: v for k, v in ev.settle.items() if k != "rules"}),
        status="rejected" if reasons else "valid",
        rejection_reasons=reasons,
        gates=gates,
        summary=Summary(
            requests=requests,
            achieved_rate=round(achieved, 3),
            failed_requests=failed,
            latency_ms=latency,
        ),
        cpu={name: CpuFigure(**fig) for name, fig in cpu.items()},
        steal=Steal(**steal),
        pinning=ev.pinning,
        pods=ev.pods,
    )
    store.save_trial(slot.dir, record)
    return record
