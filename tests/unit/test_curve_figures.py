"""The sweep figure renders for a synthetic sweep: units on every axis, arms named and coloured as
in the report's other figures, the band named by its kind, hollow points where no interval
exists yet."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex

from meshlab.analysis.loading.run import load_run
from meshlab.analysis.report.curve_figures import draw_sweep, sweep_figure
from meshlab.analysis.report.figures import colors
from meshlab.analysis.statistics import curves
from meshlab.synthetic import SyntheticSpec, write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
UNIT = re.compile(r"\((req/s|ms|%)\)$|^CPU-seconds per 1,000 requests$")


def _run(tmp: Path, rounds: int):
    spec = SyntheticSpec(
        seed=12,
        rounds=rounds,
        arms=("iptables", "ebpf", "no-mesh"),
        effects={"ebpf": -0.05, "no-mesh": -0.3},
        load_points=(("200rps", 200), ("800rps", 800), ("1500rps", 1500)),
        floods=("off",),
    )
    return load_run(write_run(tmp, spec))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    return _run(tmp_path_factory.mktemp("sweep"), 8)


def test_it_renders_a_png_the_report_can_embed(run) -> None:
    s = curves.sweep(run, "off", "same-node")
    fig = sweep_figure(run, s)
    assert fig.png.startswith(PNG_MAGIC) and len(fig.png) > 50_000
    assert fig.name == "sweep_off_same-node" and "flood off, same-node" in fig.title
    assert "pointwise" in fig.caption and "exact 95 % band" in fig.caption


def test_every_axis_is_labelled_with_its_unit_and_arms_are_named_as_in_the_report(run) -> None:
    s = curves.sweep(run, "off", "same-node", band="simultaneous")
    fig = draw_sweep(run, s)
    axes = fig.axes
    assert len(axes) == 9
    for ax in axes:
        assert UNIT.search(ax.get_xlabel()), ax.get_xlabel()
        assert UNIT.search(ax.get_ylabel()), ax.get_ylabel()
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[:3] == ["iptables", "ebpf", "no-mesh"]
    assert "change vs iptables" in texts and "change vs no-mesh" in texts
    assert s.band_label in texts and "simultaneous" in s.band_label
    col = colors(run)
    for handle, arm in zip(legend.legend_handles[:3], run.arms, strict=True):
        assert to_hex(handle.get_color()) == to_hex(col[arm])
    bands = [c for ax in axes for c in ax.collections if isinstance(c, PolyCollection)]
    # a band per arm in five level panels, and per comparison in three change panels: all four
    # in p50 and node CPU, only ebpf vs iptables in the sidecars' CPU (no-mesh's sidecars idle)
    assert len(bands) == 3 * 5 + 4 + 4 + 1
    per_change_panel = {
        ax.get_title(loc="left"): len([c for c in ax.collections if isinstance(c, PolyCollection)])
        for ax in axes[6:]
    }
    assert sorted(per_change_panel.values()) == [1, 4, 4], per_change_panel
    (sidecars,) = [title for title, n in per_change_panel.items() if n == 1]
    assert "sidecar" in sidecars.lower(), per_change_panel


def test_points_without_an_interval_are_hollow_and_unbanded(tmp_path: Path) -> None:
    few = _run(tmp_path, 4)  # no exact 95 % interval below 6 rounds
    fig = draw_sweep(few, curves.sweep(few, "off", "same-node"))
    assert not [c for ax in fig.axes for c in ax.collections if isinstance(c, PolyCollection)]
    markers = [ln for ax in fig.axes[:2] for ln in ax.lines if ln.get_marker() == "o"]
    assert markers and all(ln.get_markerfacecolor() == "white" for ln in markers)
