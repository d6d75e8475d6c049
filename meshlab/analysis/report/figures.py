"""The report's figures, rendered with matplotlib (Agg) to PNG bytes.

Only matplotlib's object API is used (no pyplot state), so building figures is re-entrant.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# A fixed, writable cache dir: matplotlib otherwise wants $HOME/.config, and a fresh temp dir
# per build would rebuild the font cache every time (seconds).
os.environ.setdefault("MPLCONFIGDIR", str(Path(tempfile.gettempdir()) / "meshlab-matplotlib"))

import matplotlib

matplotlib.use("Agg")
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from meshlab.analysis.loading.run import Block, Run, Trial
from meshlab.analysis.report.thesis import SpreadRow
from meshlab.analysis.statistics.fmt import TIMES

DPI = 100
WIDTH = 12.0
PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#8172B3", "#937860")
REJECTED = "#C44E52"
_CDF_P = np.concatenate([np.linspace(0.0, 0.99, 496), 1 - np.logspace(-2, -5, 150)[1:], [1.0]])
_SUMMARY_Q = (
    ("p5", 0.05),
    ("p25", 0.25),
    ("p50", 0.5),
    ("p75", 0.75),
    ("p90", 0.9),
    ("p95", 0.95),
    ("p99", 0.99),
    ("p999", 0.999),
)


@dataclass(frozen=True)
class Figure_:  # noqa: N801 - avoids shadowing matplotlib's Figure
    name: str
    title: str
    caption: str
    png: bytes


LatencyPools = dict[tuple[str, Block], np.ndarray]  # (arm, block) -> per-request ms


def colors(run: Run) -> dict[str, str]:
    return {arm: PALETTE[i % len(PALETTE)] for i, arm in enumerate(run.arms)}


def blocks(run: Run) -> list[Block]:
    """The blocks with at least one valid trial."""
    present = {t.block for t in run.valid_trials()}
    return [c for c in run.blocks() if c in present]


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def panel_title(run: Run, block: Block) -> str:
    lp, flood, placement = block
    rate = next((t.rate for t in run.trials if t.load_point == lp), None)
    rate_s = f" ({rate:g} req/s)" if rate and rate != lp else ""
    return f"{lp}{rate_s}, flood {flood}, {placement}"


def legend_arms(ax: Axes, run: Run, extra: Sequence = ()) -> None:
    """Legend in one row above the axes' right end, clear of the data."""
    col = colors(run)
    handles = [Patch(facecolor=col[a], label=a) for a in run.arms] + list(extra)
    ax.legend(
        handles=handles,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncols=len(handles),
        fontsize=8,
        frameon=False,
        borderaxespad=0.2,
    )


def plain_log_ticks(ax: Axes) -> None:
    """Log axis with '0.2', '0.5', '1' labels instead of 2x10⁻¹."""
    fmt = FuncFormatter(lambda v, _pos: f"{v:g}")
    ax.xaxis.set_major_formatter(fmt)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}" if _is_2_or_5(v) else ""))


def _is_2_or_5(v: float) -> bool:
    if v <= 0:
        return False
    mantissa = v / 10 ** math.floor(math.log10(v))
    return round(mantissa, 6) in (2.0, 5.0)


# --- 1. latency boxes, thesis Fig. 4/6 style --------------------------------------------------


def latency_boxes(run: Run) -> Figure_:
    cs = blocks(run)
    col = colors(run)
    fig = Figure(figsize=(WIDTH, 0.8 + 3.0 * len(cs)), layout="constrained")
    axes = fig.subplots(len(cs), 1, squeeze=False)[:, 0]
    k = len(run.arms)
    for ax, block in zip(axes, cs, strict=True):
        trials = [t for t in run.valid_trials() if t.block == block]
        rounds = sorted({t.round for t in trials})
        slot = {r: i for i, r in enumerate(rounds)}
        for ai, arm in enumerate(run.arms):
            ts = [t for t in trials if t.arm == arm]
            if not ts:
                continue
            boxes = [_box(t) for t in ts]
            pos = [slot[t.round] * (k + 1) + ai for t in ts]
            ax.bxp(
                boxes,
                positions=pos,
                widths=0.75,
                patch_artist=True,
                showmeans=True,
                showfliers=False,
                manage_ticks=False,
                boxprops={"facecolor": col[arm], "alpha": 0.75, "linewidth": 0.6},
                medianprops={"color": "black", "linewidth": 1.0},
                whiskerprops={"linewidth": 0.6},
                capprops={"linewidth": 0.6},
                meanprops={
                    "marker": "D",
                    "markersize": 3,
                    "markerfacecolor": "white",
                    "markeredgecolor": "black",
                },
            )
        centers = [i * (k + 1) + (k - 1) / 2 for i in range(len(rounds))]
        step = max(1, math.ceil(len(rounds) / 25))
        ax.set_xticks(centers[::step], [f"r{r}" for r in rounds[::step]], fontsize=8)
        ax.set_xlim(-1, max(centers, default=0) + k)
        ax.set_ylabel("latency (ms)")
        ax.set_title(panel_title(run, block), fontsize=10, loc="left")
        ax.grid(axis="y", alpha=0.3)
        mean_h = Line2D([], [], marker="D", ls="", mfc="white", mec="black", ms=4, label="mean")
        legend_arms(ax, run, [mean_h])
    return Figure_(
        "latency_boxes",
        "Latency per trial, by round",
        "One box per valid trial: box p25 to p75, line p50, whiskers p5 to p95, diamond the mean "
        "(the thesis' Fig. 4/6 view). Arms of a round stand side by side; rejected trials "
        "are left out, as they are from the statistics.",
        png(fig),
    )


