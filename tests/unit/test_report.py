"""meshlab.analysis.report.report.build: derived/ contents, partial runs and bad input."""

from __future__ import annotations

import base64
import csv
import json
import re
from collections.abc import Callable
from html import escape as html_escape
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meshlab.analysis.report.report import build
from meshlab.cli import app
from meshlab.errors import MeshlabError
from meshlab.record.rundir import TrialDir
from meshlab.synthetic import SyntheticSpec, write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Raw k6 output, samples, two floods, a rejected-and-requeued trial."""
    spec = SyntheticSpec(
        seed=21, rounds=8, samples_per_trial=3000, floods=("off", "50x500"), reject=((2, "ebpf"),)
    )
    run_dir = write_run(tmp_path_factory.mktemp("full"), spec)
    build(run_dir)
    return run_dir


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"src='data:image/png;base64,([^']+)'", html)]


def test_derived_holds_every_artefact(full_run: Path) -> None:
    derived = full_run / "derived"
    for name in ("trials.csv", "pairs.csv", "stats.json", "summary.md", "report.html"):
        assert (derived / name).stat().st_size > 0, name
    figures = sorted(p.stem for p in (derived / "figures").glob("*.png"))
    assert figures == [
        "cdf",
        "cpu",
        "effects",
        "flood_sweep",
        "forest",
        "latency_boxes",
        "thesis_spread",
        "timeline",
    ]


def test_report_html_is_self_contained_with_every_figure_embedded(full_run: Path) -> None:
    html = (full_run / "derived" / "report.html").read_text()
    images = _images(html)
    assert len(images) == 8 and all(img.startswith(PNG_MAGIC) for img in images)
    assert html.count("<img") == len(images)
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", html), "external resource"
    assert "<table id='verdicts'>" in html and "Against the thesis" in html
    assert "ebpf has " in html and "% lower p50 latency (95 % CI " in html
    assert "<table id='tails'>" in html and "<table id='cpu-accounting'>" in html


def test_trials_csv_has_one_row_per_trial_including_rejected(full_run: Path) -> None:
    rows = list(csv.DictReader((full_run / "derived" / "trials.csv").open()))
    assert len(rows) == 2 * 8 * 2 + 2  # arms x rounds x floods + the rejected attempt per flood
    rejected = [r for r in rows if r["status"] == "rejected"]
    assert {r["arm"] for r in rejected} == {"ebpf"} and all(r["round"] == "2" for r in rejected)
    assert "steal_mean_percent 10.0 exceeds 0.5" in rejected[0]["rejection_reasons"]
    for col in (
        "latency_p50_ms",
        "latency_p999_ms",
        "cpu_s_per_1000_node_total",
        "cpu_s_per_1000_client_sidecar",
        "node_max_cpu_percent",
        "steal_max_percent",
    ):
        assert all(r[col] for r in rows), col


def test_pairs_csv_pairs_valid_trials_only(full_run: Path) -> None:
    rows = list(csv.DictReader((full_run / "derived" / "pairs.csv").open()))
    assert len(rows) == 8 * 2  # rounds x floods
    ids = {r["baseline_trial"] for r in rows} | {r["arm_trial"] for r in rows}
    trials = {
        p.name: json.loads((p / "trial.json").read_text()) for p in (full_run / "trials").iterdir()
    }
    assert all(trials[i]["status"] == "valid" for i in ids)
    assert all(float(r["log_ratio_latency_p50"]) < 0 for r in rows)  # ebpf faster, every round


def test_stats_json_is_deterministic_across_rebuilds(full_run: Path) -> None:
    first = (full_run / "derived" / "stats.json").read_text()
    build(full_run)
    assert (full_run / "derived" / "stats.json").read_text() == first
    doc = json.loads(first)
    assert doc["baseline"] == "iptables" and doc["margin_percent"] == 2.0
    assert [c["flood"] for c in doc["comparisons"]] == ["off", "50x500"]
    p50 = doc["comparisons"][1]["metrics"][0]
    assert p50["metric"] == "latency_p50" and p50["family"] == "primary"
    assert p50["holm_family_size"] == 3 and 0.95 <= p50["ci95_confidence"] < 0.99
    assert p50["ci95_percent"][0] < p50["estimate_percent"] < p50["ci95_percent"][1] < 0


def test_each_placement_is_its_own_comparison_and_the_thesis_row_says_same_node(
    tmp_path: Path,
) -> None:
    """Placements are blocks: each gets its own paired comparison, titled with it, and the
    effects figure; the thesis' row names the placement the thesis measured (its own text)."""
    spec = SyntheticSpec(
        seed=5,
        rounds=8,
        floods=("50x500",),
        placements=("cross-node", "same-node"),
        placement_effects={"same-node": {"ebpf": -0.20}, "cross-node": {"ebpf": -0.03}},
    )
    run_dir = write_run(tmp_path, spec)
    build(run_dir)
    doc = json.loads((run_dir / "derived" / "stats.json").read_text())
    by_placement = {c["placement"]: c for c in doc["comparisons"]}
    assert set(by_placement) == {"cross-node", "same-node"}
    p50 = {
        p: next(m for m in c["metrics"] if m["metric"] == "latency_p50")
        for p, c in by_placement.items()
    }
    assert -25 < p50["same-node"]["estimate_percent"] < -15
    assert -12 < p50["cross-node"]["estimate_percent"] < 3
    # the same-node effect's interval excludes the cross-node estimate: two different answers
    assert p50["same-node"]["ci95_percent"][1] < p50["cross-node"]["estimate_percent"]
    html = (run_dir / "derived" / "report.html").read_text()
    assert "ebpf vs iptables · 1000rps · flood 50x500 · same-node" in html
    assert "ebpf vs iptables · 1000rps · flood 50x500 · cross-node" in html
    assert "Effect per placement and flood size" in html
    assert "all published runs · same-node" in html
    assert (run_dir / "derived" / "figures" / "effects.png").stat().st_size > 0


