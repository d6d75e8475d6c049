"""Pool the per-request latencies of the valid trials, per (arm, block).

Raw k6 files dominate report time (gzip + ~13 rows per request), so they are read in a few
worker processes. A trial without a readable raw file is reported and the figures fall back to
its trial.json summary; the statistics never depend on raw files.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from meshlab.analysis.loading.run import Run
from meshlab.errors import MeshlabError
from meshlab.k6.results import read_latencies_ms
from meshlab.record.rundir import TrialDir

RAW = TrialDir.K6_RAW
_PARALLEL_FROM = 4  # below this many files a pool costs more than it saves


def _read(path: Path) -> np.ndarray | str:
    try:
        return read_latencies_ms(path).astype(np.float32)  # float32 halves IPC and memory
    except MeshlabError as err:
        return str(err)


def pool_latencies(run: Run, workers: int | None = None) -> tuple[dict, list[str]]:
    """({(arm, block): latencies}, notes). Cells where no trial has raw output are absent."""
    trials = [t for t in run.valid_trials() if t.dir.file(RAW).is_file()]
    paths = [t.dir.file(RAW) for t in trials]
    workers = workers or min(4, os.cpu_count() or 1)
    if len(paths) >= _PARALLEL_FROM and workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            arrays = list(ex.map(_read, paths, chunksize=max(1, len(paths) // (4 * workers))))
    else:
        arrays = [_read(p) for p in paths]
    parts: dict[tuple[str, str, str], list[np.ndarray]] = {}
    notes = []
    for t, arr in zip(trials, arrays, strict=True):
        if isinstance(arr, str):
            notes.append(f"raw k6 output unreadable, figures use its summary instead: {arr}")
            continue
        parts.setdefault((t.arm, t.block), []).append(arr)
    missing = len(run.valid_trials()) - len(trials)
    if missing and trials:
        notes.append(f"{missing} valid trial(s) have no {RAW}; the CDF pools the others.")
    return {k: np.concatenate(v) for k, v in parts.items()}, notes
