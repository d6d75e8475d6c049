"""A cloud trial's node snapshots, fetched into its raw directory, judged in one call.

trial_cluster.yml fetches every node's `<host>.node-window.json` ({"start": snapshot, "end":
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

from meshlab.testbeds.cloud import arm_check, host_cpus

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
