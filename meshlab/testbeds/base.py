"""What the engine needs of a testbed.

Both testbeds answer `fits` (refuse, naming the field, what they cannot run, before anything
is planned), `hold` (one run at a time) and `pinning` (what the manifest records). They differ
in how a step runs: the local testbed runs a whole step in the engine's own process
(`LocalTestbed.open`: quiet wait, arm, trials, judge); the cloud's steps are driven by the
playbook across its nodes, so the engine only prepares a trial and ingests what was fetched
(`CloudTestbed.prepare`, `.ingest`). Both hand their evidence to the same judge.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from meshlab.record.rundir import RunDir
from meshlab.record.spec import Experiment


class Testbed(Protocol):
    name: ClassVar[str]  # local | cloud, as the manifest records it

    def fits(self, exp: Experiment, source: str) -> None:
        """Raise MeshlabError naming the field of `exp` this testbed cannot run."""

    def hold(self, run: RunDir) -> None:
        """Take (or share) the testbed for `run`; refuse when another run holds it."""

    def pinning(self, exp: Experiment) -> dict[str, Any] | str:
        """The CPU layout the manifest records."""