def test_three_arms_compare_each_with_the_baseline(tmp_path: Path) -> None:
    spec = SyntheticSpec(
        arms=("iptables", "ebpf", "ebpf-tuned"),
        rounds=6,
        effects={"ebpf": -0.03, "ebpf-tuned": -0.06},
    )
    run_dir = write_run(tmp_path, spec)
    build(run_dir)
    doc = json.loads((run_dir / "derived" / "stats.json").read_text())
    assert [(c["arm"], c["baseline"]) for c in doc["comparisons"]] == [
        ("ebpf", "iptables"),
        ("ebpf-tuned", "iptables"),
    ]


def test_duet_runs_do_not_compare_the_shared_node_total(tmp_path: Path) -> None:
    """Duet partners run on one node at once: their node totals are one number, not a result."""
    for design, expected in (("duet", False), ("rmit", True)):
        run_dir = write_run(tmp_path / design, SyntheticSpec(rounds=6, design=design))
        build(run_dir)
        doc = json.loads((run_dir / "derived" / "stats.json").read_text())
        keys = {m["metric"] for c in doc["comparisons"] for m in c["metrics"]}
        assert ("cpu_node_total" in keys) is expected
        assert "cpu_client_sidecar" in keys


def test_declared_margin_and_fallbacks_without_raw_files(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, SyntheticSpec(rounds=7, margin_percent=5.0, effects={}))
    for trial in (run_dir / "trials").iterdir():  # a run copied without its raw files
        (trial / TrialDir.K6_RAW).unlink()
        (trial / TrialDir.PROC_STAT).unlink()
    html = build(run_dir).read_text()
    assert "±5 %" in html
    assert "no raw k6 output, so the medians of the trials" in html  # CDF from summaries
    assert "trial.json summary as a step" in html  # timeline without proc-stat samples


def test_partial_run_reports_what_is_complete_and_says_so(tmp_path: Path) -> None:
    spec = SyntheticSpec(rounds=8, stop_after=11, in_progress=True, status="interrupted")
    run_dir = write_run(tmp_path, spec)
    html = build(run_dir).read_text()
    assert "<b>Partial run.</b>" in html and "Run status is &#39;interrupted&#39;" in html
    assert "11 of 16 planned trials are recorded; 5 are missing." in html
    assert "no trial.json yet" in html
    doc = json.loads((run_dir / "derived" / "stats.json").read_text())
    assert doc["run"]["partial"] is True
    assert doc["comparisons"][0]["rounds_paired"] == 5
    md = (run_dir / "derived" / "summary.md").read_text()
    assert "**Partial run.**" in md


