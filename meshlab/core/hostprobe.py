"""A fixed amount of work on each CPU, timed: how fast the host is right now.

Issue 19 found the host's speed behind nearly all of the trial-to-trial spread (within an arm,
log p50 against k6's own CPU per request: r = 0.99), but k6's CPU carries part of the arm's
effect (its hop is bypassed too), so it cannot adjust the comparison. This probe is
arm-independent by construction: it runs in the harness' process, outside every pod's cgroup
(the eBPF programs attach to pod cgroups only), while no load runs, just before and just
after the window. Standard library only, so a cloud node's agent can ship it too.
"""

from __future__ import annotations

import os
import statistics
import time

WORK = "cpython loop, 60k iterations of add/xor/shift, a list append every 64"
ITERATIONS = 60_000  # about 4-6 ms of one core on the 2-vCPU host kind
REPS = 3


def _work(n: int = ITERATIONS) -> int:
    acc, buf = 0, []
    for i in range(n):
        acc = (acc + i * 7) ^ (i >> 3)
        if i & 63 == 0:
            buf.append(acc)
    return acc + len(buf)


def probe(cpus: list[int], reps: int = REPS) -> dict[str, float]:
    """cpu -> seconds the work took there (the median of `reps`). Only the calling thread is
    moved between CPUs (sched_setaffinity of thread 0), and put back where it was."""
    before = os.sched_getaffinity(0)
    out = {}
    try:
        for cpu in cpus:
            os.sched_setaffinity(0, {cpu})
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                _work()
                times.append(time.perf_counter() - t0)
            out[str(cpu)] = round(statistics.median(times), 7)
    finally:
        os.sched_setaffinity(0, before)
    return out
