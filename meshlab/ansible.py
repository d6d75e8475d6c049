"""Run a playbook through ansible-runner, with live progress and one-line errors."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner
from rich.console import Console

from meshlab import paths
from meshlab.errors import MeshlabError

# The local testbed is this host; `meshlab testbed ...` always targets it, whatever stack exists.
LOCAL_INVENTORY: dict[str, Any] = {
    "all": {
        "children": {
            "local": {
                "hosts": {
                    "localhost": {
                        "ansible_connection": "local",
                        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                    }
                },
                "vars": {"meshlab_testbed_name": "local"},
            }
        }
    }
}


@dataclass
class PlaybookRun:
    """What a playbook did: per-task results the caller may need (e.g. set facts)."""

    status: str
    rc: int
    changed: int = 0
    seconds: float = 0.0
    results: list[dict[str, Any]] = field(default_factory=list)


def _failure_text(ev: dict[str, Any]) -> str:
    data = ev.get("event_data", {})
    res = data.get("res", {}) or {}
    # A loop reports "One or more items failed": the first failed item says what.
    failed_items = [item for item in res.get("results") or [] if item.get("failed")]
    source = failed_items[0] if failed_items else res
    msg = str(source.get("msg") or "")
    detail = str(source.get("stderr") or source.get("stdout") or "").strip()
    if detail and detail not in msg:
        msg = f"{msg}: {detail}" if msg else detail
    lines = [ln for ln in msg.splitlines() if ln.strip()]
    short = " ".join(lines[-3:]) if lines else "failed"
    return f"task '{data.get('task', '?')}' failed on {data.get('host', '?')}: {short}"


def run_playbook(
    playbook: str,
    extravars: dict[str, Any] | None = None,
    *,
    inventory: dict[str, Any] | str | None = None,
    title: str | None = None,
    console: Console | None = None,
    quiet: bool = False,
    watch: Callable[[dict[str, Any]], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> PlaybookRun:
    """Run `playbook` (relative to the repo root); raise MeshlabError naming the failed task."""
    console = console or Console(stderr=True)
    pdd = paths.SCRATCH / "runner"
    pdd.mkdir(parents=True, exist_ok=True)
    env = {
        "ANSIBLE_CONFIG": str(paths.REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{paths.VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    run = PlaybookRun(status="running", rc=-1)
    failures: list[str] = []
    started = time.monotonic()
    tasks_done = 0

    # `watch` takes over the display (e.g. a progress bar); otherwise a spinner names the task.
    display = (
        console.status(title or f"ansible: {playbook}", spinner="dots")
        if watch is None
        else nullcontext()
    )
    with display as status:

        def on_event(ev: dict[str, Any]) -> bool:
            nonlocal tasks_done
            kind = ev.get("event", "")
            data = ev.get("event_data", {})
            if watch is not None:
                watch(ev)
            if kind == "playbook_on_task_start":
                tasks_done += 1
                if status is not None:
                    status.update(f"{title or playbook}: [{tasks_done}] {data.get('task', '')}")
            elif kind == "runner_on_unreachable" or (
                kind == "runner_on_failed" and not data.get("ignore_errors")
            ):
                failures.append(_failure_text(ev))
            elif kind == "runner_on_ok":
                res = data.get("res", {}) or {}
                if res.get("changed"):
                    run.changed += 1
                run.results.append({"task": data.get("task"), "res": res})
            return True

        # ansible-runner shells out to ansible-playbook from PATH: the venv's bin must be on it.
        os.environ["PATH"] = env["PATH"]
        result = ansible_runner.run(
            private_data_dir=str(pdd),
            project_dir=str(paths.REPO),
            playbook=str(Path(playbook)),
            inventory=inventory if inventory is not None else LOCAL_INVENTORY,
            extravars=extravars or {},
            envvars=env,
            event_handler=on_event,
            quiet=True,
            rotate_artifacts=10,
            suppress_env_files=True,
            cancel_callback=cancel,
        )
    run.status, run.rc = result.status, result.rc
    run.seconds = round(time.monotonic() - started, 1)
    if result.status == "canceled":
        raise KeyboardInterrupt
    if result.status != "successful":
        if failures:
            raise MeshlabError(failures[0])
        raise MeshlabError(
            f"ansible-playbook {playbook} ended {result.status} (rc {result.rc}); "
            f"see {pdd}/artifacts for the full output"
        )
    if not quiet:
        console.print(f"{title or playbook}: ok ({run.changed} changed, {run.seconds} s)")
    return run


def set_fact(run: PlaybookRun, name: str) -> Any:
    """The last value a task of the run set for fact `name` (None if never set)."""
    value = None
    for item in run.results:
        facts = item["res"].get("ansible_facts") or {}
        if name in facts:
            value = facts[name]
    return value
