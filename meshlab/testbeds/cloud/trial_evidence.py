"""A cloud trial's node snapshots, fetched into its raw directory, judged in one call.

trial_cloud.yml fetches every node's `<host>.node-window.json` ({"start": snapshot, "end":
snapshot}, written by the trial agent's `sample`) into RAW; meshlab.testbeds.cloud.trial.ingest
calls `collect()` and appends the reasons to the trial's problems (the judge rejects and
re-queues such a trial like any other), then writes the two records beside trial.json:

    path-evidence.json   meshlab.testbeds.cloud.arm_check: which carrier each hop took, per trial
    host-cpus.json       meshlab.testbeds.cloud.host_cpus: what else ran on the exclusive CPUs
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from meshlab.record.format import Hop, PathEvidence
from meshlab.testbeds.cloud import arm_check, host_cpus
from meshlab.testbeds.cloud.arm_check import CARRIERS

WINDOW_SUFFIX = ".node-window.json"


def read_windows(raw: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    windows, problems = {}, []
    for path in sorted(raw.glob(f"*{WINDOW_SUFFIX}")):
        host = path.name.removesuffix(WINDOW_SUFFIX)
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            problems.append(f"arm check: {path.name} unreadable ({err})"[:200])
            continue
        if isinstance(doc, dict):
            windows[host] = doc
    return windows, problems


def collect(
    raw: Path, dataplane: str, window: tuple[float, float] | None
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(path evidence, host CPU record, rejection reasons) for the trial whose files are in RAW."""
    windows, reasons = read_windows(raw)
    evidence, arm_reasons = arm_check.judge(windows, dataplane, window)
    cpus, cpu_reasons = host_cpus.judge(windows)
    return evidence, cpus, reasons + arm_reasons + cpu_reasons


def as_path(evidence: dict[str, Any]) -> PathEvidence | None:
    """The cloud's path evidence in trial.json's `path` form (the same model the local
    testbed records): per hop its carrier, what the arm expects and the connections counted;
    per node whether Merbridge's programs were attached at the trial's start and end."""
    hops = evidence.get("hops") or {}
    if not hops:
        return None
    counters: dict[str, int] = {}
    out = {}
    for name, hop in hops.items():
        deltas = [c.get("delta") for c in hop.get("counters", [])]
        for c in hop.get("counters", []):
            if c.get("delta") is not None:
                counters[f"{name} {c['source']}"] = int(c["delta"])
        out[name] = Hop(
            carrier=hop["carrier"] if hop["carrier"] in CARRIERS else "unknown",
            expected=hop.get("expected", "unknown"),
            connections=next((int(x) for x in deltas if x is not None), None),
        )

    def mode(edge: str) -> dict[str, str]:
        programs = evidence.get("merbridge_programs") or {}
        return {
            host: "unknown" if by_edge.get(edge) is None else ("ebpf" if by_edge[edge] else "off")
            for host, by_edge in sorted(programs.items())
        }

    return PathEvidence(
        hops=out, programs_start=mode("start"), programs_end=mode("end"), counters=counters
    )
