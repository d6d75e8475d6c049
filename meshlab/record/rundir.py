"""The run directory and the trial directory on disk (results/README.md): every path and every
raw file of a run, in one place.

Both testbeds, the judge, the upgrade of old runs, the analysis, the report and the synthetic
runs of the tests go through `RunDir` and `TrialDir`; no other module spells a file name of a
run. Every write is atomic (temp file + rename). A trial's `trial.json` is written last: its
presence is what marks the trial finished, and what `--resume` relies on.

    <run>/manifest.json            the definition, the seeded plan, provenance, status
    <run>/events.jsonl             what the engine said while it ran (progress, waits), append-only
    <run>/progress.log             the same as human lines (`tail -f` it under ansible-playbook)
    <run>/trials/<trial-id>/       one trial: its raw files, then trial.json
    <run>/derived/                 regenerable tables, figures, report.html, summary.md
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from meshlab.core import atomic
from meshlab.core.procstat import read_jsonl
from meshlab.errors import MeshlabError
from meshlab.record.format import Manifest, TrialRecord, dump, read_document, validate_named


class TrialDir:
    """One trial's directory. File names are class constants: the cloud's node agent receives
    them from `engine prepare` rather than spelling them itself."""

    TRIAL = "trial.json"
    LOAD_SCRIPT = "load.js"
    K6_RAW = "k6-raw.csv.gz"  # k6's own CSV output, untouched
    K6_SUMMARY = "k6-summary.json"  # k6's --summary-export, untouched
    K6_OUTPUT = "k6-output.txt"  # k6's stdout and stderr
    PROC_STAT = "proc-stat.jsonl"  # /proc/stat samples of every host (core/procstat rows)
    CGROUP_CPU = "cgroup-cpu.jsonl"  # cpu.stat samples of every component (core/procstat rows)
    SIDECAR_LOG = "envoy-{sidecar}.log.gz"  # each sidecar's access log over the step
    # cloud only: the nodes' evidence of each hop's path, and what else ran on measured CPUs
    PATH_EVIDENCE = "path-evidence.json"
    HOST_CPUS = "host-cpus.json"
    K6_FILES = (K6_RAW, K6_SUMMARY)

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"TrialDir({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrialDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def id(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    def partial(self, name: str) -> Path:
        """Where a file is written while it grows (k6 writes its outputs for minutes): a dot
        name, renamed by `publish` once complete."""
        return self.path / f".{name}"

    def publish(self, *names: str) -> None:
        for name in names:
            if self.partial(name).exists():
                self.partial(name).replace(self.file(name))

    def open_empty(self) -> TrialDir:
        """An empty directory (an interrupted attempt's leftovers are removed)."""
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        return self

    # ---- raw files ---------------------------------------------------------------------

    def write_load_script(self, text: str) -> Path:
        atomic.write_text(self.file(self.LOAD_SCRIPT), text)
        return self.file(self.LOAD_SCRIPT)

    def write_json(self, name: str, doc: Any) -> None:
        atomic.write_json(self.file(name), doc)

    def write_k6_output(self, text: str) -> None:
        atomic.write_bytes(self.file(self.K6_OUTPUT), text.encode())

    def read_k6_output(self) -> str | None:
        path = self.file(self.K6_OUTPUT)
        return path.read_text(errors="replace") if path.exists() else None

    def read_k6_summary(self) -> dict[str, Any] | None:
        """k6's summary export; None when k6 wrote none; MeshlabError when it is unreadable."""
        path = self.file(self.K6_SUMMARY)
        if not path.exists():
            return None
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise MeshlabError(f"{self.K6_SUMMARY} unreadable: {err}") from None
        return doc if isinstance(doc, dict) else {}

    def write_samples(
        self, stat_rows: Iterable[dict[str, Any]] | bytes, cgroup_rows: Iterable[dict[str, Any]]
    ) -> None:
        """proc-stat.jsonl (rows, or the sampler's own bytes) and cgroup-cpu.jsonl."""
        if isinstance(stat_rows, bytes):
            atomic.write_bytes(self.file(self.PROC_STAT), stat_rows)
        else:
            atomic.write_jsonl(self.file(self.PROC_STAT), stat_rows)
        atomic.write_jsonl(self.file(self.CGROUP_CPU), cgroup_rows)

    def read_stat_rows(self) -> list[dict[str, Any]]:
        path = self.file(self.PROC_STAT)
        return read_jsonl(path) if path.exists() else []

    def read_cgroup_rows(self) -> list[dict[str, Any]]:
        path = self.file(self.CGROUP_CPU)
        return read_jsonl(path) if path.exists() else []

    def sidecar_log(self, sidecar: str) -> Path:
        return self.file(self.SIDECAR_LOG.format(sidecar=sidecar))

    def write_sidecar_log(self, sidecar: str, text: str) -> None:
        atomic.write_bytes(self.sidecar_log(sidecar), gzip.compress(text.encode(), 6))

    def read_sidecar_log(self, sidecar: str) -> str | None:
        path = self.sidecar_log(sidecar)
        return (
            gzip.decompress(path.read_bytes()).decode(errors="replace") if path.exists() else None
        )

    # ---- the record --------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.file(self.TRIAL).exists()

    def save_record(self, record: TrialRecord) -> None:
        """trial.json, last: its presence is what marks the trial finished."""
        atomic.write_json(self.file(self.TRIAL), dump(record))

    def read_record(self) -> TrialRecord:
        path = self.file(self.TRIAL)
        doc = read_document(path)
        if doc["schema_version"] == 1:
            from meshlab.record.upgrade import trial_from_v1  # re-derives from the raw files

            raw = self.file(self.K6_RAW)
            doc = trial_from_v1(
                doc, raw if raw.exists() else None, self.read_stat_rows(), self.read_cgroup_rows()
            )
        return validate_named(TrialRecord, doc, str(path))


class RunDir:
    """One run's directory (results/<experiment>/<run-id>/)."""

    MANIFEST = "manifest.json"
    EVENTS = "events.jsonl"
    PROGRESS = "progress.log"
    TRIALS = "trials"
    DERIVED = "derived"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    @property
    def manifest_path(self) -> Path:
        return self.path / self.MANIFEST

    @property
    def derived(self) -> Path:
        return self.path / self.DERIVED

    def require(self) -> RunDir:
        """This run directory, or one MeshlabError saying what it is not."""
        if not self.path.is_dir():
            raise MeshlabError(f"{self.path}: no such run directory")
        if not self.manifest_path.exists():
            raise MeshlabError(
                f"{self.manifest_path}: missing — {self.path} is not a meshlab run directory"
            )
        return self

    def load_manifest(self) -> Manifest:
        self.require()
        return validate_named(Manifest, read_document(self.manifest_path), str(self.manifest_path))

    def save_manifest(self, manifest: Manifest) -> None:
        atomic.write_json(self.manifest_path, dump(manifest))

    # ---- trials ------------------------------------------------------------------------

    def trial(self, trial_id: str) -> TrialDir:
        return TrialDir(self.path / self.TRIALS / trial_id)

    def trial_dirs(self) -> list[TrialDir]:
        root = self.path / self.TRIALS
        if not root.is_dir():
            return []
        return [TrialDir(d) for d in sorted(root.iterdir()) if d.is_dir()]

    def finished(self) -> list[TrialDir]:
        return [t for t in self.trial_dirs() if t.finished]

    def unfinished(self) -> list[TrialDir]:
        """Trial directories without trial.json: a trial that was still running."""
        return [t for t in self.trial_dirs() if not t.finished]

    def records(self) -> Iterator[tuple[TrialDir, TrialRecord]]:
        """Every finished trial with its record, each trial.json read once."""
        for tdir in self.finished():
            yield tdir, tdir.read_record()

    def completed(self) -> dict[int, TrialRecord]:
        """plan index -> record of every finished trial."""
        return {r.plan_index: r for _, r in self.records()}

    def discard_unfinished(self) -> list[str]:
        """Remove trial dirs an interruption left without trial.json; they will run again."""
        removed = []
        for tdir in self.unfinished():
            shutil.rmtree(tdir.path)
            removed.append(tdir.id)
        return removed

    # ---- what the engine said ----------------------------------------------------------

    def append_event(self, doc: dict[str, Any], line: str | None = None) -> None:
        """One event (a JSON object) and, for people, its line. Appends are small single
        writes, so a reader (the CLI's progress) sees whole lines; a torn last line after a
        crash is skipped on reading."""
        self.path.mkdir(parents=True, exist_ok=True)
        with (self.path / self.EVENTS).open("a") as fh:
            fh.write(json.dumps(doc, separators=(",", ":")) + "\n")
        if line is not None:
            with (self.path / self.PROGRESS).open("a") as fh:
                fh.write(line + "\n")

    def events(self, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Events from byte `offset` on, and the offset after the last whole line."""
        path = self.path / self.EVENTS
        if not path.exists():
            return [], offset
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        out = []
        for raw in data[:end].splitlines():
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue  # a torn line from a crash
        return out, offset + end
