"""Benchmark (not a test): `make bench-dataplane`.

Runs experiments/dataplane.yml (iptables vs ebpf vs ebpf-connect, keep-alive and
new-connection, paired RMIT rounds) on the local testbed and prints the report's verdict
tables: p50/p99 ratios and CPU-seconds per 1000 requests per component, with 95 % CIs.
"""

from __future__ import annotations

from pathlib import Path

from meshlab import paths
from meshlab.experiment import runner


def main() -> int:
    (run_dir,) = runner.run(paths.EXPERIMENTS / "dataplane.yml", None, paths.RESULTS)
    summary = Path(run_dir, "derived", "summary.md").read_text()
    print(summary.split("## Against the thesis")[0])
    return 0
