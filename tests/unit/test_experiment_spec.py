"""Experiment definitions: every shipped file validates; bad input names file, field, rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from meshlab.errors import MeshlabError
from meshlab.record import spec

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted(REPO.glob("experiments/*.yml"))
BASE = {
    "id": "t",
    "description": "test",
    "arms": {"iptables": {"dataplane": "iptables"}, "ebpf": {"dataplane": "ebpf"}},
    "load_points": [{"name": "lp", "rate": 100, "duration_s": 10, "warmup_s": 2}],
    "rounds": 6,
    "seed": 1,
}


def test_shipped_experiments_validate():
    assert {p.stem for p in EXPERIMENTS} >= {"default", "smoke", "thesis", "aa"}
    for path in EXPERIMENTS:
        exp = spec.load(path)
        assert exp.rounds >= 2


def test_default_fits_twelve_minutes_and_gives_a_ci():
    exp = spec.load(next(p for p in EXPERIMENTS if p.stem == "default"))
    blocks = len(exp.load_points) * len(exp.flood_sizes) * len(exp.placement)
    trials = len(exp.arms) * exp.rounds * blocks
    per_trial = sum(lp.duration_s + lp.warmup_s for lp in exp.load_points) / len(exp.load_points)
    assert exp.rounds >= 12  # the host-speed adjustment may decide from 12 rounds on
    assert exp.placement == ["same-node"]  # the thesis' layout (experiments/README.md)
    assert exp.analysis.primary == ["latency_p50", "cpu_node_total", "cpu_sidecars"]
    # issue 19's goal: <= 12 minutes of trials, with the 3.7-4.2 s between windows measured and one
    # re-run trial in ten
    assert 1.1 * trials * (per_trial + 4) <= 720
    assert list(exp.arms) == ["iptables", "ebpf"] and [str(f) for f in exp.flood_sizes] == [
        "50x500"
    ]


def test_aa_is_the_default_design_with_one_arm_under_two_names():
    default, aa = (yaml.safe_load((REPO / "experiments" / f"{n}.yml").read_text())
                   for n in ("default", "aa"))  # fmt: skip
    mine = ("id", "description", "arms", "seed")
    assert {k: v for k, v in aa.items() if k not in mine} == {
        k: v for k, v in default.items() if k not in mine
    }
    assert {a["dataplane"] for a in aa["arms"].values()} == {"iptables"} and len(aa["arms"]) == 2


def test_smoke_is_short_has_two_rounds_and_moves_the_pods_once():
    exp = spec.load(next(p for p in EXPERIMENTS if p.stem == "smoke"))
    trials = len(exp.arms) * exp.rounds * len(exp.placement)
    assert exp.rounds >= 2 and trials * (exp.load_points[0].duration_s + 10) <= 240
    assert sorted(exp.placement) == ["cross-node", "same-node"]


def test_placement_defaults_to_one_node_and_each_names_its_cpu_layout():
    exp = spec.parse(BASE, "x.yml")
    assert exp.placement == ["same-node"]
    assert exp.pinning_for("same-node").model_dump() == {
        "k6": "0", "client_sidecar": "1", "server_sidecar": "1", "app": "1"
    }  # fmt: skip
    # across nodes each node's pods share its CPU: client pod on 0, server pod on 1
    assert exp.pinning_for("cross-node").model_dump() == {
        "k6": "0", "client_sidecar": "0", "server_sidecar": "1", "app": "1"
    }  # fmt: skip


def test_a_single_pinning_is_the_same_node_layout_and_keeps_the_cross_node_default():
    flat = {"k6": "1", "client_sidecar": "0", "server_sidecar": "0", "app": "0"}
    exp = spec.parse({**BASE, "pinning": flat}, "x.yml")
    assert exp.pinning_for("same-node").model_dump() == flat
    assert exp.pinning_for("cross-node").server_sidecar == "1"
    per = spec.parse({**BASE, "pinning": {"cross-node": {"k6": "1"}}}, "x.yml")
    assert per.pinning_for("cross-node").k6 == "1"
    assert per.pinning_for("same-node").k6 == "0"


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"colour": "red"}, "x.yml: colour: unknown key"),
        ({"rounds": 0}, "x.yml: rounds: Input should be greater than or equal to 1"),
        ({"flood_sizes": ["50x"]}, "x.yml: flood_sizes[0]: '50x' is not a flood size"),
        ({"design": "shuffle"},
         "x.yml: design: Input should be 'rmit', 'abba', 'duet' or 'sequential'"),
        ({"arms": {"a": {"dataplane": "iptables"}}}, "x.yml: arms: needs at least 2 arms"),
        ({"arms": {"a": {"dataplane": "iptables"}, "b": {"dataplane": "bpf"}}},
         "x.yml: arms.b.dataplane: Input should be "
         "'no-mesh', 'iptables', 'ebpf' or 'ebpf-connect'"),
        ({"load_points": [{"name": "lp", "rate": 0, "duration_s": 10}]},
         "x.yml: load_points[0].rate: Input should be greater than 0"),
        ({"load_points": [{"name": "lp", "rate": 10, "duration_s": 10, "warmup_s": 10}]},
         "x.yml: load_points[0]: warmup_s (10) must be shorter than duration_s (10)"),
        ({"load_points": [{"name": "lp", "rate": 10, "duration_s": 10, "mode": "x"}]},
         "x.yml: load_points[0].mode: unknown key"),
        ({"gates": {"steal_mean_percent": -1}},
         "x.yml: gates.steal_mean_percent: Input should be greater than or equal to 0"),
        ({"placement": ["same-host"]},
         "x.yml: placement[0]: Input should be 'same-node' or 'cross-node'"),
        ({"placement": ["cross-node", "cross-node"]},
         "x.yml: placement: lists cross-node twice"),
        ({"placement": []}, "x.yml: placement: List should have at least 1 item"),
        ({"pinning": {"cross_node": {"k6": "0"}}},
         "x.yml: pinning.cross_node.[key]: Input should be 'same-node' or 'cross-node'"),
    ],
)  # fmt: skip
def test_bad_definitions_name_the_field(patch, expected):
    with pytest.raises(MeshlabError) as err:
        spec.parse({**BASE, **patch}, "x.yml")
    assert str(err.value).startswith(expected), str(err.value)


def test_duet_needs_exactly_two_arms():
    three = {**BASE["arms"], "c": {"dataplane": "ebpf-connect"}}
    with pytest.raises(MeshlabError, match="design duet runs exactly 2 arms"):
        spec.parse({**BASE, "design": "duet", "arms": three}, "x.yml")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(MeshlabError, match="no such experiment file"):
        spec.load(tmp_path / "nope.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("id: [unclosed\n")
    with pytest.raises(MeshlabError, match=r"bad\.yml: not valid YAML"):
        spec.load(bad)
    listy = tmp_path / "list.yml"
    listy.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(MeshlabError, match="expected a mapping"):
        spec.load(listy)


def test_spec_hash_is_stable_and_sensitive():
    a, b = spec.parse(BASE, "a"), spec.parse(dict(BASE), "b")
    assert a.spec_hash() == b.spec_hash()
    assert a.spec_hash() != spec.parse({**BASE, "rounds": 7}, "c").spec_hash()


def test_the_schema_names_exactly_the_metrics_the_analysis_compares() -> None:
    from typing import get_args

    from meshlab.analysis.loading.metrics import METRICS

    assert set(get_args(spec.Metric)) == {m.key for m in METRICS}


def test_an_adaptive_run_looks_every_few_rounds_up_to_its_rounds() -> None:
    data = yaml.safe_load((REPO / "experiments" / "default.yml").read_text())
    stop = {"half_width_percent": 1, "min_rounds": 8, "every": 3}
    exp = spec.parse({**data, "rounds": 13, "stop": stop}, "x")
    assert exp.looks() == [8, 11, 13]
    assert spec.parse(data, "x").looks() == [data["rounds"]]
    with pytest.raises(MeshlabError, match=r"stop.min_rounds \(14\) exceeds rounds \(13\)"):
        spec.parse({**data, "rounds": 13, "stop": {"half_width_percent": 1, "min_rounds": 14}}, "x")
    with pytest.raises(MeshlabError, match=r"stop.min_rounds \(6\) is too few"):
        spec.parse({**data, "rounds": 12, "stop": {"half_width_percent": 1, "min_rounds": 6}}, "x")


@pytest.mark.parametrize(
    ("primary", "fewest"),
    [
        (["latency_p50", "cpu_node_total", "cpu_sidecars"], 8),
        (
            [
                "latency_p50",
                "latency_p90",
                "latency_p99",
                "cpu_node_total",
                "cpu_sidecars",
                "cpu_app",
            ],
            9,
        ),
    ],
)
def test_an_adaptive_design_that_could_never_decide_is_refused(
    primary: list[str], fewest: int
) -> None:
    """Holm's first step asks p < alpha_look / k of the family's k metrics, and the exact test's
    smallest p at n rounds is 2/2^n: below ceil(log2(2k / alpha_look)) rounds no look decides.
    Issue 19: the family size was left out, so looks at 7 and 8 rounds passed for a family of 3
    (the smallest Holm-adjusted p at 7 rounds, 3 x 2/128 = 0.047, never reaches a look's level)."""
    data = {**BASE, "rounds": fewest + 1, "analysis": {"primary": primary}}
    stop = {"half_width_percent": 1, "every": 1}
    ok = spec.parse({**data, "stop": {**stop, "min_rounds": fewest}}, "x")
    assert ok.looks() == [fewest, fewest + 1]
    with pytest.raises(MeshlabError, match=rf"stop.min_rounds \({fewest - 1}\) is too few"):
        spec.parse({**data, "stop": {**stop, "min_rounds": fewest - 1}}, "x")
    # the default min_rounds suits the default family
    assert (
        spec.parse({**BASE, "rounds": 20, "stop": {"half_width_percent": 1}}, "x").looks()[0] == 8
    )
    # the smallest two-sided p at `fewest` rounds, times k, is under the level of a look
    k, alpha = len(primary), spec.look_alpha(len(ok.looks()))
    assert k * 2 / 2**fewest < alpha <= k * 2 / 2 ** (fewest - 1)


def test_a_recorded_run_judged_under_the_old_rule_still_loads(tmp_path: Path) -> None:
    """A definition is refused when it could never decide; a run already recorded with one
    (min_rounds 7 with three primaries passed before issue 19) still reads and reports."""
    from meshlab.record.rundir import RunDir
    from meshlab.synthetic import SyntheticSpec, write_run

    run_dir = write_run(tmp_path, SyntheticSpec(rounds=9))
    doc = json.loads((run_dir / "manifest.json").read_text())
    doc["experiment"]["stop"] = {"half_width_percent": 1, "min_rounds": 7, "every": 1}
    (run_dir / "manifest.json").write_text(json.dumps(doc))
    manifest = RunDir(run_dir).load_manifest()
    assert manifest.experiment.undecidable() is not None
    with pytest.raises(MeshlabError, match=r"stop.min_rounds \(7\) is too few"):
        spec.parse(manifest.experiment.canonical(), "again.yml")
