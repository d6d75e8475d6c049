"""`meshlab compare RUN_A RUN_B`: did a rerun (e.g. in a quieter cloud) agree with the first run?

For every metric both runs measured, the difference of the two effects (B's change minus A's,
in percentage points) with a 95 % CI from the two runs' independent round bootstraps. Verdict,
the primary family first (the question both runs asked):
- disagree: the CI excludes 0 — the runs measured different effects;
- agree: the whole CI lies within ±2 percentage points — the rerun reproduced the effect;
- inconclusive: neither — the runs are too noisy to show agreement at that precision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from meshlab.analysis.loading.run import Run, load_run
from meshlab.analysis.statistics import fmt, stats
from meshlab.analysis.statistics.analyse import analyse
from meshlab.analysis.statistics.fmt import pct
from meshlab.analysis.statistics.results import PRIMARY, Analysis, MetricResult
from meshlab.errors import MeshlabError

AGREE_PP = 2.0  # the difference's whole CI within ± this many percentage points
_MAX_DIFFS_SHOWN = 4


def compare(run_a: Path, run_b: Path, force: bool = False) -> str:
    a_run, b_run = load_run(run_a), load_run(run_b)
    mismatch = _spec_mismatch(a_run, b_run)
    if mismatch and not force:
        raise MeshlabError(
            f"{b_run.path}: {mismatch} — the two runs did not measure the same experiment; "
            "pass --force to compare them anyway"
        )
    a, b = analyse(a_run, keep_boot=True), analyse(b_run, keep_boot=True)
    lines = [f"A: {a_run.path}  ({_describe(a_run)})", f"B: {b_run.path}  ({_describe(b_run)})"]
    if mismatch:
        lines.append(f"warning: {mismatch} (compared anyway: --force)")
    lines += [f"warning: images differ: {d}" for d in image_differences(a_run, b_run)]
    lines += ["", "Noise side by side", _table(_noise_rows(a, b))]
    rows, verdicts, unmatched = _ratio_rows(a, b)
    lines += ["", "Difference of the effects (B's change - A's, pp), 95 % CI", _table(rows)]
    if unmatched:
        lines.append("measured in only one run: " + ", ".join(unmatched))
    counts = {k: verdicts.count(k) for k in ("agree", "disagree", "inconclusive", "too few rounds")}
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    lines += ["", f"Overall: {summary or 'nothing to compare'}."]
    return "\n".join(lines)


def _describe(run: Run) -> str:
    return f"{run.experiment_id}, status {run.status}, spec {run.spec_hash[:12] or '?'}"


def image_differences(a: Run, b: Run) -> list[str]:
    """Images (cloud: by digest) that the two runs did not share: a rerun on another Merbridge
    build measured another eBPF arm."""
    ia, ib = a.manifest.images, b.manifest.images
    out = []
    for key in sorted(set(ia) | set(ib)):
        x, y = ia.get(key), ib.get(key)
        if x is None or y is None:
            only = "A" if y is None else "B"
            out.append(f"{key} recorded only in run {only}")
        elif (x.tag, x.digest) != (y.tag, y.digest):
            out.append(f"{key} {x.tag} {x.digest or '?'} in A, {y.tag} {y.digest or '?'} in B")
    return out


def _spec_mismatch(a: Run, b: Run) -> str | None:
    if a.spec_hash and a.spec_hash == b.spec_hash:
        return None
    if not a.spec_hash or not b.spec_hash:
        which = a.path if not a.spec_hash else b.path
        return f"{which} has no spec_hash, so the experiments cannot be shown to match"
    diffs = _diff_paths(a.experiment, b.experiment)
    what = ", ".join(diffs[:_MAX_DIFFS_SHOWN]) + (
        f" and {len(diffs) - _MAX_DIFFS_SHOWN} more" if len(diffs) > _MAX_DIFFS_SHOWN else ""
    )
    return f"spec hash {b.spec_hash[:12]} differs from {a.path}'s {a.spec_hash[:12]}" + (
        f" (experiment differs in: {what})" if diffs else ""
    )


def _diff_paths(x: Any, y: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two experiment definitions differ."""
    if isinstance(x, dict) and isinstance(y, dict):
        out = []
        for key in list(x) + [k for k in y if k not in x]:
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in x or key not in y:
                out.append(path)
            else:
                out += _diff_paths(x[key], y[key], path)
        return out
    if isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        return [
            p
            for i, (u, v) in enumerate(zip(x, y, strict=True))
            for p in _diff_paths(u, v, f"{prefix}[{i}]")
        ]
    return [] if x == y else [prefix or "(whole experiment)"]


