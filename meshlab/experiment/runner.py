"""`meshlab run`: drive experiment.yml through ansible-runner, showing progress, then a final
table; the playbook's last play builds the report (`ansible-playbook experiment.yml` ends the
same way). On a terminal the progress is a live bar; otherwise (CI, `make lab > lab.log`,
nohup) one line per finished trial, so a log is never silent for minutes."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from meshlab import ansible, paths
from meshlab.errors import MeshlabError
from meshlab.experiment import engine
from meshlab.record import spec, store
from meshlab.testbed import lease

PLAN_TASK = "Validate the definition and write the plan"
NEXT_TASK = "Ask the plan for the next step"
# Tasks whose stdout is a step's result (local testbed: step; cloud testbed: ingest).
STEP_RESULT_TASKS = ("Run the step's trials", "Judge the trial from the fetched files")
REPORT_TASK = "Build the report"


def of_total(total: int, reruns: int) -> str:
    """'16', or '17 (1 re-run)' once a rejected trial has been queued again."""
    return f"{total}" + (f" ({reruns} re-run{'s' if reruns > 1 else ''})" if reruns else "")


def trial_line(
    position: int, total: int, t: dict[str, Any], so_far: list[str], reruns: int = 0
) -> str:
    """One finished trial: 'trial 3/16 ebpf r02: p50 0.612 ms, steal max 0.0 %, valid | ...'."""
    p50 = f"{t['p50_ms']:.3f} ms" if t["p50_ms"] is not None else "-"
    verdict = t["status"] if t["status"] == "valid" else f"REJECTED ({'; '.join(t['reasons'])})"
    block = f" [{t['block']}]" if t.get("block") else ""
    line = (
        f"trial {position}/{of_total(total, reruns)} {t['arm']} r{t['round']:02d}{block}: "
        f"p50 {p50}, steal max {t['steal_max_percent']:.1f} %, {verdict}"
    )
    return line + (f" | so far: {'; '.join(so_far)}" if so_far else "")


class _Watcher:
    """Turns ansible-runner events into progress: plan size, trial i/N, arm, round, p50, steal,
    and the primary estimates so far. `say` prints a line (non-terminal output); `bar` updates
    a live bar (terminal)."""

    def __init__(self, say: Callable[[str], None], bar: Callable[..., None]) -> None:
        self.say, self.bar = say, bar
        self.run_dir: Path | None = None
        self.report: str | None = None
        self.last = ""
        self.play = ""
        self.pending_play = ""

    def __call__(self, ev: dict[str, Any]) -> None:
        data = ev.get("event_data", {})
        task = data.get("task", "")
        if ev.get("event") == "playbook_on_play_start":
            self.pending_play = data.get("play", "")
        if ev.get("event") == "playbook_on_task_start":
            # A play is announced by its first task: plays for hosts this run does not have
            # (the cluster plays on the local testbed) start no task and stay silent.
            if self.pending_play and self.pending_play != self.play:
                self.play = self.pending_play
                self.say(f"[{time.strftime('%H:%M:%S')}] {self.play}")
            self.pending_play = ""
            if not self.run_dir:
                self.bar(description=f"set-up: {task}")
        if ev.get("event") != "runner_on_ok":
            return
        stdout = (data.get("res") or {}).get("stdout", "")
        if task == PLAN_TASK:
            plan = json.loads(stdout)
            self.run_dir = Path(plan["run_dir"])
            self.say(f"run {self.run_dir}: {plan['planned']} trials planned, {plan['done']} done")
            self.bar(total=plan["planned"], completed=plan["done"], description="testbed")
        elif task == NEXT_TASK:
            nxt = json.loads(stdout)
            if not nxt["done"]:
                stop = nxt.get("stop")
                width = ""
                if stop and stop["half_width_percent"] is not None:
                    left = stop["rounds_left"]
                    width = (
                        f" | CI ±{stop['half_width_percent']:.2f} % (target "
                        f"±{stop['target_percent']:g} %, ~{left if left is not None else '?'} "
                        "rounds left)"
                    )
                self.bar(
                    total=nxt["total"],
                    description=f"trial {nxt['position']}/"
                    f"{of_total(nxt['total'], nxt.get('reruns', 0))} {nxt['label']}"
                    f"{self.last}{width}",
                )
            elif nxt.get("stopped_early"):
                self.say(f"stopping rule met for {', '.join(nxt['stopped_early'])}: run complete")
        elif task in STEP_RESULT_TASKS:
            out = json.loads(stdout)
            for i, t in enumerate(out["trials"]):
                position = out["done"] - len(out["trials"]) + i + 1
                self.say(
                    trial_line(
                        position, out["total"], t, out.get("so_far", []), out.get("reruns", 0)
                    )
                )
            t = out["trials"][-1]
            p50 = f"{t['p50_ms']:.3f} ms" if t["p50_ms"] is not None else "-"
            flag = "" if t["status"] == "valid" else " REJECTED"
            self.last = f"  | last: {t['arm']} p50 {p50}{flag}"
            self.bar(total=out["total"], completed=out["done"])
        elif task == REPORT_TASK:
            self.report = stdout.strip().removeprefix("report: ")


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


def _one_run(
    experiment: Path, resume: Path | None, results_dir: Path, report: bool, console: Console
) -> Path:
    extravars = {
        "experiment": str(experiment),
        "results_dir": str(results_dir),
        "resume": str(resume or ""),
        "meshlab_report": report,
    }
    live = console.is_terminal
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False, disable=not live) as progress:
        task = progress.add_task("planning", total=None)

        def say(line: str) -> None:
            if not live:
                print(line, flush=True)

        def bar(**kwargs: Any) -> None:
            progress.update(task, **kwargs)

        watcher = _Watcher(say, bar)
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
    if watcher.report:
        console.print(f"report: {watcher.report}")
    return watcher.run_dir


def run(
    experiment: Path,
    resume: Path | None,
    results_dir: Path,
    report: bool = True,
    repeat: int = 1,
) -> list[Path]:
    """Run the experiment `repeat` times (independent runs, each its own directory), or
    resume one; with more than one run, say how far their primary estimates spread."""
    if resume is None:
        spec.load(experiment)  # a bad definition fails here, in one line, before any set-up
    else:
        store.load_manifest(resume)
        if repeat > 1:
            raise MeshlabError("--repeat: a resumed run is one run; repeat a new one instead")
    if repeat < 1:
        raise MeshlabError(f"--repeat: {repeat} is not a number of runs (1 or more)")
    console = Console(stderr=True)
    runs = []
    # One run at a time on the testbed: refused here, in one line, when another holds it.
    with lease.holding(f"meshlab run {resume or experiment}"):
        for k in range(repeat):
            if repeat > 1:
                console.print(f"run {k + 1} of {repeat}")
            runs.append(_one_run(experiment, resume, results_dir, report, console))
    if repeat > 1:
        console.print(between_runs(runs))
    return runs


def between_runs(runs: list[Path]) -> str:
    """'reproduced within ± x pp over K runs' per comparison and primary metric."""
    from meshlab.analysis.reproduce import estimates
    from meshlab.analysis.run import load_run

    per_key: dict[tuple[str, str], list[float]] = {}
    for run_dir in runs:
        for key, value in estimates(load_run(run_dir)).items():
            per_key.setdefault(key, []).append(value)
    lines = [f"between {len(runs)} runs:"]
    for (comparison, metric), values in sorted(per_key.items()):
        half = (max(values) - min(values)) / 2
        lines.append(
            f"  {comparison}, {metric}: {statistics.median(values):+.2f} % median, reproduced "
            f"within ±{half:.2f} pp over {len(values)} runs"
        )
    return "\n".join(lines)
