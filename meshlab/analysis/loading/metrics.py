"""The per-trial metrics that are compared, and the words a verdict uses for each. The keys are
the experiment schema's (`analysis.primary`, meshlab/record/spec.py)."""

from __future__ import annotations

from dataclasses import dataclass

from meshlab.analysis.loading.run import Trial


@dataclass(frozen=True)
class Metric:
    key: str  # stable id used in stats.json / pairs.csv and in experiment definitions
    label: str  # short column label
    unit: str
    family: str  # "latency" or "cpu"
    phrase: str  # how a verdict names it: "in p50 latency", "in node CPU per request"
    source: tuple[str, ...]  # ("latency", q) | ("cpu", component, ...) | ("sidecar", side, q)

    def value(self, trial: Trial) -> float | None:
        kind, *names = self.source
        if kind == "latency":
            return trial.latency.get(names[0])
        if kind == "sidecar":
            return trial.sidecar.get(names[0], {}).get(names[1])
        parts = [trial.cpu_value(name, "per_1000_requests") for name in names]
        return None if any(p is None for p in parts) else sum(parts)  # type: ignore[arg-type]

    def direction_words(self, lower: bool) -> str:
        """'lower'/'higher' latency, 'less'/'more' CPU: what was measured, nothing more
        ("faster" would claim more than a lower percentile shows)."""
        if self.family == "latency":
            return "lower" if lower else "higher"
        return "less" if lower else "more"


def _lat(q: str, label: str) -> Metric:
    return Metric(f"latency_{q}", label, "ms", "latency", f"{label} latency", ("latency", q))


def _cpu(key: str, label: str, *components: str) -> Metric:
    return Metric(
        f"cpu_{key}", f"CPU {label}", "CPU-s/1000 req", "cpu", f"{label} CPU per request",
        ("cpu", *components),
    )  # fmt: skip


def _side(q: str, label: str) -> Metric:
    return Metric(
        f"server_sidecar_{q}", f"server sidecar {label}", "ms", "latency",
        f"server sidecar {label} latency", ("sidecar", "server", q),
    )  # fmt: skip


METRICS: tuple[Metric, ...] = (
    _lat("p50", "p50"),
    _lat("p90", "p90"),
    _lat("p99", "p99"),
    _lat("p999", "p99.9"),
    _lat("mean", "mean"),
    _cpu("node_total", "node total", "node_total"),
    _cpu("sidecars", "sidecars", "client_sidecar", "server_sidecar"),
    _cpu("client_sidecar", "client sidecar", "client_sidecar"),
    _cpu("server_sidecar", "server sidecar", "server_sidecar"),
    _cpu("app", "nginx", "app"),
    _cpu("k6", "k6", "k6"),
    _side("p50", "p50"),
    _side("p99", "p99"),
)
BY_KEY = {m.key: m for m in METRICS}
