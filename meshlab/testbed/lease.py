"""One testbed, one holder at a time: the lease every command that changes the local testbed
or runs trials on it takes (meshlab run, ansible-playbook experiment.yml, testbed up / down /
dataplane / flood). Two runs that both "succeeded" on one testbed had measured each other's
load; now the second is refused at once, naming the first.

The lease is a JSON record beside the testbed (it outlives `testbed down`) written under an
flock. A holder is a process (pid + its start time, so a recycled pid is not mistaken for it):
- its descendants share the lease (the playbook meshlab run starts, the trial step it runs);
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


def playbook_ancestor(pid: int | None = None) -> int:
    """The ansible-playbook process above `pid` (the holder when a playbook is run without the
    CLI), else the parent."""
    chain = ancestors(pid or os.getpid())
    for p in chain[1:]:
        try:
            comm = Path(f"/proc/{p}/comm").read_text().strip()
            cmdline = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if comm.startswith("ansible-playboo") or any(b"ansible-playbook" in a for a in cmdline[:2]):
            return p
    return chain[1] if len(chain) > 1 else chain[0]
