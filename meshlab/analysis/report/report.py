"""`meshlab report RUN_DIR`: (re)build RUN_DIR/derived/ from the raw run records."""

from __future__ import annotations

import json
from pathlib import Path

from meshlab.analysis.loading.latencies import pool_latencies
from meshlab.analysis.loading.run import Run, load_run
from meshlab.analysis.loading.samples import read_proc_stat
from meshlab.analysis.report import figures as figs
from meshlab.analysis.report import page, sections, tables, thesis, verdict_figures
from meshlab.analysis.report.curve_figures import sweep_figure
from meshlab.analysis.statistics import reproduce
from meshlab.analysis.statistics.analyse import analyse
from meshlab.analysis.statistics.curves import sweeps
from meshlab.analysis.statistics.results import Analysis
from meshlab.core import atomic
from meshlab.errors import MeshlabError


def build(run_dir: Path) -> Path:
    """Write trials.csv, pairs.csv, stats.json, curves.json (a sweep or saturation search only),
    figures/*.png, summary.md and report.html.

    Returns the report.html path. Raises MeshlabError for runs that cannot be read.
    """
    run = load_run(run_dir)
    analysis = analyse(run)
    derived = Path(run_dir) / "derived"
    try:
        derived.mkdir(exist_ok=True)
    except OSError as err:
        raise MeshlabError(f"{derived}: cannot create ({err.strerror or err})") from err
    atomic.write_text(derived / "trials.csv", tables.trials_csv(run))
    atomic.write_text(derived / "pairs.csv", tables.pairs_csv(analysis))
    atomic.write_text(derived / "stats.json", json.dumps(analysis.to_dict(), indent=1) + "\n")
    curves = curve_data(analysis)
    if curves is not None:
        atomic.write_text(derived / "curves.json", json.dumps(curves, indent=1) + "\n")
    else:
        (derived / "curves.json").unlink(missing_ok=True)

    pools, notes = pool_latencies(run)
    thesis_rows = thesis.spreads(run)
    figures = render_figures(analysis, pools, thesis_rows)
    fig_dir = derived / "figures"
    fig_dir.mkdir(exist_ok=True)
    for stale in fig_dir.glob("*.png"):  # a figure that no longer applies must not linger
        stale.unlink()
    for f in figures:
        atomic.write_bytes(fig_dir / f"{f.name}.png", f.png)

    source = str(thesis.facts().get("source", ""))
    ctx = page.context(analysis, figures, thesis_rows, source, notes, reproduce.siblings(run))
    atomic.write_text(derived / "summary.md", page.render_md(ctx))
    out = derived / "report.html"
    atomic.write_text(out, page.render_html(ctx))
    return out


def curve_data(analysis: Analysis) -> dict | None:
    """The sweep curves and saturation points as data (what the sweep figure and the
    saturation table draw), or None when the run has neither."""
    found = [s.to_dict() for s in sweeps(analysis.run)]
    saturation = sections.saturation(analysis)
    if not found and saturation is None:
        return None
    return {"sweeps": found, "saturation": saturation}


def render_figures(
    analysis: Analysis, pools: figs.LatencyPools, thesis_rows: list[thesis.SpreadRow]
) -> list[figs.Figure_]:
    run = analysis.run
    # Figures per (load point, flood) block need at least one valid trial in it.
    has_cells = bool(figs.blocks(run))
    out = [figs.latency_boxes(run), figs.cpu(run)] if has_cells else []
    out.append(verdict_figures.forest(analysis))
    effects = verdict_figures.effects(analysis)  # several placements or flood sizes
    if effects is not None:
        out.append(effects)
    out.append(verdict_figures.timeline(run, _timelines(run)))
    # across load: CPU per 1,000 requests and latency against the rate, with bands (issue 23)
    out += [sweep_figure(run, s) for s in sweeps(run)]
    if has_cells:
        out.append(figs.cdf(run, pools))
    sweep = verdict_figures.flood_sweep(run)
    if sweep is not None:
        out.append(sweep)
    out.append(figs.thesis_spread(run, thesis_rows))
    return out


def _timelines(run: Run) -> dict:
    return {t.trial_id: read_proc_stat(t.dir.file(t.dir.PROC_STAT)) for t in run.trials}
