"""Analysis of run directories: loading, paired statistics, figures, report and comparison.

Entry points: `meshlab.analysis.report.report.build` and `meshlab.analysis.report.compare.compare`.
The statistics and why they were chosen are described in docs/methodology.md.
"""
