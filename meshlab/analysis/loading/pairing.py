"""Pair valid trials per round: arm B vs the baseline, per block (load point, flood size,
placement).

A rejected trial never pairs. A round without a valid trial for one of the two arms is
dropped from that pair set and counted, with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from meshlab.analysis.loading.metrics import Metric
from meshlab.analysis.loading.run import Block, Run, Trial, block_title


@dataclass
class PairSet:
    arm: str
    baseline: str
    block: Block  # (load point, flood, placement)
    rounds: list[int] = field(default_factory=list)
    a: list[Trial] = field(default_factory=list)  # baseline trial of each paired round
    b: list[Trial] = field(default_factory=list)
    dropped: list[tuple[int, str]] = field(default_factory=list)  # (round, why)
    duplicates: list[str] = field(default_factory=list)  # valid trials superseded by a later one

    @property
    def load_point(self) -> str:
        return self.block[0]

    @property
    def flood(self) -> str:
        return self.block[1]

    @property
    def placement(self) -> str:
        return self.block[2]

    @property
    def key(self) -> str:
        return f"{self.arm}/{self.baseline}@{'/'.join(self.block)}"

    @property
    def title(self) -> str:
        return f"{self.arm} vs {self.baseline} · {block_title(self.block)}"

    @property
    def n(self) -> int:
        return len(self.rounds)


def build_pairs(run: Run) -> list[PairSet]:
    """One PairSet per (other arm, block), in arm / placement / flood / load order."""
    by_round: dict[tuple[str, Block, int], list[Trial]] = {}
    seen_rounds: dict[Block, set[int]] = {}
    for t in run.trials:
        by_round.setdefault((t.arm, t.block, t.round), []).append(t)
        seen_rounds.setdefault(t.block, set()).add(t.round)
    for e in run.plan:
        seen_rounds.setdefault((e.load_point, str(e.flood), e.placement), set()).add(e.round)

    out = []
    for arm in run.arms[1:]:
        for block in run.blocks():
            rounds = sorted(seen_rounds.get(block, ()))
            if not rounds:
                continue
            ps = PairSet(arm=arm, baseline=run.baseline, block=block)
            for r in rounds:
                a = _pick(by_round.get((run.baseline, block, r), []), ps)
                b = _pick(by_round.get((arm, block, r), []), ps)
                if a is not None and b is not None:
                    ps.rounds.append(r)
                    ps.a.append(a)
                    ps.b.append(b)
                else:
                    ps.dropped.append((r, _why(by_round, (run.baseline, arm), block, r)))
            out.append(ps)
    return out


def _pick(trials: list[Trial], ps: PairSet) -> Trial | None:
    """The valid trial of a block; if (against the engine's contract) several are valid, the
    last attempt wins and the others are listed, never averaged in silently."""
    valid = sorted((t for t in trials if t.valid), key=lambda t: (t.attempt, t.started_at or 0))
    ps.duplicates.extend(t.trial_id for t in valid[:-1])
    return valid[-1] if valid else None


def _why(by_round: dict, arms: tuple[str, str], block: Block, r: int) -> str:
    parts = []
    for arm in arms:
        trials = by_round.get((arm, block, r), [])
        if any(t.valid for t in trials):
            continue
        parts.append(f"{arm} rejected" if trials else f"{arm} not recorded")
    return ", ".join(parts)


def log_ratios(ps: PairSet, metric: Metric) -> np.ndarray:
    """d_r = ln(B_r / A_r) per paired round; NaN where either value is missing or not > 0."""
    a = np.array([positive(metric.value(t)) for t in ps.a], dtype=np.float64)
    b = np.array([positive(metric.value(t)) for t in ps.b], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log(b / a)


def positive(x: float | None) -> float:
    return x if x is not None and x > 0 else math.nan
