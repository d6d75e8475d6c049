"""report.html: one self-contained file (inline CSS, figures as base64 PNG), readable offline."""

from __future__ import annotations

import base64
from html import escape

from meshlab.analysis import fmt
from meshlab.analysis.analyse import Analysis, MetricResult
from meshlab.analysis.figures import Figure_
from meshlab.analysis.thesis import SpreadRow

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;
 color:#1d1d1f;background:#fafafa;line-height:1.45}
main{max-width:1240px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd;
 padding-bottom:.2em}h3{font-size:1.05em}
.sub{color:#555}.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:.85em;
 background:#e0e0e0}.badge.complete{background:#c8e6c9}.badge.partial{background:#ffe0b2}
.notice{border-left:4px solid #ef6c00;background:#fff3e0;padding:8px 14px;margin:12px 0}
.notice.bad{border-color:#c62828;background:#ffebee}
table{border-collapse:collapse;margin:10px 0;font-size:.88em}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.faster td.v,tr.cheaper td.v{background:#e3f2fd}
tr.slower td.v,tr.costlier td.v{background:#fce4ec}
tr.equivalent td.v{background:#e8f5e9}tr.inconclusive td.v{background:#f5f5f5}
tr.not-enough-rounds td.v{background:#fff8e1}tr.group th{background:#e8eaf6;text-align:left}
ul.verdicts li{margin:.25em 0}figure{margin:18px 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.88em;color:#444;margin-top:4px}code{font-size:.9em}
"""


def render(
    analysis: Analysis,
    figures: list[Figure_],
    thesis_rows: list[SpreadRow],
    thesis_source: str,
    notes: list[str],
) -> str:
    run = analysis.run
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>meshlab report — {escape(run.experiment_id)} {escape(run.run_id)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        _header(analysis),
        _notices(analysis, notes),
        _verdicts(analysis),
        _gates(analysis),
    ]
    thesis_fig = [f for f in figures if f.name == "thesis_spread"]
    parts.append("<h2 id='figures'>Figures</h2>")
    parts += [_figure(f) for f in figures if f.name != "thesis_spread"]
    parts.append(_thesis(thesis_rows, thesis_source, thesis_fig))
    parts.append(_method(analysis))
    parts.append(_provenance(analysis))
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _header(a: Analysis) -> str:
    run = a.run
    status_cls = "partial" if run.partial else "complete"
    desc = run.experiment.get("description") or ""
    design = run.experiment.get("design") or "?"
    return (
        f"<h1>meshlab report: {escape(run.experiment_id)}</h1>"
        f"<p class='sub'>run <code>{escape(run.run_id)}</code> · status "
        f"<span class='badge {status_cls}'>{escape(run.status)}</span> · design "
        f"{escape(str(design))} · baseline <b>{escape(run.baseline)}</b> · equivalence margin "
        f"±{run.margin_percent:g} %</p>" + (f"<p>{escape(str(desc))}</p>" if desc else "")
    )


def _notices(a: Analysis, notes: list[str]) -> str:
    out = []
    if a.run.partial:
        items = "".join(f"<li>{escape(n)}</li>" for n in a.run.notes)
        out.append(
            "<div class='notice' id='partial'><b>Partial run.</b> This report covers what is "
            f"complete.<ul>{items}</ul></div>"
        )
    if a.environment_unfit:
        out.append(
            "<div class='notice bad'><b>Environment unfit.</b> "
            f"{a.gates.rejected} of {a.gates.recorded} trials "
            f"({100 * a.gates.rejection_share:.0f} %) were rejected by the noise gates "
            f"(limit {100 * a.run.max_rejected_share:.0f} %): treat every number below as "
            "suspect.</div>"
        )
    if _is_aa(a):
        out.append(
            "<div class='notice'><b>A/A calibration.</b> Both arms use the same dataplane, so "
            "any claimed difference below is a false positive.</div>"
        )
    if notes:
        items = "".join(f"<li>{escape(n)}</li>" for n in notes)
        out.append(f"<div class='notice'><b>Notes.</b><ul>{items}</ul></div>")
    return "".join(out)


def _is_aa(a: Analysis) -> bool:
    planes = {}
    for t in a.run.trials:
        planes.setdefault(t.arm, set()).add(t.dataplane)
    return len(planes) > 1 and len({frozenset(v) for v in planes.values()}) == 1


def _verdicts(a: Analysis) -> str:
    run = a.run
    lines = []
    for c in a.comparisons:
        r = c.result(run.primary_metric) or (c.results[0] if c.results else None)
        if r is not None:
            lines.append(
                f"<li><b>{escape(c.pairs.arm)} vs {escape(c.pairs.baseline)}, "
                f"{escape(c.pairs.load_point)}, flood {escape(c.pairs.flood)}</b> "
                f"({c.pairs.n} paired rounds): {escape(r.text)}</li>"
            )
    head = (
        "<h2 id='verdict'>Verdict</h2>"
        f"<p>Primary metric <code>{escape(run.primary_metric)}</code>; every metric is in the "
        "table below.</p>"
        f"<ul class='verdicts'>{''.join(lines)}</ul>"
    )
    rows = []
    for c in a.comparisons:
        ps = c.pairs
        dropped = f", {len(ps.dropped)} dropped" if ps.dropped else ""
        rows.append(
            f"<tr class='group'><th colspan='11'>{escape(ps.arm)} vs {escape(ps.baseline)} "
            f"&middot; {escape(ps.load_point)} &middot; flood {escape(ps.flood)} "
            f"&middot; {ps.n} paired rounds{dropped}</th></tr>"
        )
        rows += [_verdict_row(r) for r in c.results]
    table = (
        "<table id='verdicts'><thead><tr><th>metric</th><th>n</th><th>change</th>"
        "<th>95 % CI</th><th>p</th><th>p used</th><th>TOST p</th><th>MDE</th>"
        "<th>CoV base</th><th>CoV arm</th><th>verdict</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )
    return head + table


def _verdict_row(r: MetricResult) -> str:
    p_used = fmt.p_value(r.p_adjusted)
    if r.p_adjusted is not None:
        p_used += " (primary)" if r.p_rule == "primary" else " (Holm)"
    nums = [
        str(r.n),
        fmt.signed_pct(r.estimate),
        fmt.ci_pct(r.ci95),
        fmt.p_value(r.wilcoxon_p),
        p_used,
        fmt.p_value(r.tost_p),
        fmt.mde_pct(r.reported_mde),
        fmt.percent(r.cov_a),
        fmt.percent(r.cov_b),
    ]
    return (
        f"<tr class='{escape(r.kind)}'><td>{escape(r.metric.label)}</td>"
        + "".join(f"<td class='num'>{escape(n)}</td>" for n in nums)
        + f"<td class='v'>{escape(r.text)}</td></tr>"
    )


def _gates(a: Analysis) -> str:
    g = a.gates
    arms = "".join(
        f"<tr><td>{escape(arm)}</td><td class='num'>{c['valid']}</td>"
        f"<td class='num'>{c['rejected']}</td></tr>"
        for arm, c in g.by_arm.items()
    )
    failed = (
        ", ".join(f"{escape(k)} &times;{v}" for k, v in sorted(g.failed_gates.items())) or "none"
    )
    steal = (
        f"median steal of valid trials {fmt.percent(g.steal_valid_median, 3)}, worst second in a "
        f"valid trial {fmt.percent(g.steal_valid_max, 2)}, worst second overall "
        f"{fmt.percent(g.steal_all_max, 2)}"
    )
    rej = "".join(
        f"<tr><td><code>{escape(t['trial_id'])}</code></td><td>{escape(t['arm'])}</td>"
        f"<td class='num'>{t['round']}</td><td>{escape(t['load_point'])}</td>"
        f"<td>{escape(t['flood'])}</td>"
        f"<td>{escape('; '.join(t['reasons']))}</td></tr>"
        for t in g.rejected_trials
    )
    rej_table = (
        "<table id='rejected'><thead><tr><th>trial</th><th>arm</th><th>round</th><th>load</th>"
        f"<th>flood</th><th>why</th></tr></thead><tbody>{rej}</tbody></table>"
        if rej
        else "<p>No trial was rejected.</p>"
    )
    dropped = "".join(
        f"<li>{escape(c.pairs.arm)} vs {escape(c.pairs.baseline)}, {escape(c.pairs.load_point)}, "
        f"flood {escape(c.pairs.flood)}: {len(c.pairs.dropped)} round(s) dropped — "
        + escape("; ".join(f"r{r}: {why}" for r, why in c.pairs.dropped))
        + "</li>"
        for c in a.comparisons
        if c.pairs.dropped
    )
    return (
        "<h2 id='gates'>Noise gates</h2>"
        f"<p>{g.recorded} trials recorded, {g.valid} valid, {g.rejected} rejected "
        f"({100 * g.rejection_share:.1f} %). Failed gates: {failed}. Steal: {steal}.</p>"
        "<table><thead><tr><th>arm</th><th>valid</th><th>rejected</th></tr></thead>"
        f"<tbody>{arms}</tbody></table>{rej_table}"
        + (f"<p>Rounds left out of pairing:</p><ul>{dropped}</ul>" if dropped else "")
    )


def _figure(f: Figure_) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    return (
        f"<figure id='fig-{escape(f.name)}'><h3>{escape(f.title)}</h3>"
        f"<img alt='{escape(f.title)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{escape(f.caption)}</figcaption></figure>"
    )


def _thesis(rows: list[SpreadRow], source: str, fig: list[Figure_]) -> str:
    body = "".join(
        f"<tr><td>{escape(r.who)}</td><td>{escape(r.arm)}</td><td>{escape(r.where)}</td>"
        f"<td class='num'>{fmt.ms(r.p5_min)}&ndash;{fmt.ms(r.p95_max)} ms</td>"
        f"<td class='num'>&times;{fmt.number(r.latency_factor, 3)}</td>"
        f"<td class='num'>{fmt.percent(r.p50_cov, 2)}</td>"
        f"<td class='num'>{_cpu_range(r)}</td>"
        f"<td class='num'>{fmt.percent(r.cpu_relative_spread)}</td>"
        f"<td class='num'>{r.trials if r.trials is not None else '—'}</td></tr>"
        for r in rows
    )
    return (
        "<h2 id='thesis'>Against the thesis</h2>"
        "<p>The 2023 thesis could not draw a conclusion because its measurements spread too "
        "widely. Its published spreads sit beside this run's below: latency from the lowest p5 "
        "to the highest p95 over all trials, the run-to-run CoV of per-trial p50, and the range "
        "of the node's maximum CPU %.</p>"
        "<table id='thesis-table'><thead><tr><th>source</th><th>arm</th><th>where</th>"
        "<th>p5&ndash;p95 range</th><th>spread</th><th>p50 CoV</th><th>max CPU % range</th>"
        "<th>relative CPU spread</th><th>trials</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
        f"<p class='sub'>Thesis figures: {escape(source)}; read from its box plots, "
        "approximate.</p>" + "".join(_figure(f) for f in fig)
    )


def _cpu_range(r: SpreadRow) -> str:
    if r.cpu_max_range is None:
        return "—"
    return f"{r.cpu_max_range[0]:.1f}&ndash;{r.cpu_max_range[1]:.1f} %"


def _method(a: Analysis) -> str:
    return (
        "<h2 id='method'>How to read this</h2><ul>"
        "<li>Each round ran every arm once under the same conditions; the unit of analysis is "
        "the per-round log-ratio d = ln(arm ÷ baseline) of a trial-level metric.</li>"
        "<li>Change: Hodges&ndash;Lehmann estimate of d as a percentage. 95 % CI: paired bootstrap "
        f"over rounds ({a.resamples:,} resamples, seeded), expanded-percentile interval.</li>"
        "<li>p: exact Wilcoxon signed-rank test. p used: the primary metric as declared; the "
        "others Holm-adjusted within their pair set. A difference is claimed only when p used "
        "&lt; 0.05 and the 95 % CI excludes 0.</li>"
        f"<li>Equivalence (TOST, two one-sided signed-rank tests): claimed when TOST p &lt; 0.05 "
        f"and the 90 % CI lies inside ±{a.run.margin_percent:g} %.</li>"
        "<li>MDE: the smallest change this many rounds would detect with 80 % power at "
        "&alpha; 0.05, from the observed spread of d. CoV: run-to-run spread of each arm's "
        "metric.</li>"
        "<li>Fewer than 6 paired rounds: no CI and no test (none can reach p &lt; 0.05).</li>"
        "<li>Rejected trials never enter the statistics; a round missing a valid trial of one "
        "arm is dropped from that comparison and listed above. Details: docs/methodology.md."
        "</li></ul>"
    )


def _provenance(a: Analysis) -> str:
    m = a.run.manifest
    rows = [
        ("experiment", a.run.experiment_id),
        ("run directory", str(a.run.path)),
        ("spec hash", a.run.spec_hash or "—"),
        ("seed", str(a.run.seed)),
        ("git", f"{m.git.sha}{' (dirty)' if m.git.dirty else ''}"),
        ("started / finished", f"{m.started_at} / {m.finished_at or '—'}"),
        ("versions", _kv(m.versions)),
        ("host", _kv(m.host)),
        ("pinning", _kv(m.pinning)),
    ]
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f"<h2 id='provenance'>Provenance</h2><table>{body}</table>"


def _kv(d: object) -> str:
    if not isinstance(d, dict):
        return "—"
    return ", ".join(f"{k} {v}" for k, v in d.items())
