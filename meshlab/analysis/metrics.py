"""The per-trial metrics that are compared, and the words a verdict uses for each."""

from __future__ import annotations

from dataclasses import dataclass

from meshlab.analysis.run import Trial


@dataclass(frozen=True)
class Metric:
    key: str  # stable id used in stats.json / pairs.csv
    label: str  # short column label
    unit: str
    family: str  # "latency" or "cpu"
    phrase: str  # how a verdict names it: "at p50", "in node CPU per request"
    source: tuple[str, str]  # ("latency", "p50") or ("cpu", "<component>")

    def value(self, trial: Trial) -> float | None:
        kind, name = self.source
        if kind == "latency":
            return trial.latency.get(name)
        return trial.cpu_value(name, "per_1000_requests")

    def direction_words(self, lower: bool) -> str:
        """'faster'/'slower' for latency, 'less'/'more' CPU for CPU metrics."""
        if self.family == "latency":
            return "faster" if lower else "slower"
        return "cheaper" if lower else "costlier"


def _lat(q: str, label: str) -> Metric:
    return Metric(f"latency_{q}", label, "ms", "latency", f"at {label}", ("latency", q))


def _cpu(component: str, label: str) -> Metric:
    return Metric(
        f"cpu_{component}",
        f"CPU {label}",
        "CPU-s/1000 req",
        "cpu",
        f"in {label} CPU per request",
        ("cpu", component),
    )


METRICS: tuple[Metric, ...] = (
    _lat("p50", "p50"),
    _lat("p90", "p90"),
    _lat("p99", "p99"),
    _lat("p999", "p99.9"),
    _lat("mean", "mean latency"),
    _cpu("node_total", "node total"),
    _cpu("client_sidecar", "client sidecar"),
    _cpu("server_sidecar", "server sidecar"),
    _cpu("app", "nginx"),
    _cpu("k6", "k6"),
)
BY_KEY = {m.key: m for m in METRICS}
