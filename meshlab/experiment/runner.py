"""`meshlab run`: drive experiment.yml through ansible-runner with a live progress bar, then a
final table and the report."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from meshlab import ansible, paths
from meshlab.errors import MeshlabError
from meshlab.experiment import engine
from meshlab.record import spec, store

# Tasks whose stdout is a step's result (local testbed: step; cloud testbed: ingest).
STEP_RESULT_TASKS = ("Run the step's trials", "Judge the trial from the fetched files")


class _Watcher:
    """Turns ansible-runner events into progress: plan size, trial i/N, arm, round, p50, steal."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.bar = progress.add_task("planning", total=None)
        self.run_dir: Path | None = None
        self.last = ""

    def __call__(self, ev: dict[str, Any]) -> None:
        data = ev.get("event_data", {})
        task = data.get("task", "")
        if ev.get("event") == "playbook_on_task_start" and not self.run_dir:
            self.progress.update(self.bar, description=f"set-up: {task}")
        if ev.get("event") != "runner_on_ok":
            return
        stdout = (data.get("res") or {}).get("stdout", "")
        if task == "Validate the definition and write the plan":
            plan = json.loads(stdout)
            self.run_dir = Path(plan["run_dir"])
            self.progress.update(
                self.bar,
                total=plan["planned"],
                completed=plan["done"],
                description=f"run {self.run_dir.name}: testbed",
            )
        elif task == "Ask the plan for the next step":
            nxt = json.loads(stdout)
            if not nxt["done"]:
                self.progress.update(
                    self.bar,
                    total=nxt["total"],
                    description=f"trial {nxt['position']}/{nxt['total']} {nxt['label']}{self.last}",
                )
        elif task in STEP_RESULT_TASKS:
            out = json.loads(stdout)
            t = out["trials"][-1]
            p50 = f"{t['p50_ms']:.3f} ms" if t["p50_ms"] is not None else "-"
            flag = "" if t["status"] == "valid" else " REJECTED"
            self.last = (
                f"  | last: {t['arm']} p50 {p50}, steal max {t['steal_max_percent']:.1f} %{flag}"
            )
            self.progress.update(self.bar, total=out["total"], completed=out["done"])


def final_table(run_dir: Path) -> Table:
    manifest = store.load_manifest(run_dir)
    trials = store.completed_trials(run_dir).values()
    table = Table(title=f"{run_dir}  ({manifest.status})")
    for col in (
        "arm",
        "valid",
        "rejected",
        "p50 ms (median)",
        "p99 ms (median)",
        "sidecars CPU-s/1000 req",
        "steal max %",
    ):
        table.add_column(col, justify="right" if col != "arm" else "left")
    for arm in manifest.experiment.arms:
        ts = [t for t in trials if t.arm == arm]
        valid = [t for t in ts if t.valid]

        def med(values: list[float]) -> str:
            return f"{statistics.median(values):.3f}" if values else "-"

        sidecars = [
            (t.cpu["client_sidecar"].per_1000_requests or 0)
            + (t.cpu["server_sidecar"].per_1000_requests or 0)
            for t in valid
            if "client_sidecar" in t.cpu and "server_sidecar" in t.cpu
        ]
        table.add_row(
            arm,
            str(len(valid)),
            str(len(ts) - len(valid)),
            med([t.summary.latency_ms["p50"] for t in valid]),
            med([t.summary.latency_ms["p99"] for t in valid]),
            med(sidecars),
            f"{max((t.steal.max_percent for t in ts), default=0):.1f}",
        )
    return table


def run(experiment: Path, resume: Path | None, results_dir: Path, report: bool = True) -> Path:
    if resume is None:
        spec.load(experiment)  # a bad definition fails here, in one line, before any set-up
    else:
        store.load_manifest(resume)
    console = Console(stderr=True)
    extravars = {
        "experiment": str(experiment),
        "results_dir": str(results_dir),
        "resume": str(resume or ""),
    }
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        watcher = _Watcher(progress)
        try:
            ansible.run_playbook(
                "experiment.yml",
                extravars,
                inventory=str(paths.REPO / "inventory"),
                watch=watcher,
                quiet=True,
                console=console,
            )
        except KeyboardInterrupt:
            if watcher.run_dir:
                engine.finish(watcher.run_dir, interrupted=True)
                console.print(
                    f"interrupted: finished trials are kept; resume with "
                    f"meshlab run {experiment} --resume {watcher.run_dir}"
                )
            raise
    if watcher.run_dir is None:
        raise MeshlabError("experiment.yml finished without planning a run")
    console.print(final_table(watcher.run_dir))
    if report:
        try:
            from meshlab.analysis.report import build
        except ImportError:
            pass
        else:
            console.print(f"report: {build(watcher.run_dir)}")
    return watcher.run_dir
