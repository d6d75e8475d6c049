"""The local testbed: an Istio-style sidecar mesh in network namespaces on one host.

The engine runs its steps in one process (`LocalTestbed.open`): wait for a quiet host, apply
the step's arm, check the rules at a block's start, run k6 and judge. Block changes (another
placement or flood) go back to the playbook, whose roles move pods and write rules.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, ClassVar

from meshlab.errors import MeshlabError
from meshlab.record.format import Manifest, TrialRecord
from meshlab.record.rundir import RunDir
from meshlab.record.spec import Experiment, Gates
from meshlab.testbeds.local import dataplane, lease
from meshlab.testbeds.local import state as tb_state
from meshlab.testbeds.local.samplers import snapshot
from meshlab.testbeds.local.step import StepClock, Watchdog, run_step, settle_rules
from meshlab.trial.quiet import Wait, wait_for_quiet
from meshlab.trial.slot import TrialSlot


class LocalTestbed:
    name: ClassVar[str] = "local"

    def fits(self, exp: Experiment, source: str) -> None:
        """Every CPU the pinning names exists on this host."""
        have = os.cpu_count() or 1
        for placement, pins in exp.pinning.items():
            for component, cpus in pins.model_dump().items():
                top = max(int(part.split("-")[-1]) for part in cpus.split(","))
                if top >= have:
                    raise MeshlabError(
                        f"{source}: pinning.{placement}.{component}: CPU {top} does not exist "
                        f"on this host (CPUs 0-{have - 1})"
                    )

    def hold(self, run: RunDir) -> None:
        """Shared with `meshlab run` when it holds the lease, else taken for the main
        ansible-playbook process (lease.run_holder). A second run is refused here, before
        anything on the testbed changes."""
        holder = lease.acquire("ansible-playbook experiment.yml", pid=lease.playbook_ancestor())
        verb = "meshlab run" if holder.what.startswith("meshlab run") else "ansible-playbook"
        lease.describe_run(holder, f"{verb} {run.path}")

    def pinning(self, exp: Experiment) -> dict[str, Any] | str:
        if exp.design == "duet":
            return "per pod pair"  # each pair owns a CPU (testbed layout)
        return {p: exp.pinning_for(p).model_dump() for p in exp.placement}

    def open(self) -> LocalSession:
        tb_state.require_root()
        return LocalSession(tb_state.load())


class LocalSession:
    """The testbed as one run's trial loop sees it: its state read once, its arm applied in
    this process, its rules checked once per block."""

    def __init__(self, state: tb_state.LocalState) -> None:
        self.state = state
        self.watchdog = Watchdog()
        self.watchdog.start()
        self._settled: dict[str, Any] | None = None  # the rule check of this block

    def close(self) -> None:
        self.watchdog.stop()
        tb_state.save(self.state)  # the arm each pair is in now (testbed status reads it)

    @property
    def placement(self) -> str:
        return self.state.placement

    @property
    def flood(self) -> str:
        return self.state.flood.spec

    def wait_quiet(
        self, gates: Gates, budget_left_s: float, say: Callable[[str, float, float], None]
    ) -> Wait:
        return wait_for_quiet(snapshot, gates, budget_left_s, say)

    def apply_arms(self, dataplanes: dict[str, str]) -> float:
        """Each pod pair in its arm (`pair -> dataplane`); seconds it took."""
        started = time.monotonic()
        for pair, arm in dataplanes.items():
            dataplane.apply(self.state, arm, [int(pair)])
        return time.monotonic() - started

    def settle(self, gates: Gates) -> dict[str, Any]:
        """The rule-stability check, once per block (the block's flood was just written)."""
        if self._settled is None:
            self._settled = settle_rules(self.state, gates.settle_timeout_s)
        return self._settled

    def run(
        self, manifest: Manifest, slots: list[TrialSlot], clock: StepClock, quiet: Wait
    ) -> list[TrialRecord]:
        t0 = time.monotonic()
        rules = self.settle(manifest.experiment.gates)
        clock.settle_s = time.monotonic() - t0
        settled = {
            **rules,
            "seconds": round(quiet.waited_s + clock.settle_s, 2),
            "cpu_busy_percent": round(quiet.state.busiest_percent, 1),
            "timed_out": not rules["rules_stable"],
        }
        return run_step(self.state, manifest, slots, clock, settled, self.watchdog)
