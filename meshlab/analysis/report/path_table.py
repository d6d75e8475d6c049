"""The report's path table (issue 21): per block and arm, each hop and what carried it over the
valid trials (trial.json `path`, meshlab/trial/path.py), so a reader sees at a glance that the
arms differ where they should and nowhere else."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass

from meshlab.analysis.loading.run import Block, Run
from meshlab.record.format import HOPS


@dataclass(frozen=True)
class HopRow:
    block: Block
    arm: str
    hop: str
    expected: str
    carriers: dict[str, int]  # carrier -> valid trials that showed it
    trials: int
    connections_per_1000: float | None  # median over the trials, per 1,000 measured requests
    messages_per_request: float | None  # median spliced messages per measured request

    @property
    def as_expected(self) -> bool:
        return set(self.carriers) <= {self.expected, "unknown"}


def path_rows(run: Run) -> list[HopRow]:
    rows = []
    for block in run.blocks():
        for arm in run.arms:
            trials = [
                t for t in run.valid_trials() if t.arm == arm and t.block == block and t.record.path
            ]
            if not trials:
                continue
            for hop in HOPS:
                hops = [t.record.path.hops[hop] for t in trials if hop in t.record.path.hops]
                if not hops:
                    continue
                per_req = [
                    (h, t.requests) for h, t in zip(hops, trials, strict=False) if t.requests
                ]
                conns = [1000 * h.connections / n for h, n in per_req if h.connections is not None]
                msgs = [h.messages / n for h, n in per_req if h.messages is not None]
                rows.append(
                    HopRow(
                        block=block,
                        arm=arm,
                        hop=hop,
                        expected=hops[0].expected,
                        carriers=dict(Counter(h.carrier for h in hops)),
                        trials=len(hops),
                        connections_per_1000=statistics.median(conns) if conns else None,
                        messages_per_request=statistics.median(msgs) if msgs else None,
                    )
                )
    return rows
