"""`meshlab export RUN_DIR --format smp|csv`: validated against the pinned SMP schema, and a round
trip of everything meshlab recorded (SMP fields recomputed from the run, the extension's
trial.json records equal to the run's)."""

from __future__ import annotations

import csv
import json
import statistics
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from meshlab.analysis.loading.run import load_run
from meshlab.analysis.statistics.analyse import analyse
from meshlab.cli import app
from meshlab.errors import MeshlabError
from meshlab.export import reader, smp
from meshlab.export.write import export
from meshlab.k6.results import read_latencies_ms
from meshlab.record.format import CPU_FIGURES, LATENCY_KEYS, dump
from meshlab.record.rundir import RunDir
from meshlab.synthetic import SyntheticSpec, write_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two floods, raw k6 output, a rejected-and-requeued trial, and a third arm whose every
    trial in one round is rejected without a requeue."""
    spec = SyntheticSpec(
        seed=8,
        rounds=6,
        arms=("iptables", "ebpf", "no-mesh"),
        effects={"ebpf": -0.04, "no-mesh": -0.3},
        floods=("off", "50x500"),
        samples_per_trial=400,
        reject=((2, "ebpf"), (3, "no-mesh")),
    )
    return write_run(tmp_path_factory.mktemp("export"), spec)


@pytest.fixture(scope="module")
def exported(run_dir: Path) -> list[reader.ExportedResult]:
    return reader.read_smp(export(run_dir, "smp"))


def _ts(msg) -> float:
    return msg.seconds + msg.nanos / 1e9


def test_one_validated_result_per_arm_and_block(
    run_dir: Path, exported: list[reader.ExportedResult]
) -> None:
    names = [r.name for r in exported]
    assert names == [
        f"1000rps.{flood}.same-node.{arm}"
        for flood in ("off", "50x500")
        for arm in ("iptables", "ebpf", "no-mesh")
    ]
    for r in exported:  # read_smp parsed each with ignore_unknown_fields=False
        assert set(r.messages) == set(smp.FILES)
        assert r.result.smp_version == "v0.6.1" and r.result.details_uri == "meshlab.json"
        assert r.result.test_id == r.messages["test-config.json"].id
        assert r.result.mesh_config_id == r.messages["mesh-config.json"].id
        assert r.result.env_id == r.messages["environment.json"].id
    index = json.loads((run_dir / "derived/export/smp/index.json").read_text())
    assert index["smp"]["tag"] == "v0.6.1" and index["skipped"] == []


def test_every_trial_record_survives_the_round_trip(
    run_dir: Path, exported: list[reader.ExportedResult]
) -> None:
    run = load_run(run_dir)
    seen = []
    for r in exported:
        arm, block = r.extension["arm"]["name"], tuple(r.name.split(".")[:3])
        expected = [t for t in run.trials if t.arm == arm and t.block == block]
        assert [x.trial_id for x in r.records] == [t.trial_id for t in expected]
        for rec, t in zip(r.records, expected, strict=True):
            assert dump(rec) == dump(t.dir.read_record()), t.trial_id
        seen += [x.trial_id for x in r.records]
    assert sorted(seen) == sorted(t.trial_id for t in run.trials)  # every trial, once


def test_smp_fields_are_the_documented_aggregates_of_the_rounds(
    run_dir: Path, exported: list[reader.ExportedResult]
) -> None:
    run = load_run(run_dir)
    for r in exported:
        arm, block = r.extension["arm"]["name"], tuple(r.name.split(".")[:3])
        valid = [t for t in run.valid_trials() if t.arm == arm and t.block == block]
        lat = r.result.latencies_ms
        assert lat.p50 == statistics.median(t.latency["p50"] for t in valid)
        assert lat.p90 == statistics.median(t.latency["p90"] for t in valid)
        assert lat.p99 == statistics.median(t.latency["p99"] for t in valid)
        assert lat.min == min(t.latency["min"] for t in valid)
        assert lat.max == max(t.latency["max"] for t in valid)
        weights = [t.requests for t in valid]
        mean = sum(t.latency["mean"] * w for t, w in zip(valid, weights, strict=True))
        assert lat.average == pytest.approx(mean / sum(weights), rel=1e-12)
        ext_lat = r.extension["latency_ms"]
        assert set(ext_lat) == set(LATENCY_KEYS)  # p99.9 and the rest SMP has no field for
        assert ext_lat["p999"] == statistics.median(t.latency["p999"] for t in valid)
        assert r.result.actual_qps == statistics.median(t.achieved_rate for t in valid)
        assert _ts(r.result.start_time) == pytest.approx(min(t.window[0] for t in valid), abs=1e-6)
        assert _ts(r.result.end_time) == pytest.approx(max(t.window[1] for t in valid), abs=1e-6)
        assert r.result.labels["meshlab.rounds_valid"] == str(len(valid))
        assert r.extension["rounds_valid"] == [t.round for t in valid]
        sidecar = r.messages["mesh-config.json"].sidecar
        seconds = sum(t.window[1] - t.window[0] for t in valid)
        used = sum(
            t.cpu_value("client_sidecar", "cpu_seconds")
            + t.cpu_value("server_sidecar", "cpu_seconds")
            for t in valid
        )
        if arm == "no-mesh":
            assert sidecar.count == 0 and not r.messages["mesh-config.json"].mtls_enabled
        else:
            assert sidecar.count == 2 and r.messages["mesh-config.json"].mtls_enabled
            assert sidecar.cpu_mcores == round(1000 * used / seconds)
        cpu = r.messages["node-cpu.json"]
        modes = (
            cpu.user + cpu.nice + cpu.system + cpu.idle + cpu.iowait + cpu.hardware_interrupt
            + cpu.software_interrupt + cpu.steal
        )  # fmt: skip
        assert modes == pytest.approx(100.0)
        busy = sum(t.node_seconds["busy"] for t in valid)
        assert cpu.cpu_mcores == round(1000 * busy / seconds)
        # trial.json keeps each CPU figure to 1 µs: the modes agree to that precision
        assert cpu.idle == pytest.approx(
            100 * (1 - busy / sum(t.node_seconds["elapsed"] for t in valid)), rel=1e-5
        )


def test_the_histogram_counts_every_raw_latency(
    run_dir: Path, exported: list[reader.ExportedResult]
) -> None:
    run = load_run(run_dir)
    for r in exported[:2]:
        hist = r.extension["latency_histogram"]
        ids = set(hist["trials"])
        raw = np.concatenate(
            [read_latencies_ms(t.dir.file(t.dir.K6_RAW)) for t in run.trials if t.trial_id in ids]
        )
        assert hist["count"] == raw.size == sum(b["count"] for b in hist["buckets"])
        median = float(np.median(raw))
        below = sum(b["count"] for b in hist["buckets"] if b["end_ms"] <= median)
        assert (
            below
            <= raw.size / 2
            <= below
            + next(b["count"] for b in hist["buckets"] if b["start_ms"] <= median < b["end_ms"])
        )


def test_pairing_intervals_and_verdicts_are_carried(
    run_dir: Path, exported: list[reader.ExportedResult]
) -> None:
    doc = analyse(load_run(run_dir)).to_dict()
    for r in exported:
        arm, block = r.extension["arm"]["name"], r.extension["block"]
        expected = [
            c
            for c in doc["comparisons"]
            if (c["load_point"], c["flood"], c["placement"])
            == (block["load_point"]["name"], block["flood"], block["placement"])
            and arm in (c["arm"], c["baseline"])
        ]
        got = r.extension["comparisons"]
        assert [(c["arm"], c["baseline"]) for c in got] == [
            (c["arm"], c["baseline"]) for c in expected
        ]
        for g, e in zip(got, expected, strict=True):
            assert g["metrics"] == e["metrics"]  # estimates, exact intervals, p, verdicts
            assert g["rounds_paired"] == e["rounds_paired"]
            assert [d["round"] for d in g["dropped"]] == [d["round"] for d in e["dropped"]]
            paired = {p["arm_trial"] for p in g["pairs"]} | {
                p["baseline_trial"] for p in g["pairs"]
            }
            assert all(
                t["paired"] for t in r.extension["trials"] if t["record"]["trial_id"] in paired
            )
    ebpf = next(r for r in exported if r.name == "1000rps.off.same-node.ebpf")
    rejected = [t for t in ebpf.extension["trials"] if t["record"]["status"] == "rejected"]
    assert len(rejected) == 1 and not rejected[0]["paired"]


def test_export_is_byte_identical_when_repeated(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, SyntheticSpec(seed=4, rounds=6))
    first = export(run_dir, "smp", tmp_path / "a")
    second = export(run_dir, "smp", tmp_path / "b")
    files = sorted(p.relative_to(first) for p in first.rglob("*.json"))
    assert files == sorted(p.relative_to(second) for p in second.rglob("*.json"))
    for f in files:
        a, b = (first / f).read_text(), (second / f).read_text()
        assert a == b, f
    assert export(run_dir, "csv", first) == first  # an earlier export is replaced, in place
    assert sorted(p.name for p in first.iterdir()) == [
        "1000rps.50x500.same-node.csv",
        "comparisons.csv",
        "index.json",
    ]


def test_csv_has_one_file_per_block_with_every_trial_exactly(run_dir: Path) -> None:
    out = export(run_dir, "csv")
    run = load_run(run_dir)
    assert sorted(p.name for p in out.glob("*.csv")) == [
        "1000rps.50x500.same-node.csv",
        "1000rps.off.same-node.csv",
        "comparisons.csv",
    ]
    for block in run.blocks():
        rows = list(csv.DictReader((out / (".".join(block) + ".csv")).open()))
        trials = [t for t in run.trials if t.block == block]
        assert [r["trial_id"] for r in rows] == [t.trial_id for t in trials]
        for row, t in zip(rows, trials, strict=True):
            for q in LATENCY_KEYS:
                assert float(row[f"latency_{q}_ms"]) == t.latency[q]
            for c in CPU_FIGURES:
                assert float(row[f"cpu_s_per_1000_{c}"]) == t.cpu_value(c, "per_1000_requests")
            assert row["paired"] == ("yes" if t.valid else "no")
            assert row["status"] == t.status
    comparisons = list(csv.DictReader((out / "comparisons.csv").open()))
    analysis = analyse(run)
    assert len(comparisons) == sum(len(c.results) for c in analysis.comparisons)
    first = analysis.comparisons[0].results[0].to_dict()
    assert float(comparisons[0]["ci95_low_percent"]) == first["ci95_percent"][0]


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(MeshlabError, match="unknown export format 'xml': expected one of smp, csv"):
        export(tmp_path, "xml")
    with pytest.raises(MeshlabError, match="not a meshlab run directory"):
        export(tmp_path, "smp")
    spec = SyntheticSpec(seed=2, rounds=1, reject=((1, "iptables"), (1, "ebpf")), requeue=False)
    dead = write_run(tmp_path / "dead", spec)
    with pytest.raises(
        MeshlabError, match=r"no valid trials to export \(2 recorded, all rejected\)"
    ):
        export(dead, "smp")
    run_dir = write_run(tmp_path / "ok", SyntheticSpec(seed=2, rounds=6))
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("not an export")
    with pytest.raises(MeshlabError, match="is not an earlier meshlab export"):
        export(run_dir, "csv", keep)
    assert (keep / "notes.txt").read_text() == "not an export"


def test_an_arm_without_valid_trials_in_a_block_is_listed_as_skipped(tmp_path: Path) -> None:
    spec = SyntheticSpec(seed=6, rounds=2, reject=((1, "ebpf"), (2, "ebpf")), requeue=False)
    out = export(write_run(tmp_path, spec), "smp")
    index = json.loads((out / "index.json").read_text())
    assert [r["arm"] for r in index["results"]] == ["iptables"]
    assert index["skipped"] == [
        {"arm": "ebpf", "block": "1000rps/50x500/same-node", "why": "no valid trial (2 rejected)"}
    ]


def test_cli_export_and_its_one_line_error(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, SyntheticSpec(seed=3, rounds=6))
    runner = CliRunner()
    ok = runner.invoke(app, ["export", str(run_dir), "--format", "csv"])
    assert ok.exit_code == 0 and ok.output.strip().endswith("derived/export/csv")
    bad = runner.invoke(app, ["export", str(run_dir), "--format", "yaml"])
    assert bad.exit_code == 2
    assert "meshlab: error: unknown export format 'yaml'" in bad.output


def test_timestamps_are_utc_rfc3339(exported: list[reader.ExportedResult], run_dir: Path) -> None:
    raw = json.loads(
        (run_dir / "derived/export/smp" / exported[0].name / "result.json").read_text()
    )
    start = datetime.fromisoformat(raw["start_time"].replace("Z", "+00:00"))
    assert start.tzinfo == UTC and raw["start_time"].endswith("Z")


def test_a_cloud_run_is_exported_as_istio_with_its_kubernetes_version(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, SyntheticSpec(seed=9, rounds=6))
    manifest = RunDir(run_dir).load_manifest()
    versions = {**manifest.versions, "istio": "1.29.2", "kubernetes": "1.35.1"}
    host = {**manifest.host, "testbed": "k8s"}
    RunDir(run_dir).save_manifest(manifest.model_copy(update={"versions": versions, "host": host}))
    (local,) = [r for r in reader.read_smp(export(run_dir, "smp")) if r.name.endswith("ebpf")]
    mesh = local.messages["mesh-config.json"]
    assert mesh.mesh_type.type == mesh.mesh_type.ISTIO and mesh.mesh_type.version == "1.29.2"
    assert mesh.mesh_build == "istio 1.29.2"
    assert local.messages["environment.json"].kubernetes_version == "1.35.1"


def test_a_local_run_does_not_claim_to_be_istio(exported: list[reader.ExportedResult]) -> None:
    mesh = exported[0].messages["mesh-config.json"]
    assert mesh.mesh_type.type == mesh.mesh_type.INVALID_MESH  # unset: none of SMP's types
    assert mesh.mesh_type.version == "envoy 1.40.0" and not mesh.mesh_build
    assert exported[0].messages["environment.json"].kubernetes_version == ""
