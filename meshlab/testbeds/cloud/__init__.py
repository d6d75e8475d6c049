"""The cloud testbed: Kubernetes on OpenStack VMs (docs/cluster.md). The playbook drives each
step across the nodes; the engine prepares a trial and judges what was fetched."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from meshlab.record.format import Manifest, TrialRecord
from meshlab.record.rundir import RunDir
from meshlab.record.spec import Experiment
from meshlab.testbeds.cloud import trial
from meshlab.trial.slot import TrialSlot


class CloudTestbed:
    name: ClassVar[str] = "cloud"

    def fits(self, exp: Experiment, source: str) -> None:
        trial.check_fits(exp, source)

    def hold(self, run: RunDir) -> None:
        """The cluster's Lease is taken by the trial play itself (tasks/cloud_lease.yml)."""

    def pinning(self, exp: Experiment) -> str:
        return "per trial (Kubernetes static CPU manager: exclusive CPUs of each container)"

    def prepare(
        self, manifest: Manifest, slot: TrialSlot, target_url: str, k6_memory_limit: int
    ) -> dict[str, Any]:
        return trial.prepare(manifest, slot, target_url, k6_memory_limit)

    def ingest(self, manifest: Manifest, slot: TrialSlot, raw: Path) -> TrialRecord:
        return trial.ingest(manifest, slot, raw)
