"""`meshlab run`: drive experiment.yml through ansible-runner, showing progress, then a final
table; the playbook's last play builds the report (`ansible-playbook experiment.yml` ends the
same way). On a terminal the progress is a live bar; otherwise (CI, `make lab > lab.log`,
nohup) one line per finished trial, so a log is never silent for minutes."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from meshlab import ansible, paths
from meshlab.errors import MeshlabError
from meshlab.experiment import engine, progress, protocol
from meshlab.record import spec
from meshlab.record.rundir import RunDir
from meshlab.testbeds.local import lease

# `meshlab run`'s exit codes, for scripts (docs/methodology.md, "The answer"): 0 when every
# primary question of every comparison was decided (a difference or an equivalence), 3 when
# the run completed without deciding all of them, 4 when it ended environment-unfit. Errors
# exit 2 (one line on stderr) and Ctrl-C 130, as every meshlab command does.
EXIT_DECIDED, EXIT_INCONCLUSIVE, EXIT_UNFIT = 0, 3, 4
FOLLOW_S = 0.5  # how often the run's events.jsonl is read for progress


class _Watcher:
    """Turns the playbook's events and the engine's messages into progress. Engine messages
    are recognised by their kind (experiment/protocol.py), in whatever task printed them;
    while the trials run, they come from the run's events.jsonl as the engine appends them.
    `say` prints a line (non-terminal output); `bar` updates a live bar (terminal)."""

    def __init__(self, say: Callable[[str], None], bar: Callable[..., None]) -> None:
        self.say, self.bar = say, bar
        self.run: RunDir | None = None
        self.closed: protocol.RunClosed | None = None
        self.last = ""
        self.play = ""
        self.pending_play = ""
        self._offset = 0
        self._lock = threading.Lock()

    @property
    def run_dir(self) -> Path | None:
        return self.run.path if self.run else None

    def __call__(self, ev: dict[str, Any]) -> None:
        data = ev.get("event_data", {})
        if ev.get("event") == "playbook_on_play_start":
            self.pending_play = data.get("play", "")
        if ev.get("event") == "playbook_on_task_start":
            # A play is announced by its first task: plays for hosts this run does not have
            # (the cluster plays on the local testbed) start no task and stay silent.
            if self.pending_play and self.pending_play != self.play:
                self.play = self.pending_play
                self.say(f"[{time.strftime('%H:%M:%S')}] {self.play}")
            self.pending_play = ""
            if not self.run:
                self.bar(description=f"set-up: {data.get('task', '')}")
        if ev.get("event") != "runner_on_ok":
            return
        msg = protocol.parse((data.get("res") or {}).get("stdout", ""))
        if isinstance(msg, protocol.Planned):
            self.run = RunDir(msg.run_dir)
            self._offset = self._events_size()  # a resumed run's earlier events are history
            self.say(progress.line(msg))
            self.bar(total=msg.planned, completed=msg.done, description="testbed")
        elif isinstance(msg, protocol.RunClosed):
            self.follow()
            self.closed = msg
        else:
            self.follow()

    def _events_size(self) -> int:
        path = self.run.path / RunDir.EVENTS if self.run else None
        return path.stat().st_size if path and path.exists() else 0

    def follow(self) -> None:
        """Show what the engine said since last time (called by a timer and per event)."""
        if self.run is None:
            return
        with self._lock:
            events, self._offset = self.run.events(self._offset)
        for doc in events:
            self.on_message(protocol.parse_doc(doc))

    def on_message(self, msg: Any) -> None:
        if isinstance(msg, protocol.NextStep):
            if msg.done:
                if msg.stopped_early:
                    self.say(progress.line(msg))
                return
            width = ""
            if msg.stop is not None:
                left = msg.stop.rounds_left
                width = (
                    f" | CI ±{msg.stop.half_width_percent:.2f} % (target "
                    f"±{msg.stop.target_percent:g} %, ~{left if left is not None else '?'} "
                    "rounds left)"
                )
            self.bar(
                total=msg.total,
                description=f"trial {msg.position}/{progress.of_total(msg.total, msg.reruns)} "
                f"{msg.label}{self.last}{width}",
            )
        elif isinstance(msg, protocol.StepResult):
            self.say(progress.line(msg))
            t = msg.trials[-1]
            p50 = f"{t.p50_ms:.3f} ms" if t.p50_ms is not None else "-"
            flag = "" if t.status == "valid" else " REJECTED"
            self.last = f"  | last: {t.arm} p50 {p50}{flag}{progress.share(msg)}"
            self.bar(total=msg.total, completed=msg.done)
        elif isinstance(msg, protocol.Waiting | protocol.SegmentEnd):
            self.say(progress.line(msg))
            if isinstance(msg, protocol.Waiting):
                self.bar(description=progress.line(msg).split("] ", 1)[1])


def final_table(run_dir: Path) -> Table:
    run = RunDir(run_dir)
    manifest = run.load_manifest()
    trials = [r for _, r in run.records()]
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


class _Follower(threading.Thread):
    """Reads the run's events.jsonl while the playbook runs (the local testbed's trials run
    in one long task, whose own output comes only at its end)."""

    def __init__(self, watcher: _Watcher) -> None:
        super().__init__(name="follow", daemon=True)
        self.watcher = watcher
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(FOLLOW_S):
            self.watcher.follow()

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.watcher.follow()


def _one_run(
    experiment: Path, resume: Path | None, results_dir: Path, report: bool, console: Console
) -> protocol.RunClosed:
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
    with Progress(*columns, console=console, transient=False, disable=not live) as bar_display:
        task = bar_display.add_task("planning", total=None)

        def say(line: str) -> None:
            if not live:
                print(line, flush=True)

        def bar(**kwargs: Any) -> None:
            bar_display.update(task, **kwargs)

        watcher = _Watcher(say, bar)
        follower = _Follower(watcher)
        follower.start()
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
        finally:
            follower.stop()
    if watcher.run_dir is None or watcher.closed is None:
        raise MeshlabError("experiment.yml finished without planning and closing a run")
    console.print(final_table(watcher.run_dir))
    page = watcher.run_dir / RunDir.DERIVED / "report.html"
    if report and page.exists():
        console.print(f"report: {page}")
    # The answer, last and whole, whether or not a terminal showed the progress.
    print(f"{watcher.closed.status}: {watcher.closed.answer}", flush=True)
    return watcher.closed


def exit_code(closed: list[protocol.RunClosed]) -> int:
    """The documented exit code of `meshlab run` (EXIT_*) for these runs: the worst of them."""
    if any(c.status == "environment-unfit" for c in closed):
        return EXIT_UNFIT
    return EXIT_DECIDED if all(c.decided for c in closed) else EXIT_INCONCLUSIVE


def run(
    experiment: Path,
    resume: Path | None,
    results_dir: Path,
    report: bool = True,
    repeat: int = 1,
) -> list[protocol.RunClosed]:
    """Run the experiment `repeat` times (independent runs, each its own directory), or
    resume one; with more than one run, say how far their primary estimates spread."""
    if resume is None:
        spec.load(experiment)  # a bad definition fails here, in one line, before any set-up
    else:
        RunDir(resume).load_manifest()
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
        console.print(between_runs([Path(c.run_dir) for c in runs]))
    return runs


def between_runs(runs: list[Path]) -> str:
    """'reproduced within ± x pp over K runs' per comparison and primary metric."""
    from meshlab.analysis.loading.run import load_run
    from meshlab.analysis.statistics.reproduce import estimates

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
