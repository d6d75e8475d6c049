"""The report's figures of verdicts and of the run over time: the forest of paired effects,
the effects per placement and flood, the flood sweep and the steal and CPU timeline (rendered
like every figure: figures.py's Agg objects to PNG bytes)."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from meshlab.analysis.loading.run import Run
from meshlab.analysis.loading.samples import Timeline
from meshlab.analysis.report.figures import (
    REJECTED,
    WIDTH,
    Figure_,
    colors,
    nan_if_none,
    png,
    thousands,
)  # fmt: skip
from meshlab.analysis.statistics import fmt
from meshlab.analysis.statistics.fmt import pct
from meshlab.analysis.statistics.results import Analysis, MetricResult

_KIND_COLOR = {"equivalent": "#2E7D32", "inconclusive": "#7F7F7F", "not-enough-rounds": "#BDBDBD"}


def forest(analysis: Analysis) -> Figure_:
    # one header row per pair set, then its metrics
    rows: list[tuple[str, MetricResult | None]] = []
    for c in analysis.comparisons:
        ps = c.pairs
        rows.append((ps.title, None))
        rows += [(f"{r.metric.label}  (n={r.n})", r) for r in c.results]
    m = analysis.run.margin_percent
    fig = Figure(figsize=(WIDTH, 1.3 + 0.3 * max(len(rows), 1)), layout="constrained")
    ax = fig.subplots()
    ax.axvspan(-m, m, color="#2E7D32", alpha=0.08)
    ax.axvline(0, color="black", lw=0.8)
    for i, (_label, r) in enumerate(rows):
        y = len(rows) - 1 - i
        if r is None:
            if i:  # a rule between pair sets
                ax.axhline(y + 0.5, color="#CCCCCC", lw=0.8)
            continue
        color = _KIND_COLOR.get(r.kind, "#1F4E9C")
        est = pct(r.estimate) if math.isfinite(r.estimate) else math.nan
        if r.ci95 is not None:
            ax.plot([pct(r.ci95[0]), pct(r.ci95[1])], [y, y], color=color, lw=2)
            ax.plot(est, y, "o", color=color, ms=6)
        else:
            ax.plot(est, y, "o", mfc="white", mec=color, ms=6)
            ax.annotate(
                f"n={r.n}: too few rounds for a CI at this level",
                (est, y),
                xytext=(8, -3),
                textcoords="offset points",
                fontsize=7,
                color="#555555",
            )
    ax.set_yticks(range(len(rows)), [label for label, _ in reversed(rows)], fontsize=8)
    for tick, (_label, r) in zip(ax.get_yticklabels(), reversed(rows), strict=True):
        if r is None:
            tick.set_fontweight("bold")
    ax.set_ylim(-0.7, len(rows) - 0.3)
    levels = fmt.ci_words(analysis.alpha_primary)
    ax.set_xlabel(f"change of arm vs baseline (%), with {levels} — negative: the arm is lower")
    ax.grid(axis="x", alpha=0.3)
    handles = [
        Line2D([], [], color=c, marker="o", lw=2, label=k)
        for k, c in (
            ("difference", "#1F4E9C"),
            ("no difference (equivalent)", _KIND_COLOR["equivalent"]),
            ("inconclusive", _KIND_COLOR["inconclusive"]),
        )
    ]
    handles.append(Patch(facecolor="#2E7D32", alpha=0.15, label=f"±{m:g} % equivalence margin"))
    ax.legend(
        handles=handles,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncols=4,
        fontsize=8,
        frameon=False,
    )
    return Figure_(
        "forest",
        "Paired ratios with confidence intervals",
        "Hodges-Lehmann estimate of the per-round paired ratio (arm ÷ baseline) with its exact "
        f"interval ({levels}; Walsh averages, signed-rank quantiles); the shaded band is the "
        "declared equivalence margin. Colour follows the verdict.",
        png(fig),
    )


# --- 4. steal and CPU timeline ------------------------------------------------------------------


def timeline(run: Run, lines: dict[str, Timeline | None]) -> Figure_:
    col = colors(run)
    fig = Figure(figsize=(WIDTH, 5.6), layout="constrained")
    ax_steal, ax_busy = fig.subplots(2, 1, sharex=True)
    starts = [t.started_at for t in run.trials if t.started_at is not None]
    t0 = min(starts) if starts else 0.0
    fallback = False
    for t in run.trials:
        if t.window is None:
            continue
        a, b = ((w - t0) / 60 for w in t.window)
        for ax in (ax_steal, ax_busy):
            ax.axvspan(
                a,
                b,
                color=REJECTED if not t.valid else col.get(t.arm, "grey"),
                alpha=0.28 if not t.valid else 0.12,
                lw=0,
                hatch="///" if not t.valid else None,
            )
        if not t.valid:
            ax_steal.plot(
                (a + b) / 2,
                1.02,
                "x",
                color=REJECTED,
                ms=6,
                mew=1.5,
                clip_on=False,
                transform=ax_steal.get_xaxis_transform(),
            )
        tl = lines.get(t.trial_id)
        if tl is not None and len(tl.t):
            x = (tl.t - t0) / 60
            ax_steal.plot(x, tl.steal, color="black", lw=0.7)
            ax_busy.plot(x, tl.busy, color="black", lw=0.7)
        else:  # no samples: the trial's own summary as a step
            fallback = True
            ax_steal.plot([a, b], [nan_if_none(t.steal_mean)] * 2, color="black", lw=1.2)
            ax_steal.plot((a + b) / 2, nan_if_none(t.steal_max), "v", color="black", ms=4)
            ax_busy.plot(
                [a, b],
                [nan_if_none(t.cpu_value("node_total", "max_percent"))] * 2,
                color="black",
                lw=1.2,
            )
    gates = (run.experiment.get("gates") or {}) if isinstance(run.experiment, dict) else {}
    for limit, style in (
        (gates.get("steal_mean_percent", 0.5), ":"),
        (gates.get("steal_max_percent", 5.0), "--"),
    ):
        if isinstance(limit, int | float):
            ax_steal.axhline(limit, color=REJECTED, ls=style, lw=0.8)
    ax_steal.set_ylabel("steal % (worst CPU)")
    ax_steal.set_ylim(bottom=0)
    ax_busy.set_ylabel("node CPU busy %")
    ax_busy.set_ylim(0, 100)
    ax_busy.set_xlabel("minutes since the first trial")
    for ax in (ax_steal, ax_busy):
        ax.grid(alpha=0.3)
    extra = [
        Patch(facecolor=REJECTED, alpha=0.3, hatch="///", label="rejected trial"),
        Line2D([], [], color=REJECTED, ls=":", label="steal gate: mean"),
        Line2D([], [], color=REJECTED, ls="--", label="steal gate: any second"),
        Line2D([], [], color=REJECTED, marker="x", ls="", label="rejected (marker)"),
    ]
    # below the plots: the rejected-trial markers sit on top of the steal axes
    handles = [Patch(facecolor=col[a], alpha=0.4, label=a) for a in run.arms] + extra
    fig.legend(
        handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False
    )
    note = (
        " Trials without sample files show their trial.json summary as a step."
        if (fallback)
        else ""
    )
    return Figure_(
        "timeline",
        "Steal and CPU across the run",
        "Per-second CPU steal of the worst CPU on any testbed host (top) and the busiest host's "
        "CPU use (bottom), from /proc/stat. Background: each trial, coloured by arm; hatched red: "
        "rejected trials, which never enter the statistics." + note,
        png(fig),
    )


# --- 5. latency CDF per arm --------------------------------------------------------------------


EFFECT_METRICS = ("latency_p50", "cpu_node_total", "cpu_sidecars")
_PLACEMENT_MARKER = {"same-node": "o", "cross-node": "s"}


def effects(analysis: Analysis) -> Figure_ | None:
    """The arm's effect (HL estimate, its CI) per placement and flood size, one panel per
    primary metric and load point: where does the advantage come from?"""
    run = analysis.run
    placements = {c.pairs.placement for c in analysis.comparisons}
    floods = [f for f in run.floods() if any(c.pairs.flood == f for c in analysis.comparisons)]
    if len(placements) < 2 and len(floods) < 2:
        return None
    lps = [
        lp
        for lp in run.load_points()
        if any(c.pairs.load_point == lp for c in analysis.comparisons)
    ]
    arms = [a for a in run.arms if any(c.pairs.arm == a for c in analysis.comparisons)]
    col = colors(run)
    m = run.margin_percent
    fig = Figure(figsize=(WIDTH, 0.8 + 2.6 * len(lps)), layout="constrained")
    axes = fig.subplots(len(lps), len(EFFECT_METRICS), squeeze=False)
    series = [(arm, p) for arm in arms for p in sorted(placements)]
    width = 0.6 / max(len(series), 1)
    for row, lp in zip(axes, lps, strict=True):
        for ax, key in zip(row, EFFECT_METRICS, strict=True):
            ax.axhspan(-m, m, color="#2E7D32", alpha=0.08)
            ax.axhline(0, color="black", lw=0.8)
            label = key
            for k, (arm, placement) in enumerate(series):
                for x, flood in enumerate(floods):
                    c = next(
                        (
                            c
                            for c in analysis.comparisons
                            if c.pairs.block == (lp, flood, placement) and c.pairs.arm == arm
                        ),
                        None,
                    )
                    r = c.result(key) if c else None
                    if r is None or not math.isfinite(r.estimate):
                        continue
                    label = r.metric.label
                    xs = x - 0.3 + width * (k + 0.5)
                    marker = _PLACEMENT_MARKER.get(placement, "D")
                    if r.ci95 is not None:
                        lo, hi = pct(r.ci95[0]), pct(r.ci95[1])
                        ax.plot([xs, xs], [lo, hi], color=col[arm], lw=2)
                        ax.plot(xs, pct(r.estimate), marker, color=col[arm], ms=6)
                    else:  # too few rounds for an interval: hollow marker, no bar
                        ax.plot(xs, pct(r.estimate), marker, mfc="white", mec=col[arm], ms=6)
            ax.set_xticks(range(len(floods)), [f"flood {f}" for f in floods], fontsize=8)
            ax.set_xlim(-0.6, len(floods) - 0.4)
            ax.set_ylabel("change vs baseline (%)", fontsize=8)
            ax.set_title(f"{lp}: {label}", fontsize=9, loc="left")
            ax.grid(axis="y", alpha=0.3)
    handles = [
        Line2D([], [], color=col[arm], marker=_PLACEMENT_MARKER.get(p, "D"), lw=2,
               label=f"{arm} · {p}")
        for arm, p in series
    ]  # fmt: skip
    handles.append(Patch(facecolor="#2E7D32", alpha=0.15, label=f"±{m:g} % margin"))
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), fontsize=8,
               frameon=False)  # fmt: skip
    return Figure_(
        "effects",
        "Effect per placement and flood size",
        "Hodges-Lehmann estimate of each arm's paired change against the baseline, with its exact "
        f"{fmt.level(analysis.alpha_primary)} interval, per placement (marker) and flood size; "
        "hollow markers have too few rounds for an interval. Same-node is where the eBPF bypass "
        "skips the sidecar-to-sidecar TCP path; across nodes only the app-sidecar hops can gain.",
        png(fig),
    )


def flood_sweep(run: Run) -> Figure_ | None:
    floods = [f for f in run.floods() if any(t.flood == f for t in run.valid_trials())]
    if len(floods) < 2:
        return None
    col = colors(run)
    lps = [lp for lp in run.load_points() if any(t.load_point == lp for t in run.valid_trials())]
    fig = Figure(figsize=(WIDTH, 0.6 + 3.0 * len(lps)), layout="constrained")
    axes = fig.subplots(len(lps), 2, squeeze=False)
    for row, lp in zip(axes, lps, strict=True):
        for ax, q in zip(row, ("p50", "p99"), strict=True):
            for arm in run.arms:
                xs, ys, lo, hi = [], [], [], []
                for f in floods:
                    ts = [
                        t
                        for t in run.valid_trials()
                        if t.arm == arm and t.load_point == lp and t.flood == f
                    ]
                    rules = [t.flood_rules for t in ts if t.flood_rules is not None]
                    if not ts or not rules:
                        continue
                    v = np.array([t.latency[q] for t in ts])
                    xs.append(float(np.median(rules)))
                    ys.append(float(np.median(v)))
                    lo.append(ys[-1] - float(np.percentile(v, 25)))
                    hi.append(float(np.percentile(v, 75)) - ys[-1])
                ax.errorbar(
                    xs, ys, yerr=[lo, hi], fmt="o-", color=col[arm], ms=4, capsize=3, label=arm
                )
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(thousands))
            ax.set_xlabel("iptables rules in the node (iptables-save lines)")
            ax.set_ylabel(f"{q} latency (ms)")
            ax.set_title(f"{lp}: {q} vs flood size", fontsize=10, loc="left")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
    return Figure_(
        "flood_sweep",
        "Flood-size sweep",
        "Median over rounds of each arm's per-trial p50 and p99 against the number of iptables "
        "rules the flood put in the node; bars span the inter-quartile range.",
        png(fig),
    )
