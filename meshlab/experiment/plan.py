"""The seeded plan: which trial runs when. Written to manifest.json before the first trial.

* rmit — every round runs each arm once, in a freshly shuffled order (randomized multiple
  interleaved trials: slow drifts hit both arms alike).
* duet — both arms at the same moment on two pod pairs with disjoint CPUs; which arm gets which
  pair is shuffled per round, so a pair's own bias cancels out.
* sequential — all of arm A, then all of arm B: kept only to show how misleading it is.
Load points and flood sizes form blocks; within a block the design decides the order.
"""

from __future__ import annotations

import random
from typing import Any

from meshlab.experiment.spec import Experiment


def make_plan(exp: Experiment) -> list[dict[str, Any]]:
    rng = random.Random(exp.seed)  # noqa: S311 - a reproducible shuffle, not a secret
    arms = list(exp.arms)
    plan: list[dict[str, Any]] = []

    def add(round_: int, arm: str, lp: str, flood: str, pair: int = 1) -> None:
        plan.append(
            {
                "index": len(plan),
                "round": round_,
                "arm": arm,
                "load_point": lp,
                "flood": flood,
                "pair": pair,
            }
        )

    for flood in exp.flood_sizes:
        for lp in exp.load_points:
            if exp.design == "sequential":
                for arm in arms:
                    for r in range(1, exp.rounds + 1):
                        add(r, arm, lp.name, flood)
                continue
            for r in range(1, exp.rounds + 1):
                order = arms[:]
                rng.shuffle(order)
                if exp.design == "duet":
                    for pair, arm in enumerate(order, start=1):
                        add(r, arm, lp.name, flood, pair)
                else:
                    for arm in order:
                        add(r, arm, lp.name, flood)
    return plan


def requeue(plan: list[dict[str, Any]], index: int) -> dict[str, Any]:
    """Append a new attempt of plan[index]; the plan only ever grows."""
    original = plan[index]
    entry = {**original, "index": len(plan), "requeue_of": original.get("requeue_of", index)}
    plan.append(entry)
    return entry


def attempt_of(plan: list[dict[str, Any]], entry: dict[str, Any]) -> int:
    """1 for a planned trial, 2 for its first re-queue, and so on."""
    root = entry.get("requeue_of", entry["index"])
    return sum(1 for e in plan[: entry["index"] + 1] if e.get("requeue_of", e["index"]) == root)


def execution_order(plan: list[dict[str, Any]], design: str) -> list[dict[str, Any]]:
    """Plan order, except that a re-queued attempt runs at the end of its own round (for
    sequential designs: right after the attempt it replaces). Duet attempts stay adjacent."""
    originals = [e for e in plan if "requeue_of" not in e]
    last_of_round: dict[tuple[Any, ...], int] = {}
    for e in originals:
        last_of_round[(e["flood"], e["load_point"], e["round"])] = e["index"]

    def key(e: dict[str, Any]) -> tuple[float, int]:
        if "requeue_of" not in e:
            return (e["index"], e["index"])
        if design == "sequential":
            return (e["requeue_of"] + 0.5, e["index"])
        return (last_of_round[(e["flood"], e["load_point"], e["round"])] + 0.5, e["index"])

    return sorted(plan, key=key)


def next_group(pending: list[dict[str, Any]], design: str) -> list[dict[str, Any]]:
    """The trials the next step runs together: the first pending one, plus, for duet, its partner
    (same flood, load point and round, the other pod pair, both originals or both re-queues)."""
    first = pending[0]
    if design != "duet":
        return [first]
    partners = [
        e
        for e in pending[1:]
        if (e["flood"], e["load_point"], e["round"])
        == (first["flood"], first["load_point"], first["round"])
        and e["pair"] != first["pair"]
        and ("requeue_of" in e) == ("requeue_of" in first)
    ]
    return [first, *partners[:1]]


def trial_id(entry: dict[str, Any], attempt: int) -> str:
    suffix = f"-a{attempt}" if attempt > 1 else ""
    return f"{entry['index']:03d}-{entry['arm']}-r{entry['round']:02d}{suffix}"