def _box(t: Trial) -> dict:
    lat = t.latency
    return {
        "med": lat["p50"],
        "q1": lat["p25"],
        "q3": lat["p75"],
        "whislo": lat["p5"],
        "whishi": lat["p95"],
        "mean": lat["mean"],
        "fliers": [],
    }


# --- 2. CPU per arm per round -----------------------------------------------------------------

_COMPONENTS = (
    ("client_sidecar", "client sidecar"),
    ("server_sidecar", "server sidecar"),
    ("app", "nginx"),
    ("k6", "k6"),
)


def cpu(run: Run) -> Figure_:
    cs = blocks(run)
    col = colors(run)
    fig = Figure(figsize=(WIDTH, 0.8 + 3.0 * len(cs)), layout="constrained")
    axes = fig.subplots(len(cs), 3, squeeze=False, width_ratios=(1.4, 1.0, 1.4))
    for row, block in zip(axes, cs, strict=True):
        trials = [t for t in run.valid_trials() if t.block == block]
        per_req, comp, peak = row
        for arm in run.arms:
            ts = sorted((t for t in trials if t.arm == arm), key=lambda t: t.round)
            rs = [t.round for t in ts]
            per_req.plot(
                rs,
                [nan_if_none(t.cpu_value("node_total", "per_1000_requests")) for t in ts],
                "o-",
                color=col[arm],
                ms=3.5,
                lw=1,
                label=arm,
            )
            peak.plot(
                rs,
                [nan_if_none(t.cpu_value("node_total", "max_percent")) for t in ts],
                "s-",
                color=col[arm],
                ms=3.5,
                lw=1,
                label=arm,
            )
        _component_bars(comp, run, trials)
        per_req.set_title(
            f"{panel_title(run, block)}\nnode CPU-s per 1000 requests", fontsize=9, loc="left"
        )
        per_req.set_xlabel("round")
        per_req.set_ylabel("CPU-s / 1000 req")
        peak.set_title("max CPU % of the node (the thesis' Fig. 5/7 view)", fontsize=9, loc="left")
        peak.set_xlabel("round")
        peak.set_ylabel("max CPU %")
        for ax in (per_req, peak):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    return Figure_(
        "cpu",
        "CPU per arm and round",
        "Left: CPU-seconds the whole node spent per 1000 requests, per round — the metric the "
        "statistics use. Middle: median per component (other = node total minus the "
        "components: kernel, softirq). Right: the node's maximum CPU %, kept only to set beside "
        "the thesis' Fig. 5/7.",
        png(fig),
    )


def _component_bars(ax: Axes, run: Run, trials: list[Trial]) -> None:
    col = colors(run)
    names = [label for _, label in _COMPONENTS] + ["other"]
    width = 0.8 / len(run.arms)
    x = np.arange(len(names))
    for ai, arm in enumerate(run.arms):
        ts = [t for t in trials if t.arm == arm]
        if not ts:
            continue
        vals = [
            np.nanmedian([nan_if_none(t.cpu_value(c, "per_1000_requests")) for t in ts])
            for c, _ in _COMPONENTS
        ]
        node = np.nanmedian(
            [nan_if_none(t.cpu_value("node_total", "per_1000_requests")) for t in ts]
        )
        vals.append(max(0.0, node - np.nansum(vals)) if np.isfinite(node) else np.nan)
        ax.bar(x + (ai - (len(run.arms) - 1) / 2) * width, vals, width, color=col[arm], label=arm)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("CPU-s / 1000 req (median)")
    ax.set_title("per component", fontsize=9, loc="left")
    ax.grid(axis="y", alpha=0.3)


