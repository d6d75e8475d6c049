"""Reproducibility across runs: the other runs of the same experiment definition (same spec
hash) beside this one, each with its primary estimates. One run's confidence intervals describe
only its own rounds; whether a rerun agrees is read off here (and tested by meshlab compare)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meshlab.analysis.loading.run import Run, load_run
from meshlab.analysis.statistics.analyse import analyse
from meshlab.analysis.statistics.fmt import pct
from meshlab.analysis.statistics.results import PRIMARY
from meshlab.errors import MeshlabError
from meshlab.record.rundir import RunDir

MAX_SIBLINGS = 12  # the most recent complete runs beside this one


@dataclass(frozen=True)
class Sibling:
    run_id: str
    path: Path
    status: str
    this: bool
    estimates: dict[tuple[str, str], float]  # (comparison, metric label) -> change, %


def estimates(run: Run) -> dict[tuple[str, str], float]:
    out = {}
    for c in analyse(run, resamples=0).comparisons:
        title = c.pairs.title
        for r in c.results:
            if r.family == PRIMARY and r.ci95 is not None:
                out[(title, r.metric.label)] = pct(r.estimate)
    return out


def siblings(run: Run) -> list[Sibling]:
    """This run and the complete runs of the same spec hash beside it in results/<id>/."""
    found = [Sibling(run.run_id, run.path, run.status, True, estimates(run))]
    others = sorted(p for p in run.path.parent.iterdir() if p.is_dir() and p != run.path)
    for path in reversed(others):
        if len(found) > MAX_SIBLINGS:
            break
        try:
            manifest = RunDir(path).load_manifest()
            if manifest.spec_hash != run.spec_hash or manifest.status != "complete":
                continue
            other = load_run(path)
        except MeshlabError:
            continue  # not a readable run: nothing to compare with
        found.append(Sibling(other.run_id, path, other.status, False, estimates(other)))
    return sorted(found, key=lambda s: s.run_id)
