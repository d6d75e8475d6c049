"""Number formatting shared by the HTML page, summary.md and `meshlab compare`."""

from __future__ import annotations

import math

# Typography, spelled as escapes because the linter rightly flags look-alike characters.
DASH = "\u2013"  # en dash, for ranges such as 2.9-5.3 %
TIMES = "\u00d7"  # multiplication sign, for spread factors


def pct(log_value: float) -> float:
    """Log-ratio -> percent change of B relative to A."""
    return 100.0 * math.expm1(log_value)


def level(alpha: float) -> str:
    """An interval's nominal level as printed: alpha 0.05 -> '95 %', 0.04 -> '96 %'."""
    return f"{100 * (1 - alpha):.4g} %"


def ci_words(alpha_primary: float) -> str:
    """The intervals' levels as a legend says them: an adaptive run's primaries are at 96 %."""
    primary = level(alpha_primary)
    if primary == level(0.05):
        return f"{primary} CI"
    return f"{primary} CI for the primary metrics, {level(0.05)} for the others"


def signed_pct(log_value: float | None) -> str:
    if log_value is None or not math.isfinite(log_value):
        return "—"
    return f"{pct(log_value):+.2f} %"


def ci_pct(ci: tuple[float, float] | None) -> str:
    if ci is None:
        return "—"
    return f"{pct(ci[0]):+.2f} to {pct(ci[1]):+.2f} %"


def p_value(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "—"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def percent(x: float | None, digits: int = 1) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.{digits}f} %"


def mde_pct(log_value: float | None) -> str:
    if log_value is None or not math.isfinite(log_value):
        return "—"
    return f"{pct(log_value):.2f} %"


def ms(x: float | None) -> str:
    """Milliseconds with three significant digits, trailing zeros kept (0.170, 2.50, 140)."""
    if x is None or not math.isfinite(x):
        return "—"
    decimals = max(0, 2 - math.floor(math.log10(abs(x)))) if x else 3
    return f"{x:.{decimals}f}"


def number(x: float | None, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.{digits}g}"
