"""Load-generator fidelity: did k6 start requests when its schedule said it would?

k6's constant-arrival-rate executor starts iteration i at t0 + i/rate. A stalled k6 (its own
output flushes, garbage collection, a thread preempted on a shared CPU) starts late and then
catches up with a burst: requests that wait in k6, not in the mesh, and land in the tail. So
every trial records how late its starts were, and the gates reject a trial where k6 fell behind.
"""

from __future__ import annotations

import numpy as np

STALL_MS = 5.0  # consecutive starts this much further apart than the schedule's interval


def schedule_lag(starts_s: np.ndarray, rate: float) -> dict[str, float | int] | None:
    """p50/p99/max of how late each start was against the schedule (ms); the stalls (gaps
    between consecutive starts more than STALL_MS longer than the schedule's 1/rate) and the
    longest gap. The schedule's origin is the one that makes the earliest start exactly on time
    (k6 never starts early); None for fewer than 2 starts."""
    starts = np.sort(np.asarray(starts_s, dtype=np.float64))
    if starts.size < 2 or rate <= 0:
        return None
    offset = starts - np.arange(starts.size) / rate
    lag_ms = 1000.0 * (offset - offset.min())
    gaps_ms = 1000.0 * np.diff(starts)
    return {
        "p50_ms": round(float(np.percentile(lag_ms, 50)), 3),
        "p99_ms": round(float(np.percentile(lag_ms, 99)), 3),
        "max_ms": round(float(lag_ms.max()), 3),
        "stalls_over_5ms": int((gaps_ms > 1000.0 / rate + STALL_MS).sum()),
        "max_gap_ms": round(float(gaps_ms.max()), 3),
    }
