"""Pair valid trials per round: arm B vs the baseline, per load point and flood size.

A rejected trial never pairs. A round without a valid trial for one of the two arms is
dropped from that pair set and counted, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshlab.analysis.run import Run, Trial


@dataclass
class PairSet:
    arm: str
    baseline: str
    load_point: str
    flood: str
    rounds: list[int] = field(default_factory=list)
    a: list[Trial] = field(default_factory=list)  # baseline trial of each paired round
    b: list[Trial] = field(default_factory=list)
    dropped: list[tuple[int, str]] = field(default_factory=list)  # (round, why)
    duplicates: list[str] = field(default_factory=list)  # valid trials superseded by a later one

    @property
    def key(self) -> str:
        return f"{self.arm}/{self.baseline}@{self.load_point}/{self.flood}"

    @property
    def n(self) -> int:
        return len(self.rounds)


def build_pairs(run: Run) -> list[PairSet]:
    """One PairSet per (other arm, load point, flood), in arm / load / flood order."""
    cells: dict[tuple[str, str, str, int], list[Trial]] = {}
    seen_rounds: dict[tuple[str, str], set[int]] = {}
    for t in run.trials:
        cells.setdefault((t.arm, t.load_point, t.flood, t.round), []).append(t)
        seen_rounds.setdefault((t.load_point, t.flood), set()).add(t.round)
    for e in run.plan:
        seen_rounds.setdefault((e.load_point, str(e.flood)), set()).add(e.round)

    out = []
    for arm in run.arms[1:]:
        for lp in run.load_points():
            for flood in run.floods():
                rounds = sorted(seen_rounds.get((lp, flood), ()))
                if not rounds:
                    continue
                ps = PairSet(arm=arm, baseline=run.baseline, load_point=lp, flood=flood)
                for r in rounds:
                    a = _pick(cells.get((run.baseline, lp, flood, r), []), ps)
                    b = _pick(cells.get((arm, lp, flood, r), []), ps)
                    if a is not None and b is not None:
                        ps.rounds.append(r)
                        ps.a.append(a)
                        ps.b.append(b)
                    else:
                        ps.dropped.append((r, _why(run, cells, (run.baseline, arm), lp, flood, r)))
                out.append(ps)
    return out


def _pick(trials: list[Trial], ps: PairSet) -> Trial | None:
    """The valid trial of a cell; if (against the engine's contract) several are valid, the
    last attempt wins and the others are listed, never averaged in silently."""
    valid = sorted((t for t in trials if t.valid), key=lambda t: (t.attempt, t.started_at or 0))
    ps.duplicates.extend(t.trial_id for t in valid[:-1])
    return valid[-1] if valid else None


def _why(run: Run, cells: dict, arms: tuple[str, str], lp: str, flood: str, r: int) -> str:
    parts = []
    for arm in arms:
        trials = cells.get((arm, lp, flood, r), [])
        if any(t.valid for t in trials):
            continue
        if trials:
            parts.append(f"{arm} rejected")
        else:
            parts.append(f"{arm} not recorded")
    return ", ".join(parts)
