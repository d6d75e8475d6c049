"""One run as the engine holds it between steps: its directory, its manifest and every
finished trial's record, each trial.json read once (the local testbed's loop keeps this for
the whole run; a cloud step reads it once per command)."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshlab.analysis.loading.run import Run, run_of
from meshlab.experiment.saturation_plan import charged
from meshlab.record.format import Manifest, TrialRecord
from meshlab.record.rundir import RunDir, TrialDir
from meshlab.trial import quiet


@dataclass
class RunState:
    run: RunDir
    manifest: Manifest
    records: dict[int, tuple[TrialDir, TrialRecord]] = field(default_factory=dict)
    waited_s: float = 0.0  # a wait that ended the run, with no trial to record it in

    @classmethod
    def load(cls, run: RunDir) -> RunState:
        manifest = run.load_manifest()
        return cls(run, manifest, {r.plan_index: (d, r) for d, r in run.records()})

    def save(self) -> None:
        self.run.save_manifest(self.manifest)

    def trial_records(self) -> list[TrialRecord]:
        return [r for _, r in self.records.values()]

    @property
    def segment_start(self) -> str:
        """When this run started, or was last resumed: the noise budget is per segment."""
        return (
            self.manifest.resumed_at[-1] if self.manifest.resumed_at else self.manifest.started_at
        )

    def budget_spent(self) -> float:
        gates = self.manifest.experiment.gates
        return quiet.spent_s(self.trial_records(), self.segment_start, gates.quiet_s, charged)

    def budget_left(self) -> float:
        return self.manifest.experiment.gates.noise_budget_s - self.budget_spent()

    def analysis_run(self) -> Run:
        return run_of(self.run, self.manifest, list(self.records.values()))
