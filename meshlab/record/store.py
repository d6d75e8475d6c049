"""The run directory on disk (results/README.md): where its files live, the manifest written
before the first trial, and the bookkeeping that lets an interrupted run resume with no lost
or duplicated trial. Every write is atomic; trial.json is written last and marks a trial done."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from meshlab.core import atomic
from meshlab.errors import MeshlabError
from meshlab.record.format import MANIFEST, TRIAL, Manifest, TrialRecord, dump, read_manifest
from meshlab.record.format import read_trial as _read_trial


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_of(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def manifest_path(run_dir: Path) -> Path:
    return run_dir / MANIFEST


def load_manifest(run_dir: Path) -> Manifest:
    if not run_dir.is_dir():
        raise MeshlabError(f"{run_dir}: no such run directory")
    path = manifest_path(run_dir)
    if not path.exists():
        raise MeshlabError(f"{path}: missing — {run_dir} is not a meshlab run directory")
    return read_manifest(path)


def save_manifest(run_dir: Path, manifest: Manifest) -> None:
    atomic.write_json(manifest_path(run_dir), dump(manifest))


def trial_dir(run_dir: Path, trial_id: str) -> Path:
    return run_dir / "trials" / trial_id


def save_trial(tdir: Path, record: TrialRecord) -> None:
    """trial.json, last: its presence is what marks the trial finished."""
    atomic.write_json(tdir / TRIAL, dump(record))


def read_trial(tdir: Path) -> TrialRecord:
    return _read_trial(tdir / TRIAL)


def finished_dirs(run_dir: Path) -> list[Path]:
    return sorted(p.parent for p in (run_dir / "trials").glob(f"*/{TRIAL}"))


def unfinished_dirs(run_dir: Path) -> list[Path]:
    """Trial directories without trial.json: a trial that was still running."""
    trials = run_dir / "trials"
    if not trials.is_dir():
        return []
    return sorted(d for d in trials.iterdir() if d.is_dir() and not (d / TRIAL).exists())


def completed_trials(run_dir: Path) -> dict[int, TrialRecord]:
    """plan index -> record of every finished trial (a dir without trial.json is not)."""
    return {t.plan_index: t for t in (read_trial(d) for d in finished_dirs(run_dir))}


def discard_unfinished(run_dir: Path) -> list[str]:
    """Remove trial dirs an interruption left without trial.json; they will run again."""
    removed = []
    for d in unfinished_dirs(run_dir):
        shutil.rmtree(d)
        removed.append(d.name)
    return removed
