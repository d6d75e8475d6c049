"""Benchmark: time `meshlab report` on a synthetic 50-round run with 1,000,000 latency samples.

    make bench-report   (= meshlab bench report [--rounds 50] [--samples 1000000] [--keep DIR])

The run has 2 arms x 50 rounds = 100 trials, each with a k6-raw.csv.gz in k6's real row
layout (13 metric rows per request, plus the warm-up scenario), per-second proc-stat and
cgroup samples and two rejected-and-requeued trials. Goal: build() ≤ 30 s.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from meshlab.analysis.report.report import build
from meshlab.synthetic import SyntheticSpec, write_run

GOAL_S = 30.0


def main(rounds: int = 50, samples: int = 1_000_000, keep: Path | None = None) -> int:
    root = keep or Path(tempfile.mkdtemp(prefix="meshlab-bench-"))
    arms = ("iptables", "ebpf")
    per_trial = samples // (rounds * len(arms))
    spec = SyntheticSpec(
        seed=2026,
        rounds=rounds,
        arms=arms,
        samples_per_trial=per_trial,
        k6_rows="full",
        reject=((3, "ebpf"), (17, "iptables")),
    )
    try:
        t = time.perf_counter()
        run_dir = write_run(root, spec)
        gen_s = time.perf_counter() - t
        raw_mb = sum(p.stat().st_size for p in run_dir.rglob("k6-raw.csv.gz")) / 1e6
        t = time.perf_counter()
        out = build(run_dir)
        build_s = time.perf_counter() - t
        html_mb = out.stat().st_size / 1e6
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(
        f"run: {rounds} rounds x {len(arms)} arms, {per_trial:,} samples/trial "
        f"({per_trial * rounds * len(arms):,} total), raw k6 {raw_mb:.0f} MB gzip; "
        f"generated in {gen_s:.1f} s"
    )
    print(f"build(): {build_s:.1f} s (goal ≤ {GOAL_S:.0f} s) — report.html {html_mb:.1f} MB")
    if keep:
        print(f"report: {out}")
    return 0 if build_s <= GOAL_S else 1