def nan_if_none(v: float | None) -> float:
    return math.nan if v is None else v


# --- 3. forest plot of paired ratios ----------------------------------------------------------


def cdf(run: Run, pools: LatencyPools) -> Figure_:
    cs = blocks(run)
    col = colors(run)
    fig = Figure(figsize=(WIDTH, 0.6 + 3.0 * len(cs)), layout="constrained")
    axes = fig.subplots(len(cs), 2, squeeze=False)
    from_summaries = False
    for (ax, tail), block in zip(axes, cs, strict=True):
        for arm in run.arms:
            pooled = pools.get((arm, block))
            if pooled is not None and pooled.size:
                q = np.quantile(pooled, _CDF_P)
                ax.plot(q, _CDF_P, color=col[arm], lw=1.3, label=f"{arm} ({pooled.size:,} req)")
                shown = 10 / pooled.size <= 1 - _CDF_P  # no tail finer than ~10 requests
                tail.plot(q[shown], 1 - _CDF_P[shown], color=col[arm], lw=1.3, label=arm)
                continue
            ts = [t for t in run.valid_trials() if t.arm == arm and t.block == block]
            if not ts:
                continue
            from_summaries = True
            q = [np.median([t.latency[k] for t in ts]) for k, _ in _SUMMARY_Q]
            p = np.array([p for _, p in _SUMMARY_Q])
            ax.plot(q, p, "o--", color=col[arm], ms=3, lw=1, label=f"{arm} (trial summaries)")
            tail.plot(q, 1 - p, "o--", color=col[arm], ms=3, lw=1, label=arm)
        ax.set_xscale("log")
        ax.set_ylabel("fraction of requests ≤ x")
        ax.set_title(panel_title(run, block), fontsize=10, loc="left")
        tail.set_xscale("log")
        tail.set_yscale("log")
        tail.set_ylabel("fraction of requests > x")
        tail.set_title("tail", fontsize=10, loc="left")
        for a in (ax, tail):
            plain_log_ticks(a)
            a.set_xlabel("latency (ms)")
            a.grid(alpha=0.3, which="both")
            a.legend(fontsize=8)
    note = (
        " Dashed lines: no raw k6 output, so the medians of the trials' summary "
        "percentiles are shown instead."
        if from_summaries
        else ""
    )
    return Figure_(
        "cdf",
        "Latency distribution per arm",
        "All requests of the valid trials of each arm, pooled (left: CDF; right: the tail, "
        "share of requests slower than x)." + note,
        png(fig),
    )


# --- 6. flood-size sweep -----------------------------------------------------------------------


# --- effect per placement and flood size -------------------------------------------------------


def thousands(v: float, _pos: int) -> str:
    return f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"


# --- 7. against the thesis ----------------------------------------------------------------------


def thesis_spread(run: Run, rows: list[SpreadRow]) -> Figure_:
    col = colors(run)
    rows = [r for r in rows if r.p5_min and r.p95_max]
    fig = Figure(figsize=(WIDTH, 1.2 + 0.42 * len(rows)), layout="constrained")
    ax = fig.subplots()
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        color = "#9E9E9E" if r.who == "thesis" else col.get(r.arm, "grey")
        ax.plot([r.p5_min, r.p95_max], [y, y], color=color, lw=7, solid_capstyle="butt")
        ax.annotate(
            f"{TIMES}{r.latency_factor:.1f}",
            (r.p95_max, y),
            xytext=(6, -3),
            textcoords="offset points",
            fontsize=8,
        )
    labels = [
        f"{r.who}: {r.arm} — " + (r.where.split(" · ")[-1] if r.who == "thesis" else r.where)
        for r in rows
    ]
    ax.set_yticks(range(len(rows)), list(reversed(labels)), fontsize=8)
    ax.set_xscale("log")
    plain_log_ticks(ax)
    ax.set_xlabel("latency (ms), lowest p5 to highest p95 over all trials (log scale)")
    ax.grid(axis="x", alpha=0.3, which="both")
    return Figure_(
        "thesis_spread",
        "Latency spread: the thesis beside this run",
        "Each bar runs from the lowest p5 to the highest p95 seen across trials; the label is "
        "the ratio of the two. The thesis' bars come from its published box plots.",
        png(fig),
    )
