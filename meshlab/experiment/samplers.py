"""Per-second CPU samples during a trial: /proc/stat (every CPU, steal included) and each
component cgroup's cpu.stat. Samples are cumulative counters; rates come from differences.
The row formats are meshlab.core.procstat's, the same the cloud nodes' agent writes."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import TextIO

from meshlab.core.procstat import cgroup_row, parse_proc_stat, stat_row

# guest time is already counted in user (and guest_nice in nice): never add it twice.
_BUSY = ("user", "nice", "system", "irq", "softirq", "steal")
_IDLE = ("idle", "iowait")


def busy_and_total(a: dict[str, int], b: dict[str, int]) -> tuple[int, int]:
    busy = sum(b[k] - a[k] for k in _BUSY)
    return busy, busy + sum(b[k] - a[k] for k in _IDLE)


def steal_percent(a: dict[str, int], b: dict[str, int]) -> float:
    _, total = busy_and_total(a, b)
    return 100.0 * (b["steal"] - a["steal"]) / total if total > 0 else 0.0


def busy_percent(a: dict[str, int], b: dict[str, int]) -> float:
    busy, total = busy_and_total(a, b)
    return 100.0 * busy / total if total > 0 else 0.0


class Sampler:
    """Writes one JSON line per second per source until stopped (a daemon thread)."""

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
        self.proc_stat_out.write(stat_row(t, self.host, stat, ("", {})) + "\n")
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


def cpu_busy_now(seconds: float = 1.0) -> float:
    """Busiest CPU's busy % over `seconds` (the settle gate's idleness check)."""
    a = parse_proc_stat(Path("/proc/stat").read_text())
    time.sleep(seconds)
    b = parse_proc_stat(Path("/proc/stat").read_text())
    return max(busy_percent(a[c], b[c]) for c in a if c != "cpu")
