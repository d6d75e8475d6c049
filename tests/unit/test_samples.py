"""The report's steal/busy timeline uses the precise definitions (busy = elapsed - idle -
iowait - steal), at whole seconds, whatever the sampling interval."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import trial_fixtures as tf

from meshlab.analysis.loading.samples import read_proc_stat


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"t": 1')  # a torn last line
    return path


def test_busy_and_steal_per_second_from_the_precise_counters(tmp_path: Path) -> None:
    rows = tf.proc_stat_rows("host", 10, steal_spike_at=4)
    tl = read_proc_stat(_write(tmp_path / "proc-stat.jsonl", rows))
    assert tl is not None and len(tl.t) == 10
    # 20 of 100 ticks busy per CPU; in second 4 cpu1 loses 30 % to steal (not busy)
    assert np.allclose(np.delete(tl.busy, 3), 20.0)
    assert tl.steal[3] == 30.0 and tl.steal.sum() == 30.0


def test_ticks_do_not_feed_the_timeline(tmp_path: Path) -> None:
    """Tick-sampled busy columns that disagree with idle (this kernel's HZ=250 sampling)
    change nothing: busy comes from the ns-accounted idle."""
    rows = tf.proc_stat_rows("host", 6)
    for r in rows:
        for cpu in r["cpus"].values():
            cpu["system"] = int(cpu["user"] * 0.7)  # ticks claiming 34 % busy instead of 20
    tl = read_proc_stat(_write(tmp_path / "proc-stat.jsonl", rows))
    assert np.allclose(tl.busy, 20.0)


def test_sub_second_sampling_gives_the_same_seconds(tmp_path: Path) -> None:
    coarse = tf.proc_stat_rows("host", 6)
    fine = []
    for a, b in itertools.pairwise(coarse):
        for k in range(5):  # 0.2 s samples, counters linear in between
            f = k / 5
            fine.append({
                "t": a["t"] + f, "host": "host",
                "cpus": {c: {m: a["cpus"][c][m] + f * (b["cpus"][c][m] - a["cpus"][c][m])
                             for m in a["cpus"][c]} for c in a["cpus"]},
            })  # fmt: skip
    fine.append(coarse[-1])
    tl = read_proc_stat(_write(tmp_path / "proc-stat.jsonl", fine))
    assert len(tl.t) == 6 and np.allclose(tl.busy, 20.0)


def test_missing_or_too_short_files_give_no_timeline(tmp_path: Path) -> None:
    assert read_proc_stat(tmp_path / "absent.jsonl") is None
    one = tf.proc_stat_rows("host", 0)
    assert read_proc_stat(_write(tmp_path / "short.jsonl", one)) is None