def test_fewer_than_six_rounds_says_not_enough_rounds(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, SyntheticSpec(rounds=4))
    html = build(run_dir).read_text()
    assert (
        "not enough rounds for p50 latency: 4 valid pairs, at least 6 needed before any CI" in html
    )
    p50 = json.loads((run_dir / "derived" / "stats.json").read_text())["comparisons"][0]["metrics"][
        0
    ]
    # no interval, no test, and no MDE from a spread of 4 rounds
    assert p50["ci95_percent"] is None and p50["wilcoxon_p"] is None and p50["mde_percent"] is None


# --- bad input: one line, naming the path and the problem ---------------------------------------


def _one_line_error(run_dir: Path, match: str) -> str:
    with pytest.raises(MeshlabError) as err:
        build(run_dir)
    msg = str(err.value)
    assert "\n" not in msg and re.search(match, msg), msg
    return msg


def test_missing_directory(tmp_path: Path) -> None:
    _one_line_error(tmp_path / "nope", r"nope: not a directory")


def test_no_manifest(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    _one_line_error(tmp_path / "run", r"run/manifest.json: missing — .* not a meshlab run")


def test_half_written_manifest(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, SyntheticSpec(rounds=2))
    text = (run_dir / "manifest.json").read_text()
    (run_dir / "manifest.json").write_text(text[: len(text) // 2])
    _one_line_error(run_dir, r"manifest.json: not valid JSON at line \d+ column \d+ \(half-written")


def test_manifest_without_plan(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, SyntheticSpec(rounds=2))
    doc = json.loads((run_dir / "manifest.json").read_text())
    del doc["plan"]
    (run_dir / "manifest.json").write_text(json.dumps(doc))
    _one_line_error(run_dir, r"manifest.json: plan: required field is missing")


def test_unknown_schema_version(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, SyntheticSpec(rounds=2))
    doc = json.loads((run_dir / "manifest.json").read_text())
    doc["schema_version"] = 9
    (run_dir / "manifest.json").write_text(json.dumps(doc))
    _one_line_error(
        run_dir, r"manifest.json: schema_version 9 is not supported \(this meshlab reads 1, 2, 3\)"
    )


def test_half_written_trial(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, SyntheticSpec(rounds=2))
    trial = sorted((run_dir / "trials").iterdir())[1] / "trial.json"
    trial.write_text(trial.read_text()[:100])
    msg = _one_line_error(run_dir, r"trial.json: not valid JSON")
    assert str(trial) in msg


def test_valid_trial_without_latency_summary(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, SyntheticSpec(rounds=2))
    trial = sorted((run_dir / "trials").iterdir())[0] / "trial.json"
    doc = json.loads(trial.read_text())
    del doc["summary"]["latency_ms"]["p99"]
    trial.write_text(json.dumps(doc))
    _one_line_error(run_dir, r"trial.json: .*a valid trial lacks summary.latency_ms p99")


def test_run_with_nothing_finished(tmp_path: Path) -> None:
    spec = SyntheticSpec(rounds=3, stop_after=0, status="running")
    run_dir = write_run(tmp_path, spec)
    _one_line_error(run_dir, r"no finished trials yet \(status running, 6 planned\)")


def test_cli_prints_the_error_as_one_line_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    result = CliRunner().invoke(app, ["report", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert (
        result.output.startswith("meshlab: error: ") and "manifest.json: missing" in result.output
    )


def test_cli_builds_and_prints_the_report_path(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, SyntheticSpec(rounds=6))
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"report: {run_dir / 'derived' / 'report.html'}"


def _edit_manifest(run_dir: Path, edit: Callable[[dict], object]) -> None:
    doc = json.loads((run_dir / "manifest.json").read_text())
    edit(doc)
    (run_dir / "manifest.json").write_text(json.dumps(doc))


def test_the_primary_family_comes_from_the_experiment(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, SyntheticSpec(rounds=6))
    _edit_manifest(run_dir, lambda d: d["experiment"]["analysis"].update(primary=["cpu_app"]))
    build(run_dir)
    doc = json.loads((run_dir / "derived" / "stats.json").read_text())
    families = {m["metric"]: m["family"] for m in doc["comparisons"][0]["metrics"]}
    assert doc["primary"] == ["cpu_app"]
    assert families["cpu_app"] == "primary" and families["latency_p50"] == "exploratory"
    sizes = {m["family"]: m["holm_family_size"] for m in doc["comparisons"][0]["metrics"]}
    assert sizes == {"primary": 1, "exploratory": len(families) - 1}


def test_a_schema_1_primary_metric_still_reads(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, SyntheticSpec(rounds=6))

    def old(d: dict) -> None:
        d["experiment"]["analysis"] = {"equivalence_margin_percent": 2, "primary_metric": "cpu"}

    _edit_manifest(run_dir, old)
    build(run_dir)
    assert json.loads((run_dir / "derived" / "stats.json").read_text())["primary"] == [
        "cpu_node_total"
    ]


def test_unknown_primary_metric(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, SyntheticSpec(rounds=2))
    _edit_manifest(run_dir, lambda d: d["experiment"]["analysis"].update(primary=["p42"]))
    _one_line_error(run_dir, r"experiment.analysis.primary\[0\]: Input should be 'latency_p50'")


UNFIT = "environment unfit after 10.2 min of waiting and re-runs (budget 10 min): steal 3 % > 0.5 %"


def test_an_unfit_run_says_why_in_the_report(tmp_path: Path) -> None:
    rejects = tuple((r, "ebpf") for r in range(1, 5))
    spec = SyntheticSpec(rounds=6, reject=rejects, status="environment-unfit", outcome=UNFIT)
    run_dir = write_run(tmp_path, spec)
    html = build(run_dir).read_text()
    expected = f"<b>Environment unfit.</b> The run ended {UNFIT}. 4 trials were rejected by the"
    assert (
        html_escape(expected, quote=False).replace("&lt;b&gt;", "<b>").replace("&lt;/b&gt;", "</b>")
        in html
    )
    assert json.loads((run_dir / "derived" / "stats.json").read_text())["environment_unfit"]
    # rejections alone (the budget not spent) do not make a run unfit
    fine = write_run(tmp_path / "b", SyntheticSpec(rounds=6, reject=rejects))
    assert "Environment unfit" not in build(fine).read_text()


def test_a_run_whose_every_trial_was_rejected_still_reports(tmp_path: Path) -> None:
    rejects = tuple((r, arm) for r in (1, 2) for arm in ("iptables", "ebpf"))
    spec = SyntheticSpec(
        rounds=2, reject=rejects, requeue=False, status="environment-unfit", outcome=UNFIT
    )
    html = build(write_run(tmp_path, spec)).read_text()
    expected = f"The run ended {html_escape(UNFIT, quote=False)}. 4 trials were rejected by the"
    assert expected in html


def test_the_holm_label_counts_the_metrics_that_entered_the_family(tmp_path: Path) -> None:
    """Issue 19: "(Holm, 3)" was printed beside a p adjusted over 2 when a primary metric had too
    few rounds for a test of its own."""
    run_dir = write_run(tmp_path, SyntheticSpec(seed=4, rounds=8))
    primary = ["latency_p50", "cpu_node_total", "server_sidecar_p50"]
    _edit_manifest(run_dir, lambda d: d["experiment"]["analysis"].update(primary=primary))
    for tdir in (run_dir / "trials").iterdir():
        doc = json.loads((tdir / "trial.json").read_text())
        if doc["round"] <= 3:  # the sidecar's own p50 lost in 3 of 8 rounds: 5 pairs, no test
            doc["sidecar_latency_ms"].pop("server")
            (tdir / "trial.json").write_text(json.dumps(doc))
    build(run_dir)
    doc = json.loads((run_dir / "derived" / "stats.json").read_text())
    rows = {m["metric"]: m for m in doc["comparisons"][0]["metrics"] if m["family"] == "primary"}
    assert rows["server_sidecar_p50"]["n"] == 5 and rows["server_sidecar_p50"]["p_adjusted"] is None
    assert {rows[k]["holm_family_size"] for k in ("latency_p50", "cpu_node_total")} == {2}
    p = sorted(rows[k]["wilcoxon_p"] for k in ("latency_p50", "cpu_node_total"))
    assert rows["latency_p50"]["p_adjusted"] <= max(2 * p[0], p[1]) + 1e-12
    summary = (run_dir / "derived" / "summary.md").read_text()
    assert "(Holm, 2)" in summary and "(Holm, 3)" not in summary
