"""Every mesh arm against the no-mesh floor, and how much of the mesh's cost each eBPF arm
recovers (issue 21): the question behind "reduce resource usage", asked the way istio.io's
performance pages and istio/tools' ambient tests ask it.

- cost: the paired change of a mesh arm over no-mesh, per round ln(arm / no-mesh), with the
  exact Hodges-Lehmann interval (stats.py), as for any comparison;
- recovered: for an eBPF arm E and the iptables arm I, on the rounds where no-mesh, I and E are
  all valid, 1 - θ_E / θ_I with θ the HL estimate of each arm's log cost over no-mesh: 0 when
  E costs what iptables costs, 1 when it costs nothing over no mesh at all. Its 95 % interval
  is a paired bootstrap of the rounds (both costs resampled together), since a ratio of two
  shifts has no exact signed-rank interval.

The floor has no mTLS, no policy and no sidecar on the path (its sidecars idle), so its CPU per
request is the workload's alone: the report says so wherever it shows it.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from meshlab.analysis.loading.metrics import BY_KEY, Metric
from meshlab.analysis.loading.run import Block, Run, Trial
from meshlab.analysis.statistics import stats
from meshlab.core.arms import NO_MESH, needs_ebpf

FLOOR_METRICS = ("latency_p50", "cpu_node_total")  # sidecar CPU over no-mesh: idle sidecars
RESAMPLES = 4000


@dataclass(frozen=True)
class Cost:
    arm: str
    block: Block
    metric: Metric
    n: int
    estimate: float  # log units
    ci: tuple[float, float] | None  # exact 95 % (achieved confidence in `confidence`)
    confidence: float | None


@dataclass(frozen=True)
class Recovered:
    arm: str  # the eBPF arm
    via: str  # the iptables arm whose cost it is measured against
    block: Block
    metric: Metric
    n: int
    share: float  # 1 - cost(arm) / cost(via), log costs
    ci: tuple[float, float] | None  # paired bootstrap 95 %


def _arm(run: Run, dataplane: str) -> list[str]:
    exp = run.manifest.experiment
    return [a for a in run.arms if exp.arms[a].dataplane == dataplane]


def _valid_by_round(run: Run, arm: str, block: Block) -> dict[int, Trial]:
    out: dict[int, Trial] = {}
    for t in sorted(run.valid_trials(), key=lambda t: t.attempt):
        if t.arm == arm and t.block == block:
            out[t.round] = t  # the last valid attempt, as pairing takes it
    return out


def _log_cost(m: Metric, arm: dict[int, Trial], floor: dict[int, Trial], rounds: list[int]):
    values = []
    for r in rounds:
        a, f = m.value(arm[r]), m.value(floor[r])
        values.append(math.log(a / f) if a and f and a > 0 and f > 0 else math.nan)
    return np.array(values)


def floor(run: Run) -> tuple[list[Cost], list[Recovered]]:
    """Costs of every mesh arm over no-mesh and the recovered shares; empty without no-mesh."""
    floors = _arm(run, NO_MESH)
    if not floors:
        return [], []
    f_arm = floors[0]
    exp = run.manifest.experiment
    mesh = [a for a in run.arms if exp.arms[a].dataplane != NO_MESH]
    iptables = _arm(run, "iptables")
    costs: list[Cost] = []
    recovered: list[Recovered] = []
    for block in run.blocks():
        base = _valid_by_round(run, f_arm, block)
        by_arm = {a: _valid_by_round(run, a, block) for a in mesh}
        for key in FLOOR_METRICS:
            m = BY_KEY[key]
            for arm in mesh:
                rounds = sorted(set(base) & set(by_arm[arm]))
                d = _log_cost(m, by_arm[arm], base, rounds)
                d = d[np.isfinite(d)][None, :]
                st = stats.paired_stats(d, math.log1p(run.margin_percent / 100))
                has = st.n >= stats.MIN_ROUNDS and bool(np.isfinite(st.ci95).all())
                costs.append(
                    Cost(arm, block, m, st.n, float(st.estimate[0]) if st.n else math.nan,
                         (float(st.ci95[0, 0]), float(st.ci95[0, 1])) if has else None,
                         st.confidence95 if has else None)
                )  # fmt: skip
            for via in iptables:
                for arm in (a for a in mesh if needs_ebpf(exp.arms[a].dataplane)):
                    recovered.append(_recovered(run, m, block, arm, via, base, by_arm))
    return costs, recovered


def _recovered(
    run: Run, m: Metric, block: Block, arm: str, via: str, base: dict, by_arm: dict
) -> Recovered:
    rounds = sorted(set(base) & set(by_arm[arm]) & set(by_arm[via]))
    d = np.vstack(
        [_log_cost(m, by_arm[via], base, rounds), _log_cost(m, by_arm[arm], base, rounds)]
    )
    d = d[:, np.isfinite(d).all(axis=0)]
    n = d.shape[1]
    if n == 0:
        return Recovered(arm, via, block, m, 0, math.nan, None)
    hl = stats.hodges_lehmann(d)
    share = float(1 - hl[1] / hl[0]) if hl[0] else math.nan
    ci = None
    if n >= stats.MIN_ROUNDS and hl[0]:
        rng = np.random.default_rng([run.seed % 2**32, zlib.crc32(f"{arm}/{via}/{m.key}".encode())])
        boot = stats.bootstrap_hl(d, rng, RESAMPLES)
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = 1 - boot[1] / boot[0]
        shares = shares[np.isfinite(shares)]
        if shares.size:
            ci = tuple(float(v) for v in np.quantile(shares, [0.025, 0.975]))
    return Recovered(arm, via, block, m, n, share, ci)  # type: ignore[arg-type]
