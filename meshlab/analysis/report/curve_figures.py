"""The sweep figure: CPU per 1,000 requests and latency against the rate, per arm with its
band, and the paired changes between arms as curves with theirs
(meshlab.analysis.statistics.curves).

Arms are coloured and named as in every other report figure (figures.colors). A point whose
interval cannot be computed yet (too few rounds at the band's level) is drawn hollow, without
a band. The report embeds one per swept (flood, placement) as
`figures/sweep_<flood>_<placement>.png`; derived/curves.json holds the same numbers.
"""

from __future__ import annotations

import io

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from meshlab.analysis.loading.run import Run
from meshlab.analysis.report.figures import DPI, WIDTH, Figure_, colors
from meshlab.analysis.statistics.curves import ChangeCurve, LevelCurve, Sweep

CPU_PANELS = (
    ("cpu_node_total", "node total"),
    ("cpu_client_sidecar", "client sidecar"),
    ("cpu_server_sidecar", "server sidecar"),
)
LATENCY_PANELS = (("latency_p50", "p50"), ("latency_p99", "p99"))
CHANGE_PANELS = (
    ("cpu_node_total", "node CPU per request"),
    ("cpu_sidecars", "sidecars' CPU per request"),
    ("latency_p50", "p50 latency"),
)
# the change against the baseline drawn solid, against any other reference (no-mesh) dashed
_REF_STYLE = ("-", "--", ":", "-.")


def _level(ax: Axes, curve: LevelCurve, color: str, x_achieved: bool) -> None:
    pts = [p for p in curve.points if p.estimate is not None]
    xs = [(p.achieved_rate or p.rate) if x_achieved else p.rate for p in pts]
    ax.plot(xs, [p.estimate for p in pts], "-", color=color, lw=1.5)
    banded = [(x, p) for x, p in zip(xs, pts, strict=True) if p.ci is not None]
    if banded:
        ax.fill_between(
            [x for x, _ in banded],
            [p.ci[0] for _, p in banded],  # type: ignore[index]
            [p.ci[1] for _, p in banded],  # type: ignore[index]
            color=color,
            alpha=0.2,
            lw=0,
        )
    for x, p in zip(xs, pts, strict=True):
        hollow = p.ci is None
        ax.plot(x, p.estimate, "o", ms=5, color=color, mfc="white" if hollow else color)


def _change(ax: Axes, curve: ChangeCurve, color: str, style: str) -> None:
    pts = [p for p in curve.points if p.percent is not None]
    xs = [p.rate for p in pts]
    ax.plot(xs, [p.percent for p in pts], style, color=color, lw=1.5)
    banded = [p for p in pts if p.ci_percent is not None]
    if banded:
        ax.fill_between(
            [p.rate for p in banded],
            [p.ci_percent[0] for p in banded],  # type: ignore[index]
            [p.ci_percent[1] for p in banded],  # type: ignore[index]
            color=color,
            alpha=0.15,
            lw=0,
        )
    for p in pts:
        ax.plot(
            p.rate, p.percent, "o", ms=5, color=color,
            mfc="white" if p.ci_percent is None else color,
        )  # fmt: skip


def _rate_ticks(ax: Axes, sweep: Sweep) -> None:
    ax.set_xticks([r for _, r in sweep.load_points], [f"{r:g}" for _, r in sweep.load_points])
    ax.grid(alpha=0.3)


