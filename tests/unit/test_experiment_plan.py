"""The seeded plan: deterministic, balanced, and re-queues that keep the round structure."""

from __future__ import annotations

from collections import Counter

import pytest

from meshlab.errors import MeshlabError
from meshlab.experiment import plan as planner
from meshlab.record import spec

BASE = {
    "id": "t",
    "description": "test",
    "arms": {"iptables": {"dataplane": "iptables"}, "ebpf": {"dataplane": "ebpf"}},
    "load_points": [
        {"name": "a", "rate": 100, "duration_s": 10},
        {"name": "b", "rate": 500, "duration_s": 10},
    ],
    "flood_sizes": ["off", "50x500"],
    "rounds": 10,
    "seed": 42,
}


def exp(**patch):
    return spec.parse({**BASE, **patch}, "t")


def test_same_seed_same_plan_other_seed_other_order():
    assert planner.make_plan(exp()) == planner.make_plan(exp())
    assert planner.make_plan(exp()) != planner.make_plan(exp(seed=43))


def test_rmit_runs_each_arm_once_per_round_in_shuffled_order():
    plan = planner.make_plan(exp())
    assert len(plan) == 2 * 10 * 2 * 2
    per_round = Counter((e.flood, e.load_point, e.round, e.arm) for e in plan)
    assert set(per_round.values()) == {1}
    firsts = Counter(e.arm for e in plan if e.index == 0 or plan[e.index - 1].round != e.round)
    # Both arms lead some rounds (40 blocks of 2: all-one-way would be p = 2^-40).
    assert firsts["iptables"] > 5 and firsts["ebpf"] > 5
    assert [e.index for e in plan] == list(range(len(plan)))


def test_sequential_runs_all_of_a_then_all_of_b():
    plan = planner.make_plan(
        exp(design="sequential", flood_sizes=["off"], load_points=BASE["load_points"][:1])
    )
    assert [e.arm for e in plan] == ["iptables"] * 10 + ["ebpf"] * 10


def test_duet_puts_the_arms_on_both_pairs_at_once():
    plan = planner.make_plan(exp(design="duet"))
    for i in range(0, len(plan), 2):
        a, b = plan[i], plan[i + 1]
        assert a.round == b.round and {a.pair, b.pair} == {1, 2}
        assert {a.arm, b.arm} == {"iptables", "ebpf"}
    # Which arm gets pair 1 is shuffled: neither pair is always the same arm.
    assert len({e.arm for e in plan if e.pair == 1}) == 2


def test_a_requeued_trial_runs_right_after_the_attempt_it_replaces():
    """Issue 19: a trial rejected for noise is re-run next to its partner, so the pair stays
    close in time (it used to wait for the end of its round)."""
    e = exp(flood_sizes=["off"], load_points=BASE["load_points"][:1], rounds=3)
    plan = planner.make_plan(e)
    original = [x.model_copy() for x in plan]
    again = planner.requeue(plan, 0)
    assert plan[: len(original)] == original  # the plan only grows
    assert again.index == 6 and again.requeue_of == 0 and again.round == 1
    order = [x.index for x in planner.execution_order(plan)]
    assert order == [0, 6, 1, 2, 3, 4, 5]
    third = planner.requeue(plan, 6)
    assert third.requeue_of == 0
    assert [x.index for x in planner.execution_order(plan)] == [0, 6, 7, 1, 2, 3, 4, 5]
    later = planner.requeue(plan, 3)  # a round's second trial: re-run right after it too
    order = [x.index for x in planner.execution_order(plan)]
    assert order[order.index(3) + 1] == later.index
    assert planner.attempt_of(plan, plan[0]) == 1
    assert planner.attempt_of(plan, again) == 2 and planner.attempt_of(plan, third) == 3
    assert planner.trial_id(third, 3) == "007-" + third.arm + "-r01-a3"


def _pending(plan, design):
    return planner.execution_order(plan)


def test_a_duet_step_runs_both_pairs_together():
    plan = planner.make_plan(exp(design="duet", flood_sizes=["off"], rounds=2))
    group = planner.next_group(_pending(plan, "duet"), "duet")
    assert [e.index for e in group] == [0, 1]
    assert {e.pair for e in group} == {1, 2}
    # Its partner done alone (e.g. after a crash between the two trial.json writes): run alone.
    rest = [e for e in _pending(plan, "duet") if e.index != 0]
    assert [e.index for e in planner.next_group(rest, "duet")] == [1]


def test_a_requeued_duet_step_pairs_requeues_with_requeues():
    plan = planner.make_plan(exp(design="duet", flood_sizes=["off"], rounds=2))
    planner.requeue(plan, 0)
    planner.requeue(plan, 1)
    pending = [e for e in _pending(plan, "duet") if e.index > 1]
    group = planner.next_group(pending, "duet")
    assert [e.index for e in group] == [n := len(plan) - 2, n + 1]
    assert all(e.requeue_of is not None for e in group)


def test_other_designs_run_one_trial_per_step():
    plan = planner.make_plan(exp(flood_sizes=["off"]))
    assert len(planner.next_group(_pending(plan, "rmit"), "rmit")) == 1


def test_each_placement_is_a_block_of_the_plan_run_one_after_the_other():
    plan = planner.make_plan(exp(placement=["cross-node", "same-node"], flood_sizes=["off"]))
    order = [e.placement for e in planner.execution_order(plan)]
    assert order == ["cross-node"] * (len(order) // 2) + ["same-node"] * (len(order) // 2)
    for placement in ("cross-node", "same-node"):
        block = [e for e in plan if e.placement == placement]
        assert Counter((e.load_point, e.arm) for e in block) == {
            (lp, arm): 10 for lp in ("a", "b") for arm in ("iptables", "ebpf")
        }


def test_one_placement_plans_exactly_what_it_did_before_placements():
    """Adding the placement factor must not reshuffle existing experiments (their seeds are
    part of what a rerun reproduces): same entries, same order, placement same-node."""
    plan = planner.make_plan(exp())
    assert {e.placement for e in plan} == {"same-node"}
    # Frozen from plan.py before placements existed (commit e57f82a, BASE, seed 42): the arm of
    # every entry in plan order (e = ebpf, i = iptables), blocks flood-major then load point.
    assert "".join(e.arm[0] for e in plan) == (
        "eieiieeieieieieiieeieieieieieieiieeiieieeieiieieieeieiieeieiieeiieieieeiieeiieei"
    )
    assert [(str(e.flood), e.load_point) for e in plan][::20] == [
        ("off", "a"), ("off", "b"), ("50x500", "a"), ("50x500", "b")
    ]  # fmt: skip


def test_abba_alternates_the_order_of_its_two_arms():
    """Issue 19's design comparison: rounds AB, BA, AB, ... (seeded start), so a drift linear
    over two rounds cancels between consecutive pairs; every round still holds both arms."""
    one_block = {"flood_sizes": ["off"], "load_points": BASE["load_points"][:1]}
    plan = planner.make_plan(exp(design="abba", rounds=6, **one_block))
    firsts = [e.arm for e in plan if e.index % 2 == 0]
    assert firsts == [firsts[0], firsts[1]] * 3 and firsts[0] != firsts[1]
    for r in range(1, 7):
        assert sorted(e.arm for e in plan if e.round == r) == ["ebpf", "iptables"]
    with pytest.raises(MeshlabError, match="design abba alternates the order of exactly 2 arms"):
        exp(design="abba", arms={"a": {"dataplane": "iptables"}, "b": {"dataplane": "ebpf"},
                                 "c": {"dataplane": "ebpf-connect"}})  # fmt: skip
