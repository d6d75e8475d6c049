"""The run store (results/README.md): atomic writes, a manifest written before the first trial,
and bookkeeping that lets an interrupted run resume with no lost or duplicated trial."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshlab.errors import MeshlabError

SCHEMA_VERSION = 1


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory + fsync + rename: readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # results are meant to be read (and shared), not secret
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, doc: Any) -> None:
    atomic_write_bytes(path, (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode())


def atomic_write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MeshlabError(f"{path}: missing") from None
    except json.JSONDecodeError as err:
        raise MeshlabError(f"{path}: not valid JSON ({err})") from None


def manifest_path(run_dir: Path) -> Path:
    return run_dir / "manifest.json"


def load_manifest(run_dir: Path) -> dict[str, Any]:
    if not run_dir.is_dir():
        raise MeshlabError(f"{run_dir}: no such run directory")
    doc = read_json(manifest_path(run_dir))
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise MeshlabError(
            f"{manifest_path(run_dir)}: schema_version {doc.get('schema_version')!r} is not "
            f"supported (expected {SCHEMA_VERSION})"
        )
    return doc


def save_manifest(run_dir: Path, doc: dict[str, Any]) -> None:
    atomic_write_json(manifest_path(run_dir), doc)


def trial_dir(run_dir: Path, trial_id: str) -> Path:
    return run_dir / "trials" / trial_id


def completed_trials(run_dir: Path) -> dict[int, dict[str, Any]]:
    """plan index -> trial.json of every finished trial (a dir without trial.json is not)."""
    out = {}
    for path in sorted((run_dir / "trials").glob("*/trial.json")):
        doc = read_json(path)
        out[int(doc["plan_index"])] = doc
    return out


def discard_unfinished(run_dir: Path) -> list[str]:
    """Remove trial dirs an interruption left without trial.json; they will run again."""
    removed = []
    for d in sorted((run_dir / "trials").glob("*")):
        if d.is_dir() and not (d / "trial.json").exists():
            shutil.rmtree(d)
            removed.append(d.name)
    return removed
