"""CPU time counters of a Linux host, read the way every CPU figure of meshlab needs them.

Standard library only and free of meshlab imports: the cloud nodes' trial agent ships this
very file beside itself (roles/trial_agent), so a node samples exactly as the local testbed does.

What each counter is worth on a NO_HZ_IDLE kernel with tick-based CPU accounting (this
project's CI kind: HZ=250, TICK_CPU_ACCOUNTING, no IRQ_TIME_ACCOUNTING):
- /proc/stat `idle` and `iowait`: accounted in nanoseconds when a CPU enters and leaves idle,
  printed in USER_HZ units (10 ms): precise over any window longer than a second;
- /proc/stat busy modes (user, system, softirq, ...): each tick charges a whole tick to what
  runs at that instant: biased when the workload is phase-locked to the tick (measured: busy +
  idle per CPU ranged 77-136 % of elapsed per second); only their *proportions* are used;
- /proc/stat `steal`: the hypervisor's steal clock, accumulated at ticks (exact in sum);
- cgroup v2 `cpu.stat` usage_usec of a non-root cgroup: its tasks' exec runtime, in ns;
- per-CPU task time, the independent check: /proc/schedstat field 7 (CONFIG_SCHEDSTATS) or
  the cgroup v1 root `cpuacct.usage_percpu`, both nanoseconds of tasks' exec runtime.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FIELDS = (
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice",
)  # fmt: skip
# guest time is already counted in user (and guest_nice in nice): never add it twice.
BUSY_MODES = ("user", "nice", "system", "irq", "softirq")
USER_HZ = os.sysconf("SC_CLK_TCK")
CGROUP_KEYS = ("usage_usec", "user_usec", "system_usec")
# Per-CPU task run time (ns), first that exists wins.
TASK_TIME_SOURCES = (
    Path("/proc/schedstat"),
    Path("/sys/fs/cgroup/cpuacct/cpuacct.usage_percpu"),
)


def parse_proc_stat(text: str) -> dict[str, dict[str, int]]:
    """`cpu` and `cpuN` lines of /proc/stat -> {name: {field: ticks}} (missing fields = 0,
    as proc(5) documents for older kernels; extra fields are ignored)."""
    cpus: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        name, *values = line.split()
        numbers = [int(v) for v in values[: len(FIELDS)]]
        numbers += [0] * (len(FIELDS) - len(numbers))
        cpus[name] = dict(zip(FIELDS, numbers, strict=True))
    return cpus


def parse_cpu_stat(text: str) -> dict[str, int]:
    """cgroup v2 cpu.stat -> {usage_usec, user_usec, system_usec, ...}."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def parse_schedstat(text: str) -> dict[str, int]:
    """/proc/schedstat -> {cpuN: ns tasks ran on it} (field 7 of each `cpuN` line; the
    kernel's Documentation/scheduler/sched-stats.rst, version 15 and later)."""
    out = {}
    for line in text.splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and len(values) >= 7:
            out[name] = int(values[6])
    return out


def parse_cpuacct_percpu(text: str) -> dict[str, int]:
    """cgroup v1 cpuacct.usage_percpu (one ns figure per possible CPU) -> {cpuN: ns}."""
    return {f"cpu{i}": int(v) for i, v in enumerate(text.split())}


def read_task_time(sources: tuple[Path, ...] = TASK_TIME_SOURCES) -> tuple[str, dict[str, int]]:
    """(source path, {cpuN: ns}) of the first per-CPU task-time source this host has, or
    ("", {}) when it has none (the accounting check then says so instead of passing)."""
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        parsed = parse_schedstat(text) if path.name == "schedstat" else parse_cpuacct_percpu(text)
        if parsed:
            return str(path), parsed
    return "", {}


def stat_row(t: float, host: str, stat_text: str, task: tuple[str, dict[str, int]]) -> str:
    """One proc-stat.jsonl line (results/README.md): ticks as /proc/stat prints them, plus the
    per-CPU task time in ns when the host has a source for it."""
    row: dict[str, Any] = {"t": round(t, 6), "host": host, "cpus": parse_proc_stat(stat_text)}
    if task[1]:
        row["task_ns"] = task[1]
        row["task_source"] = task[0]
    return json.dumps(row)


def cgroup_row(t: float, host: str, component: str, cpu_stat_text: str) -> str:
    """One cgroup-cpu.jsonl line: the component's cumulative cpu.stat counters."""
    cpu = parse_cpu_stat(cpu_stat_text)
    row: dict[str, Any] = {"t": round(t, 6), "host": host, "component": component}
    row.update({k: cpu.get(k, 0) for k in CGROUP_KEYS})
    return json.dumps(row)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Sample rows of a JSON-lines file; a torn line (sampler killed mid-write) is skipped."""
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "t" in row:
            rows.append(row)
    return rows
