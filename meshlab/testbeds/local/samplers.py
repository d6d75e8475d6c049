"""CPU samples during a trial (every 0.2 s on the local testbed): /proc/stat (every CPU,
steal included, with the per-CPU task time) and each component cgroup's cpu.stat. Samples are
cumulative counters; figures come from differences. The row formats are meshlab.core.procstat's,
the same the cloud nodes' agent writes."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import TextIO

from meshlab.core.procstat import USER_HZ, cgroup_row, parse_proc_stat, read_task_time, stat_row
from meshlab.trial.quiet import Snapshot


class Sampler:
    """Writes one JSON line per interval per source until stopped (a daemon thread)."""

    def __init__(
        self,
        proc_stat_out: TextIO,
        cgroup_out: TextIO,
        components: dict[str, Path],
        host: str | None = None,
        interval: float = 1.0,
    ) -> None:
        self.proc_stat_out, self.cgroup_out = proc_stat_out, cgroup_out
        self.components = components
        self.host = host or socket.gethostname()
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)

    def sample(self) -> None:
        t = time.time()
        stat = Path("/proc/stat").read_text()
        self.proc_stat_out.write(stat_row(t, self.host, stat, read_task_time()) + "\n")
        for name, cgroup in self.components.items():
            try:
                text = (cgroup / "cpu.stat").read_text()
            except OSError:
                continue
            self.cgroup_out.write(cgroup_row(t, self.host, name, text) + "\n")

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.sample()
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        self.sample()  # a last sample closes the final interval

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def snapshot() -> Snapshot:
    """Every CPU's idle (+ iowait) and steal seconds now: the quiet-host check's counters
    (the precise ones; /proc/stat's busy columns are tick-sampled on this kernel)."""
    cpus = parse_proc_stat(Path("/proc/stat").read_text())
    t = time.monotonic()
    return Snapshot(
        t,
        {c: (v["idle"] + v["iowait"]) / USER_HZ for c, v in cpus.items() if c != "cpu"},
        {c: v["steal"] / USER_HZ for c, v in cpus.items() if c != "cpu"},
    )
