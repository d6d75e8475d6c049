"""meshlab.k6.results: the raw k6 CSV reader and the trial latency summary."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from meshlab.errors import MeshlabError
from meshlab.k6 import results
from meshlab.k6.results import SUMMARY_KEYS, read_latencies_ms, summarize
from meshlab.synthetic import SyntheticSpec, write_run

# Header and first row exactly as k6 1.1 writes them (K6_CSV_TIME_FORMAT=unix_micro).
HEADER = (
    "metric_name,timestamp,metric_value,check,error,error_code,expected_response,group,method,"
    "name,proto,scenario,service,status,subproto,tls_version,url,extra_tags,metadata"
)
WARMUP_FAILED = (
    "http_req_duration,1795604529442397,0.000000,,dial: connection refused,1212,false,,GET,"
    "http://127.0.0.1:9/get,,warmup,,0,,,http://127.0.0.1:9/get,,"
)


def _row(metric: str, value: str, scenario: str, expected: str = "true", error: str = "") -> str:
    return (
        f"{metric},1795604530000000,{value},,{error},,{expected},,GET,http://198.19.0.1/get,"
        f"HTTP/1.1,{scenario},,200,,,http://198.19.0.1/get,,"
    )


def _write(path: Path, lines: list[str], gz: bool = True) -> Path:
    text = "\n".join([HEADER, *lines]) + "\n"
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def test_reads_only_measure_durations_in_file_order(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "k6-raw.csv.gz",
        [
            WARMUP_FAILED,
            _row("http_req_duration", "9.5", "warmup"),
            _row("http_reqs", "1.000000", "measure"),
            _row("http_req_duration", "0.312000", "measure"),
            _row("http_req_waiting", "0.250000", "measure"),
            _row("http_req_duration", "0.298500", "measure"),
            _row("http_req_failed", "0.000000", "measure"),
            _row("http_req_duration", "1.250000", "measure", expected="false"),
        ],
    )
    np.testing.assert_array_equal(read_latencies_ms(path), [0.312, 0.2985, 1.25])
    np.testing.assert_array_equal(read_latencies_ms(path, expected_only=True), [0.312, 0.2985])
    np.testing.assert_array_equal(read_latencies_ms(path, scenario="warmup"), [0.0, 9.5])


def test_quoted_field_with_commas_does_not_shift_columns(tmp_path: Path) -> None:
    quoted = _row("http_req_duration", "0.400000", "measure", error='"read: reset, by peer"')
    path = _write(
        tmp_path / "raw.csv", [quoted, _row("http_req_duration", "0.5", "measure")], False
    )
    np.testing.assert_array_equal(read_latencies_ms(path), [0.4, 0.5])


def test_block_boundaries_do_not_lose_or_split_rows(tmp_path: Path, monkeypatch) -> None:
    rows = [_row("http_req_duration", f"{0.1 + i / 1000:.6f}", "measure") for i in range(500)]
    path = _write(tmp_path / "k6-raw.csv.gz", rows)
    whole = read_latencies_ms(path)
    monkeypatch.setattr(results, "_CHUNK", 97)  # smaller than a row: every row straddles chunks
    np.testing.assert_array_equal(read_latencies_ms(path), whole)
    assert whole.size == 500 and whole[-1] == pytest.approx(0.599)


def test_reads_the_synthetic_generators_full_k6_layout(tmp_path: Path) -> None:
    spec = SyntheticSpec(rounds=1, samples_per_trial=2000, k6_rows="full")
    run = write_run(tmp_path, spec)
    trial = sorted((run / "trials").iterdir())[0]
    lat = read_latencies_ms(trial / "k6-raw.csv.gz")
    assert lat.size == 2000
    summary = json.loads((trial / "trial.json").read_text())["summary"]["latency_ms"]
    # the trial summary was computed from the exact samples; the CSV keeps 6 decimals
    assert summarize(lat)["p50"] == pytest.approx(summary["p50"], abs=1e-6)


def test_truncated_gzip_is_a_one_line_error_naming_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "k6-raw.csv.gz", [_row("http_req_duration", "0.3", "measure")] * 2000)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(MeshlabError, match=r"k6-raw\.csv\.gz: cannot read k6 CSV") as err:
        read_latencies_ms(path)
    assert "\n" not in str(err.value)


def test_a_file_without_the_k6_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("time,value\n1,2\n")
    with pytest.raises(MeshlabError, match=r"other.csv: not a k6 CSV \(header lacks"):
        read_latencies_ms(path)


def test_summarize_matches_numpy_percentiles() -> None:
    lat = np.random.default_rng(7).lognormal(-1.2, 0.4, 50_001)
    s = summarize(lat)
    assert tuple(s) == SUMMARY_KEYS
    assert s["p50"] == pytest.approx(np.median(lat))
    assert s["p999"] == pytest.approx(np.percentile(lat, 99.9))
    assert s["mean"] == pytest.approx(lat.mean())
    assert s["min"] == lat.min() and s["max"] == lat.max()
    assert s["p5"] < s["p25"] < s["p50"] < s["p75"] < s["p90"] < s["p95"] < s["p99"] < s["p999"]


def test_summarize_refuses_an_empty_trial() -> None:
    with pytest.raises(ValueError, match="no latency samples"):
        summarize(np.empty(0))
