"""`meshlab export RUN_DIR --format smp|csv [--out DIR]`: write a run's results for other tools.

The default destination is RUN_DIR/derived/export/<format>/ (regenerable, like all of
derived/). A destination is replaced as a whole, and only if it is empty or an earlier meshlab
export (it holds our index.json): an export never deletes files it did not write.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from meshlab.analysis.loading.latencies import RAW, pool_latencies
from meshlab.analysis.loading.run import Run, load_run
from meshlab.analysis.statistics.analyse import analyse
from meshlab.core import atomic
from meshlab.errors import MeshlabError
from meshlab.export import csvs, schema, smp
from meshlab.export.extension import extension

FORMATS = ("smp", "csv")
INDEX = "index.json"
INDEX_FORMAT = "meshlab-export"


def default_out(run_dir: Path, fmt: str) -> Path:
    return Path(run_dir) / "derived" / "export" / fmt


def export(run_dir: Path | str, fmt: str, out: Path | str | None = None) -> Path:
    """Write the export; return its directory. MeshlabError for an unknown format, a directory
    that is not a run, a run without valid trials, or a destination that is not ours."""
    if fmt not in FORMATS:
        raise MeshlabError(f"unknown export format {fmt!r}: expected one of {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    if not run.valid_trials():
        raise MeshlabError(
            f"{run_dir}: no valid trials to export ({len(run.trials)} recorded, all rejected)"
        )
    # resolved: `--out .` must name a real directory, whose sibling holds the staging copy
    dest = Path(out).resolve() if out is not None else default_out(run_dir, fmt)
    _check_destination(dest)
    staging = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        index = _write_smp(run, staging) if fmt == "smp" else _write_csv(run, staging)
        atomic.write_json(staging / INDEX, index)
        _replace(dest, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def _replace(dest: Path, staging: Path) -> None:
    """Swap the staged export in. An existing destination keeps its own directory (it may be
    the shell's working directory) and only its contents are replaced: _check_destination has
    made sure they are an earlier export's."""
    if not dest.exists():
        staging.rename(dest)
        return
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    for child in staging.iterdir():
        child.rename(dest / child.name)
    staging.rmdir()


def _check_destination(dest: Path) -> None:
    if not dest.exists():
        return
    if not dest.is_dir():
        raise MeshlabError(f"{dest}: exists and is not a directory")
    if not any(dest.iterdir()):
        return
    try:
        ours = json.loads((dest / INDEX).read_text()).get("format") == INDEX_FORMAT
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise MeshlabError(
            f"{dest}: exists and is not an earlier meshlab export (no {INDEX}); "
            "choose an empty or new --out directory"
        )


def _header(run: Run, fmt: str) -> dict[str, Any]:
    return {
        "format": INDEX_FORMAT,
        "export": fmt,
        "version": 1,
        "run": {"path": str(run.path), "experiment": run.experiment_id, "run_id": run.run_id},
    }


def _write_smp(run: Run, dest: Path) -> dict[str, Any]:
    sch = schema.load()
    analysis = analyse(run)
    method = analysis.to_dict()["method"]
    pools, notes = pool_latencies(run)
    results, skipped = [], []
    for ab in smp.arm_blocks(run):
        if not ab.valid:
            skipped.append(
                {
                    "arm": ab.arm,
                    "block": ab.block_key,
                    "why": f"no valid trial ({len(ab.trials)} rejected)",
                }
            )
            continue
        rdir = dest / ab.name
        for name, doc in smp.documents(sch, run, ab).items():
            message = smp.FILES[name]
            valid = sch.validate(message, doc, str(rdir / name))
            # sorted: SMP's maps (labels) come back from protobuf in no fixed order, and an
            # export of the same run must be byte-identical
            atomic.write_text(rdir / name, json.dumps(valid, indent=2, sort_keys=True) + "\n")
        raw = [t.trial_id for t in ab.valid if t.dir.file(RAW).is_file()]
        ext = extension(sch, run, analysis, ab, pools.get((ab.arm, ab.block)), raw, method)
        atomic.write_json(rdir / smp.EXTENSION_FILE, ext)
        results.append(
            {
                "name": ab.name,
                "arm": ab.arm,
                "block": ab.block_key,
                "files": {**smp.FILES, smp.EXTENSION_FILE: "meshlab extension"},
            }
        )
    facts = sch.facts
    return {
        **_header(run, "smp"),
        "smp": {"repository": facts["repository"], "tag": facts["tag"], "commit": facts["commit"]},
        "results": results,
        "skipped": skipped,
        "notes": notes,
    }


def _write_csv(run: Run, dest: Path) -> dict[str, Any]:
    analysis = analyse(run)
    files = csvs.block_csvs(run, analysis)
    for name, text in files.items():
        atomic.write_text(dest / name, text)
    atomic.write_text(dest / csvs.COMPARISONS, csvs.comparisons_csv(analysis))
    return {**_header(run, "csv"), "blocks": sorted(files), "comparisons": csvs.COMPARISONS}
