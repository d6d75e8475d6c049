"""Per-request latencies and request start times from k6's raw CSV output (`k6 --out
csv=...`, gzip or plain, `unix_micro` timestamps).

A trial file holds ~13 metric rows per request (~400k rows), of which the `http_req_duration`
rows of the `measure` scenario are latencies and its `iteration_duration` rows time each
iteration: k6 stamps a row with the instant it ends (v1.1 lib/netext/httpext/tracer.go:
`Time: tr.EndTime`), so an iteration started at timestamp - duration. Parsing every row with the
csv module is slow, so lines are filtered on their prefix first and split by hand; only the
rare line that carries a quoted field goes through the csv module.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meshlab.errors import MeshlabError

LATENCY_METRIC = "http_req_duration"
ITERATION_METRIC = "iteration_duration"
MEASURE_SCENARIO = "measure"
# The `summary.latency_ms` keys of trial.json (results/README.md), in order.
SUMMARY_KEYS = ("p5", "p25", "p50", "p75", "p90", "p95", "p99", "p999", "mean", "min", "max")
_PERCENTILES = {"p5": 5, "p25": 25, "p50": 50, "p75": 75, "p90": 90, "p95": 95, "p99": 99}
_PERCENTILES["p999"] = 99.9
_CHUNK = 1 << 24  # 16 MiB of decompressed text at a time keeps memory flat for big files
_REQUIRED = ("metric_name", "timestamp", "metric_value", "scenario")


@dataclass(frozen=True)
class Measured:
    """The measured scenario of one trial, as k6 recorded it."""

    latency_ms: np.ndarray  # http_req_duration per request, file order
    starts_s: np.ndarray  # iteration start instants (unix seconds), sorted


def read_measured(path: Path | str, *, scenario: str = MEASURE_SCENARIO) -> Measured:
    """Latencies and iteration starts of one scenario; MeshlabError if the file is not a k6 CSV
    or has no timestamp column."""
    lat, iters = _read(Path(path), scenario, (LATENCY_METRIC, ITERATION_METRIC), False)
    return Measured(lat[:, 1], np.sort(iters[:, 0] / 1e6 - iters[:, 1] / 1e3))


def read_latencies_ms(
    path: Path | str, *, scenario: str = MEASURE_SCENARIO, expected_only: bool = False
) -> np.ndarray:
    """Latencies (ms, float64, file order) of the `http_req_duration` rows of one scenario.

    Failed requests are included, as in k6's own `http_req_duration` summary; pass
    `expected_only=True` to keep only rows tagged `expected_response=true`.
    Raises MeshlabError naming the file if it is not a readable k6 CSV.
    """
    (lat,) = _read(Path(path), scenario, (LATENCY_METRIC,), expected_only)
    return lat[:, 1]


def _read(
    path: Path, scenario: str, metrics: tuple[str, ...], expected_only: bool
) -> tuple[np.ndarray, ...]:
    """Per metric, an (n, 2) array of (timestamp µs, value) of the scenario's rows."""
    try:
        with _open(path) as fh:
            header = fh.readline()
            cols = _columns(path, header)
            parsers = [_BlockParser(cols, m, scenario, expected_only) for m in metrics]
            parts: list[list[np.ndarray]] = [[] for _ in metrics]
            rest = b""
            while chunk := fh.read(_CHUNK):
                buf = rest + chunk
                cut = buf.rfind(b"\n")
                if cut < 0:
                    rest = buf
                    continue
                rest = buf[cut + 1 :]
                for parser, out in zip(parsers, parts, strict=True):
                    out.append(parser.parse(buf[:cut]))
            if rest.strip():
                for parser, out in zip(parsers, parts, strict=True):
                    out.append(parser.parse(rest))
    except (OSError, EOFError, zlib.error) as err:
        raise MeshlabError(f"{path}: cannot read k6 CSV ({err})") from err
    except ValueError as err:
        raise MeshlabError(f"{path}: malformed k6 CSV ({err})") from err
    return tuple(np.concatenate(p) if p else np.empty((0, 2)) for p in parts)


def summarize(latencies_ms: np.ndarray) -> dict[str, float]:
    """The trial.json `summary.latency_ms` object: p5 … p999 (linear interpolation), mean, min, max.

    Raises ValueError on an empty array: a trial without measured requests has no latency.
    """
    lat = np.asarray(latencies_ms, dtype=np.float64)
    if lat.size == 0:
        raise ValueError("no latency samples to summarize")
    qs = np.percentile(lat, list(_PERCENTILES.values()))
    out = {key: float(q) for key, q in zip(_PERCENTILES, qs, strict=True)}
    out["mean"] = float(lat.mean())
    out["min"] = float(lat.min())
    out["max"] = float(lat.max())
    return {key: out[key] for key in SUMMARY_KEYS}


def _open(path: Path):
    with path.open("rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else path.open("rb")


def _columns(path: Path, header: bytes) -> dict[str, int]:
    names = next(csv.reader([header.decode("utf-8", "replace").strip()]), [])
    cols = {name: i for i, name in enumerate(names)}
    missing = [name for name in _REQUIRED if name not in cols]
    if missing:
        raise MeshlabError(f"{path}: not a k6 CSV (header lacks {', '.join(missing)})")
    return cols


class _BlockParser:
    """Turns a block of whole CSV lines into (timestamp, value) pairs of one metric."""

    def __init__(
        self, cols: dict[str, int], metric: str, scenario: str, expected_only: bool
    ) -> None:
        self.prefix = (metric + ",").encode()
        self.i_time = cols["timestamp"]
        self.i_value = cols["metric_value"]
        self.i_scenario = cols["scenario"]
        self.i_expected = cols.get("expected_response", -1) if expected_only else -1
        self.scenario = scenario.encode()
        self.split_to = max(self.i_time, self.i_value, self.i_scenario, self.i_expected) + 1

    def parse(self, block: bytes) -> np.ndarray:
        prefix, n = self.prefix, self.split_to
        i_val, i_scn, i_exp, scn = self.i_value, self.i_scenario, self.i_expected, self.scenario
        i_t = self.i_time
        values: list[bytes] = []
        for line in block.split(b"\n"):
            if not line.startswith(prefix):
                continue
            if b'"' in line:
                fields = [f.encode() for f in next(csv.reader([line.decode("utf-8", "replace")]))]
            else:
                fields = line.split(b",", n)
            if len(fields) < n:
                raise ValueError(f"short row {line[:80]!r}")
            if fields[i_scn] != scn or (i_exp >= 0 and fields[i_exp] != b"true"):
                continue
            values.append(fields[i_t])
            values.append(fields[i_val])
        if not values:
            return np.empty((0, 2), dtype=np.float64)
        return np.array(values).astype(np.float64).reshape(-1, 2)