def draw_sweep(run: Run, sweep: Sweep) -> Figure:
    """The matplotlib figure (three rows: CPU levels, latency levels and achieved rate,
    paired changes)."""
    col = colors(run)
    fig = Figure(figsize=(WIDTH, 11.0), layout="constrained")
    axes = fig.subplots(3, 3)
    for ax, (key, label) in zip(axes[0], CPU_PANELS, strict=True):
        for arm in run.arms:
            curve = sweep.level(arm, key)
            if curve is not None:
                _level(ax, curve, col[arm], x_achieved=True)
        ax.set_title(f"{label}: CPU per 1,000 requests", fontsize=10, loc="left")
        ax.set_xlabel("achieved rate (req/s)")
        ax.set_ylabel("CPU-seconds per 1,000 requests")
        ax.grid(alpha=0.3)
    for ax, (key, label) in zip(axes[1][:2], LATENCY_PANELS, strict=True):
        for arm in run.arms:
            curve = sweep.level(arm, key)
            if curve is not None:
                _level(ax, curve, col[arm], x_achieved=False)
        ax.set_title(f"{label} latency", fontsize=10, loc="left")
        ax.set_xlabel("offered rate (req/s)")
        ax.set_ylabel(f"{label} latency (ms)")
        _rate_ticks(ax, sweep)
    ax = axes[1][2]
    top = max((r for _, r in sweep.load_points), default=1.0)
    ax.plot([0, top], [0, top], ":", color="grey", lw=1, label="schedule kept")
    for i, arm in enumerate(run.arms):
        curve = sweep.level(arm, "latency_p50") or next(
            (c for c in sweep.levels if c.arm == arm), None
        )
        if curve is not None:  # shrinking markers: arms that all kept the schedule stay visible
            pts = [p for p in curve.points if p.achieved_rate is not None]
            ax.plot(
                [p.rate for p in pts], [p.achieved_rate for p in pts], "o-", color=col[arm],
                ms=max(3, 9 - 2 * i), lw=1.2,
            )  # fmt: skip
    ax.set_title("achieved vs offered rate (median over rounds)", fontsize=10, loc="left")
    ax.set_xlabel("offered rate (req/s)")
    ax.set_ylabel("achieved rate (req/s)")
    _rate_ticks(ax, sweep)
    refs = list(dict.fromkeys(c.baseline for c in sweep.changes))
    for ax, (key, label) in zip(axes[2], CHANGE_PANELS, strict=True):
        ax.axhline(0, color="black", lw=0.8)
        for c in sweep.changes:
            if c.metric.key == key:
                style = _REF_STYLE[refs.index(c.baseline) % len(_REF_STYLE)]
                _change(ax, c, col.get(c.arm, "grey"), style)
        ax.set_title(f"paired change in {label}", fontsize=10, loc="left")
        ax.set_xlabel("offered rate (req/s)")
        ax.set_ylabel("change of arm vs reference (%)")
        _rate_ticks(ax, sweep)
    handles = [Line2D([], [], color=col[a], marker="o", lw=1.5, label=a) for a in run.arms]
    handles += [
        Line2D([], [], color="black", ls=_REF_STYLE[i % len(_REF_STYLE)], label=f"change vs {r}")
        for i, r in enumerate(refs)
    ]
    handles.append(Line2D([], [], color="grey", lw=6, alpha=0.3, label=sweep.band_label))
    handles.append(Line2D([], [], color="grey", marker="o", mfc="white", ls="", label="no CI yet"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 7), fontsize=8)
    fig.suptitle(
        f"Across load: flood {sweep.flood}, {sweep.placement}", fontsize=11, x=0.01, ha="left"
    )
    return fig


def sweep_figure(run: Run, sweep: Sweep) -> Figure_:
    """The sweep figure as the report embeds figures (PNG bytes, title, caption)."""
    fig = draw_sweep(run, sweep)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    conf = f"{100 * sweep.confidence:g} %"
    kind = (
        "pointwise: each rate's interval holds on its own"
        if sweep.band == "pointwise"
        else f"simultaneous: the whole curve, Bonferroni over {len(sweep.load_points)} rates"
    )
    return Figure_(
        f"sweep_{sweep.flood}_{sweep.placement}".replace(" ", "_"),
        f"Across load: flood {sweep.flood}, {sweep.placement}",
        "Top: each arm's CPU-seconds per 1,000 requests against its achieved rate (median over "
        "rounds); middle: p50 and p99 latency against the offered rate, and the achieved rate "
        "(on the dotted line the open-model schedule was kept). Lines: Hodges-Lehmann estimates "
        f"over the valid rounds; shaded: exact {conf} intervals over rounds (not paired: they "
        "carry the drift every arm shares). Bottom: the paired change of each arm against the "
        f"baseline (solid) and against no-mesh (dashed) where it ran, with its exact {conf} "
        f"band ({kind}). Hollow points: too few rounds for an interval at that level.",
        buf.getvalue(),
    )