def _noise_rows(a: Analysis, b: Analysis) -> list[list[str]]:
    rows = [["", "A", "B"]]
    for label, fn in (
        ("trials valid / recorded", lambda x: f"{x.gates.valid} / {x.gates.recorded}"),
        ("rejected", lambda x: f"{x.gates.rejected} ({100 * x.gates.rejection_share:.1f} %)"),
        ("steal, median of valid trials", lambda x: fmt.percent(x.gates.steal_valid_median, 3)),
        ("steal, worst second", lambda x: fmt.percent(x.gates.steal_all_max, 2)),
    ):
        rows.append([label, fn(a), fn(b)])
    keys = [_key(c.pairs) for c in a.comparisons]
    keys += [k for k in (_key(c.pairs) for c in b.comparisons) if k not in keys]
    for key in keys:
        ca, cb = _find(a, key), _find(b, key)
        ra = ca.result("latency_p50") if ca else None
        rb = cb.result("latency_p50") if cb else None
        rows.append([f"{key[0]} vs {key[1]} @ {'/'.join(key[2:])}: paired rounds", _n(ca), _n(cb)])
        rows.append(["  CoV of p50, baseline", _cov(ra, "cov_a"), _cov(rb, "cov_a")])
        rows.append(["  CoV of p50, arm", _cov(ra, "cov_b"), _cov(rb, "cov_b")])
        rows.append(["  MDE of p50", _mde(ra), _mde(rb)])
    return rows


def _n(c: Any) -> str:
    return "—" if c is None else f"{c.pairs.n} ({len(c.pairs.dropped)} dropped)"


def _cov(r: MetricResult | None, attr: str) -> str:
    return "—" if r is None else fmt.percent(getattr(r, attr), 2)


def _mde(r: MetricResult | None) -> str:
    return "—" if r is None else fmt.mde_pct(r.reported_mde)


def _key(ps: Any) -> tuple[str, ...]:
    return (ps.arm, ps.baseline, *ps.block)


def _find(an: Analysis, key: tuple) -> Any:
    return next((c for c in an.comparisons if _key(c.pairs) == key), None)


def _ratio_rows(a: Analysis, b: Analysis) -> tuple[list[list[str]], list[str], list[str]]:
    rows = [
        ["comparison", "metric", "family", "A change", "B change", "B - A", "95 % CI", "verdict"]
    ]
    verdicts: list[str] = []
    unmatched = []
    for ca in a.comparisons:
        key = _key(ca.pairs)
        cb = _find(b, key)
        tag = f"{key[0]} vs {key[1]} @ {'/'.join(key[2:])}"
        if cb is None:
            unmatched.append(tag)
            continue
        # the question both runs asked first, then the exploratory metrics
        for ra in sorted(ca.results, key=lambda r: r.family != PRIMARY):
            rb = cb.result(ra.metric.key)
            if rb is None:
                unmatched.append(f"{tag} {ra.metric.label}")
                continue
            diff, ci, word = difference_of_effects(ra, rb)
            verdicts.append(word.split(":")[0])
            rows.append(
                [
                    tag,
                    ra.metric.label,
                    ra.family,
                    fmt.signed_pct(ra.estimate),
                    fmt.signed_pct(rb.estimate),
                    f"{diff:+.2f} pp",
                    "—" if ci is None else f"{ci[0]:+.2f} to {ci[1]:+.2f} pp",
                    word,
                ]
            )
    unmatched += [
        f"{k[0]} vs {k[1]} @ {'/'.join(k[2:])}"
        for k in (_key(c.pairs) for c in b.comparisons)
        if _find(a, k) is None
    ]
    return rows, verdicts, unmatched


def difference_of_effects(
    ra: MetricResult, rb: MetricResult
) -> tuple[float, tuple[float, float] | None, str]:
    """(B's change - A's in percentage points, its 95 % CI or None, verdict word)."""
    diff = pct(rb.estimate) - pct(ra.estimate)
    if ra.boot is None or rb.boot is None:
        return diff, None, "too few rounds"
    # independent runs: independent resamples, paired by index only
    boot = 100 * (np.expm1(rb.boot) - np.expm1(ra.boot))
    lo, hi = stats.percentile_ci(boot[None, :], stats.ALPHA, min(ra.n, rb.n))[0]
    ci = (float(lo), float(hi))
    if lo > 0 or hi < 0:
        word = "disagree"
    elif lo > -AGREE_PP and hi < AGREE_PP:
        word = "agree"
    else:
        word = f"inconclusive: CI reaches {max(abs(lo), abs(hi)):.1f} pp, beyond ±{AGREE_PP:g}"
    return diff, ci, word


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for j, row in enumerate(rows):
        out.append("  ".join(block.ljust(w) for block, w in zip(row, widths, strict=True)).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
