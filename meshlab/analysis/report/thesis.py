"""'Against the thesis': its published spreads beside this run's (thesis_facts.yml cites them)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import yaml

from meshlab.analysis.loading.run import Run, block_title
from meshlab.analysis.statistics import stats

# thesis arm names -> how the report names them (the dataplane each corresponds to here)
_THESIS_ARMS = {"calico_iptables": "Calico (iptables)", "merbridge": "Merbridge (eBPF)"}


@dataclass(frozen=True)
class SpreadRow:
    who: str  # "thesis" or "this run"
    arm: str
    where: str  # load point / flood, or the thesis' own description
    p5_min: float | None
    p95_max: float | None
    p50_cov: float | None  # run-to-run CoV of per-trial p50, percent
    cpu_max_range: tuple[float, float] | None
    trials: int | None

    @property
    def latency_factor(self) -> float | None:
        if self.p5_min and self.p95_max:
            return self.p95_max / self.p5_min
        return None

    @property
    def cpu_relative_spread(self) -> float | None:
        if self.cpu_max_range and self.cpu_max_range[0] > 0:
            lo, hi = self.cpu_max_range
            return 100 * (hi - lo) / lo
        return None


def facts() -> dict[str, Any]:
    text = (
        resources.files("meshlab.analysis.report").joinpath("thesis_facts.yml").read_text("utf-8")
    )
    return yaml.safe_load(text)


def spreads(run: Run) -> list[SpreadRow]:
    f = facts()
    res = f["results"]
    rows = []
    cpu = res.get("max_cpu_percent_range_merbridge")
    placement = f["stack"].get("placement", "placement not stated")
    for name, (lo, hi) in res["latency_p5_p95_ms"].items():
        rows.append(
            SpreadRow(
                who="thesis",
                arm=_THESIS_ARMS.get(name, name),
                where=f"all published runs · {placement}",
                p5_min=float(lo),
                p95_max=float(hi),
                p50_cov=None,
                cpu_max_range=(float(cpu[0]), float(cpu[1]))
                if cpu and name == "merbridge"
                else None,
                trials=None,
            )
        )
    for arm in run.arms:
        for block in run.blocks():
            ts = [t for t in run.valid_trials() if t.arm == arm and t.block == block]
            if ts:
                cpu_max = [v for t in ts if (v := t.cpu_value("node_total", "max_percent"))]
                cov = stats.cov_percent(np.array([t.latency["p50"] for t in ts]))
                rows.append(
                    SpreadRow(
                        who="this run",
                        arm=arm,
                        where=block_title(block),
                        p5_min=min(t.latency["p5"] for t in ts),
                        p95_max=max(t.latency["p95"] for t in ts),
                        p50_cov=None if math.isnan(cov) else cov,
                        cpu_max_range=(min(cpu_max), max(cpu_max)) if cpu_max else None,
                        trials=len(ts),
                    )
                )
    return rows
