"""One testbed, one holder at a time: the lease every command that changes the local testbed
or runs trials on it takes (meshlab run, ansible-playbook experiment.yml, testbed up / down /
dataplane / flood). Two runs that both "succeeded" on one testbed had measured each other's
load; now the second is refused at once, naming the first.

The lease is a JSON record beside the testbed (it outlives `testbed down`) written under an
flock. A holder is a process (pid + its start time, so a recycled pid is not mistaken for it):
- its descendants share the lease (the playbook meshlab run starts, the trial step it runs);
- a playbook run without the CLI is held by its main ansible-playbook process (run_holder),
  never by the per-task worker a step runs under, and is released when the run closes;
- a holder that died (kill -9 included) leaves a stale lease that the next taker overwrites;
- read-only commands (status, report, compare) never take it.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from meshlab.core import atomic
from meshlab.errors import MeshlabError

LEASE = Path(os.environ.get("MESHLAB_LEASE", "/run/meshlab.lease"))


@dataclass(frozen=True)
class Holder:
    what: str  # "meshlab run results/default/<run>", "meshlab testbed up", ...
    pid: int
    started: int  # the process' start time (clock ticks after boot, /proc/PID/stat field 22)
    since: str  # ISO-8601 UTC

    def describe(self) -> str:
        hhmm = datetime.fromisoformat(self.since).strftime("%H:%M UTC")
        return f"{self.what} (pid {self.pid}) since {hhmm}"


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22, after the comm in parentheses


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def ancestors(pid: int) -> list[int]:
    """pid, its parent, ... up to init."""
    out = []
    while pid and pid not in out:
        out.append(pid)
        pid = _parent(pid) or 0
    return out


def alive(h: Holder) -> bool:
    return _start_time(h.pid) == h.started


@contextmanager
def _locked(path: Path) -> Iterator[Holder | None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as lock:  # noqa: PTH123 - flock wants a file object
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield read(path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read(path: Path = LEASE) -> Holder | None:
    try:
        return Holder(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def current(path: Path = LEASE) -> Holder | None:
    """The live holder, or None (no lease, or its holder died)."""
    h = read(path)
    return h if h is not None and alive(h) else None


def acquire(what: str, pid: int | None = None, path: Path = LEASE) -> Holder:
    """Take the lease for `pid` (default: this process), or share it when a live holder is an
    ancestor of `pid`; refuse in one line when another live process holds it."""
    pid = pid or os.getpid()
    with _locked(path) as held:
        if held is not None and alive(held):
            if held.pid in ancestors(pid):
                return held
            raise MeshlabError(f"testbed busy: {held.describe()}")
        started = _start_time(pid)
        if started is None:
            raise MeshlabError(f"lease: process {pid} is gone")
        mine = Holder(what, pid, started, datetime.now(UTC).isoformat(timespec="seconds"))
        atomic.write_json(path, asdict(mine))
        return mine


def describe_run(holder: Holder, what: str, path: Path = LEASE) -> None:
    """Name what the holder does more precisely (e.g. the run directory, once planned)."""
    with _locked(path) as held:
        if held is not None and held.pid == holder.pid and held.started == holder.started:
            atomic.write_json(path, {**asdict(held), "what": what})


def release(holder: Holder, path: Path = LEASE) -> None:
    with _locked(path) as held:
        if held is not None and (held.pid, held.started) == (holder.pid, holder.started):
            path.unlink(missing_ok=True)


def require_held(pid: int | None = None, path: Path = LEASE) -> Holder:
    """For the steps of a run: the lease must be held by an ancestor (else the run that
    started this step is gone, or another took the testbed)."""
    held = current(path)
    if held is None or held.pid not in ancestors(pid or os.getpid()):
        who = f"it is held by {held.describe()}" if held else "its holder is gone"
        raise MeshlabError(f"this step's run no longer holds the testbed ({who}): stopping")
    return held


@contextmanager
def holding(what: str, path: Path = LEASE) -> Iterator[Holder]:
    """`with holding("meshlab testbed up"):` — released on the way out (unless shared)."""
    h = acquire(what, path=path)
    try:
        yield h
    finally:
        if h.pid == os.getpid():
            release(h, path)


@dataclass(frozen=True)
class Proc:
    """One process of a chain of ancestors, as /proc shows it."""

    pid: int
    comm: str  # /proc/PID/comm (the kernel cuts it to 15 characters)
    argv: tuple[str, ...]


def _proc(pid: int) -> Proc | None:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return Proc(pid, comm, tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a))


def is_playbook(p: Proc) -> bool:
    """ansible-playbook itself (`ansible-playbook ...` or `python .../ansible-playbook ...`)."""
    return p.comm.startswith("ansible-playboo") or any(
        Path(a).name == "ansible-playbook" for a in p.argv[:2]
    )


def run_holder(chain: list[Proc]) -> int:
    """Which process of `chain` (a step, its parent, ... up to init) holds the lease for the
    playbook run the step belongs to: the one that lives as long as the run.

    That is the main ansible-playbook process, the outermost of the ansible-playbook
    processes right above the step: Ansible runs each task in a worker it forks from the main
    process, and a worker carries the main process' command line but lives for one task
    only (issue 18: the lease named the planning task's worker, gone by the next task).
    ansible-runner used directly runs ansible-playbook as its child, so the same rule holds.
    Without a playbook above the step, its parent holds it."""
    below_first = next((i for i, p in enumerate(chain[1:], 1) if is_playbook(p)), None)
    if below_first is None:
        return chain[1].pid if len(chain) > 1 else chain[0].pid
    top = below_first
    while top + 1 < len(chain) and is_playbook(chain[top + 1]):
        top += 1
    return chain[top].pid


def playbook_ancestor(pid: int | None = None) -> int:
    """The main ansible-playbook process above `pid` (the holder when a playbook is run
    without the CLI), else the parent."""
    chain = [p for p in (_proc(q) for q in ancestors(pid or os.getpid())) if p is not None]
    return run_holder(chain)


def release_playbook_run(pid: int | None = None, path: Path = LEASE) -> bool:
    """At the end of a playbook run without the CLI: give the testbed back (a `meshlab run`
    holder keeps it until the CLI exits). True when released."""
    held = current(path)
    if held is None or held.pid != playbook_ancestor(pid):
        return False
    release(held, path)
    return True
