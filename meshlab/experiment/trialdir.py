"""A trial's place in the run: its attempt and id, a clean directory and its k6 load script.

Backend-neutral: the local testbed runner and the cloud adapter both start a trial here.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from meshlab.errors import MeshlabError
from meshlab.experiment.load import script
from meshlab.experiment.plan import attempt_of, trial_id
from meshlab.record import store
from meshlab.record.format import PlanEntry
from meshlab.record.spec import Experiment, LoadPoint


@dataclass(frozen=True)
class TrialSlot:
    """One plan entry's attempt: where it writes and what it is called."""

    entry: PlanEntry
    attempt: int
    id: str
    dir: Path


def slot_of(run_dir: Path, plan: list[PlanEntry], entry: PlanEntry) -> TrialSlot:
    attempt = attempt_of(plan, entry)
    tid = trial_id(entry, attempt)
    return TrialSlot(entry, attempt, tid, store.trial_dir(run_dir, tid))


def open_trial(run_dir: Path, plan: list[PlanEntry], entry: PlanEntry) -> TrialSlot:
    """The slot with an empty directory (an interrupted attempt's leftovers are removed)."""
    slot = slot_of(run_dir, plan, entry)
    if slot.dir.exists():
        shutil.rmtree(slot.dir)
    slot.dir.mkdir(parents=True)
    return slot


def load_point(exp: Experiment, name: str) -> LoadPoint:
    return next(lp for lp in exp.load_points if lp.name == name)


def with_path(url: str, path: str) -> str:
    """`url` with its path replaced by the load point's path (the target is the same server)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise MeshlabError(f"target URL {url!r}: expected http://HOST[:PORT][/PATH]")
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def write_load_script(slot: TrialSlot, lp: LoadPoint, url: str) -> Path:
    path = slot.dir / "load.js"
    path.write_text(script(lp, url))
    return path
