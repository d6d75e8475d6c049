"""meshlab compare: ratio of ratios between two runs of the same experiment."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from meshlab.analysis.loading.run import load_run
from meshlab.analysis.report.compare import compare, difference_of_effects
from meshlab.analysis.statistics.analyse import analyse
from meshlab.cli import app
from meshlab.errors import MeshlabError
from meshlab.synthetic import SyntheticSpec, write_run


def _run(root: Path, **kw: object) -> Path:
    spec = SyntheticSpec(**{"rounds": 12, "flood_effect": {}, **kw})
    return write_run(root, spec)


def _verdicts(text: str) -> dict[str, str]:
    """metric label -> verdict word, from the ratio table."""
    out = {}
    table = text.split("Difference of the effects", 1)[1]
    for line in table.splitlines():
        if line.startswith("ebpf vs iptables @ "):
            cols = [c for c in line.split("  ") if c.strip()]
            out[cols[1].strip()] = cols[-1].strip().split(":")[0]
    return out


def test_a_quieter_rerun_with_the_same_effect_agrees(tmp_path: Path) -> None:
    noisy = _run(tmp_path / "a", noise_seed=1, round_sd=0.02, trial_sd=0.008)
    quiet = _run(tmp_path / "b", noise_seed=2, round_sd=0.01, trial_sd=0.004)
    text = compare(noisy, quiet)
    verdicts = _verdicts(text)
    assert verdicts["p50"] == "agree" and verdicts["CPU node total"] == "agree"
    assert verdicts["CPU sidecars"] == "agree"
    assert "Noise side by side" in text and "CoV of p50, baseline" in text
    assert "Overall: 13 agree." in text


def test_runs_too_noisy_to_show_agreement_say_so(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", noise_seed=1, round_sd=0.08, trial_sd=0.03)
    b = _run(tmp_path / "b", noise_seed=2, round_sd=0.08, trial_sd=0.03)
    assert _verdicts(compare(a, b))["p50"] == "inconclusive"


def test_a_rerun_that_measured_the_opposite_effect_disagrees(tmp_path: Path) -> None:
    # the spec (experiment definition) is identical; the world is not
    # half the default trial noise: the CPU figures carry it too, and "agree" needs the
    # difference's whole interval inside ±2 pp
    a = _run(tmp_path / "a", noise_seed=1, effects={"ebpf": -0.03}, trial_sd=0.006)
    b = _run(tmp_path / "b", noise_seed=2, effects={"ebpf": 0.03}, trial_sd=0.006)
    text = compare(a, b)
    verdicts = _verdicts(text)
    assert verdicts["p50"] == "disagree" and verdicts["p90"] == "disagree"
    assert verdicts["CPU node total"] == "agree"  # CPU had no effect in either run


def test_ratio_of_ratios_ci_contains_the_true_difference(tmp_path: Path) -> None:
    a = analyse(
        load_run(_run(tmp_path / "a", noise_seed=3, effects={"ebpf": -0.03})), keep_boot=True
    )
    b = analyse(
        load_run(_run(tmp_path / "b", noise_seed=4, effects={"ebpf": -0.01})), keep_boot=True
    )
    ra, rb = (x.comparisons[0].result("latency_p50") for x in (a, b))
    diff, ci, word = difference_of_effects(ra, rb)
    truth = 100 * (0.99 - 0.97)
    assert ci is not None and ci[0] <= truth <= ci[1]
    assert diff == pytest.approx(100 * (math.expm1(rb.estimate) - math.expm1(ra.estimate)))
    assert word == "disagree"


def test_too_few_rounds_is_not_a_verdict(tmp_path: Path) -> None:
    text = compare(_run(tmp_path / "a", rounds=4), _run(tmp_path / "b", rounds=4, noise_seed=9))
    assert set(_verdicts(text).values()) == {"too few rounds"}


def test_different_specs_are_refused_with_the_reason(tmp_path: Path) -> None:
    a, b = _run(tmp_path / "a", rounds=12), _run(tmp_path / "b", rounds=10)
    with pytest.raises(MeshlabError) as err:
        compare(a, b)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(b))
    assert "spec hash" in msg and "experiment differs in: rounds" in msg and "--force" in msg
    forced = compare(a, b, force=True)
    assert "warning: spec hash" in forced and "Difference of the effects" in forced


def test_cli_compare_refusal_exits_2(tmp_path: Path) -> None:
    a, b = _run(tmp_path / "a", rounds=12), _run(tmp_path / "b", rounds=10)
    result = CliRunner().invoke(app, ["compare", str(a), str(b)])
    assert result.exit_code == 2 and "pass --force" in result.output
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "--force"])
    assert result.exit_code == 0 and "Overall:" in result.output


def test_bootstrap_replicates_are_kept_only_when_asked(tmp_path: Path) -> None:
    run = load_run(_run(tmp_path, rounds=6))
    assert analyse(run).comparisons[0].results[0].boot is None
    boot = analyse(run, keep_boot=True).comparisons[0].results[0].boot
    assert boot is not None and boot.shape == (10_000,) and np.isfinite(boot).all()


def test_a_rerun_on_another_image_digest_is_flagged(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", SyntheticSpec(rounds=6))
    b = write_run(tmp_path / "b", SyntheticSpec(rounds=6, noise_seed=9))
    for run_dir, digest in ((a, "sha256:" + "a" * 64), (b, "sha256:" + "b" * 64)):
        doc = json.loads((run_dir / "manifest.json").read_text())
        doc["images"] = {"merbridge": {"image": "ghcr.io/merbridge/merbridge", "tag": "0.8.1",
                                       "digest": digest}}  # fmt: skip
        (run_dir / "manifest.json").write_text(json.dumps(doc))
    text = compare(a, b)
    assert f"warning: images differ: merbridge 0.8.1 sha256:{'a' * 64} in A" in text
