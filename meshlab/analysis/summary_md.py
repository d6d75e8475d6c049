"""derived/summary.md: the verdicts, gates and thesis comparison as Markdown."""

from __future__ import annotations

from meshlab.analysis import fmt
from meshlab.analysis.analyse import Analysis
from meshlab.analysis.figures import Figure_
from meshlab.analysis.thesis import SpreadRow


def render(
    analysis: Analysis, figures: list[Figure_], thesis_rows: list[SpreadRow], notes: list[str]
) -> str:
    run, g = analysis.run, analysis.gates
    out = [
        f"# meshlab report: {run.experiment_id} / {run.run_id}",
        "",
        f"Status **{run.status}** · baseline **{run.baseline}** · margin ±{run.margin_percent:g} %"
        f" · primary metric `{run.primary_metric}`",
        "",
    ]
    if run.partial:
        out += ["> **Partial run** — this report covers what is complete.", ">"]
        out += [f"> - {n}" for n in run.notes] + [""]
    if analysis.environment_unfit:
        out += [
            f"> **Environment unfit**: {100 * g.rejection_share:.0f} % of trials rejected "
            f"(limit {100 * run.max_rejected_share:.0f} %).",
            "",
        ]
    out += [f"- note: {n}" for n in notes] + ([""] if notes else [])
    out += ["## Verdicts", ""]
    for c in analysis.comparisons:
        ps = c.pairs
        out.append(
            f"### {ps.arm} vs {ps.baseline} — {ps.load_point}, flood {ps.flood} "
            f"({ps.n} paired rounds, {len(ps.dropped)} dropped)"
        )
        out.append("")
        out.append("| metric | n | change | 95 % CI | p used | MDE | verdict |")
        out.append("|---|---:|---:|---:|---:|---:|---|")
        for r in c.results:
            out.append(
                f"| {r.metric.label} | {r.n} | {fmt.signed_pct(r.estimate)} | "
                f"{fmt.ci_pct(r.ci95)} | {fmt.p_value(r.p_adjusted)} | "
                f"{fmt.mde_pct(r.reported_mde)} | {r.text} |"
            )
        out.append("")
    out += [
        "## Noise gates",
        "",
        f"{g.recorded} trials recorded, {g.valid} valid, {g.rejected} rejected "
        f"({100 * g.rejection_share:.1f} %); median steal of valid trials "
        f"{fmt.percent(g.steal_valid_median, 3)}, worst second {fmt.percent(g.steal_all_max, 2)}.",
        "",
    ]
    out += [f"- `{t['trial_id']}`: {'; '.join(t['reasons'])}" for t in g.rejected_trials]
    out += [
        "",
        "## Against the thesis",
        "",
        "| source | arm | where | p5-p95 | spread | p50 CoV |",
    ]
    out.append("|---|---|---|---:|---:|---:|")
    for r in thesis_rows:
        out.append(
            f"| {r.who} | {r.arm} | {r.where} | {fmt.ms(r.p5_min)}-{fmt.ms(r.p95_max)} ms"
            f" | x{fmt.number(r.latency_factor)} | {fmt.percent(r.p50_cov, 2)} |"
        )
    out += ["", "## Figures", ""]
    out += [f"- [{f.title}](figures/{f.name}.png)" for f in figures]
    out += ["", "Full report: [report.html](report.html)", ""]
    return "\n".join(out)
