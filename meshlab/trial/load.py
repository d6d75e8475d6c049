"""The k6 load of one trial: constant-arrival-rate (open model), a warm-up scenario then the
measured one, keep-alive or a new connection on every hop; and how k6 is invoked on it (the
same arguments on every testbed)."""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

from meshlab.errors import MeshlabError
from meshlab.record.spec import LoadPoint

# k6 gets this long beyond warm-up + measured window before it is killed.
TIME_LIMIT_GRACE_S = 60
# k6 pinned to one CPU used to stop starting requests for 16-70 ms about once a second
# (issue: the tail was partly k6's own). Measured causes and what removes them:
# - its CSV output gzip-compresses a second of rows at a time, on the only CPU it has: the
#   rows are buffered for the whole run instead and written after the last request;
# - the Go garbage collector: off for the run; GOMEMLIMIT is the ceiling where it comes back
#   (a 20 s run at 1000 req/s peaked at 390 MB); docs/methodology.md has the measurements.
K6_BYTES_PER_REQUEST = 40_000  # about 2x what the run above held per request, GC off
K6_MEMORY_FLOOR = 512 << 20
K6_MEMORY_CEILING = 4 << 30


def k6_env(lp: LoadPoint, memory_limit: int | None = None) -> dict[str, str]:
    """The environment k6 runs with. `memory_limit` (bytes) is its container's limit on the
    cloud: GOMEMLIMIT stays at 75 % of it so the kernel never OOM-kills k6 mid-trial."""
    requests = lp.rate * (lp.warmup_s + lp.duration_s)
    ceiling = K6_MEMORY_CEILING if memory_limit is None else int(0.75 * memory_limit)
    limit = min(max(K6_MEMORY_FLOOR, K6_BYTES_PER_REQUEST * requests), ceiling)
    return {
        # CSV timestamps in microseconds: the window is cut from the request starts.
        "K6_CSV_TIME_FORMAT": "unix_micro",
        "K6_CSV_SAVE_INTERVAL": f"{time_limit_s(lp)}s",
        "GOGC": "off",
        "GOMEMLIMIT": f"{limit >> 20}MiB",
    }


# Thresholds that always pass force k6 to export these per-scenario submetrics in its summary.
_SUBMETRICS = (
    "dropped_iterations{scenario:measure}",
    "http_reqs{scenario:measure}",
    "http_req_failed{scenario:measure}",
    "iterations{scenario:measure}",
)


def vus_for(lp: LoadPoint) -> tuple[int, int]:
    """Pre-allocate enough VUs that a 250 ms stall at this rate needs no new VU mid-run
    (allocating VUs during the measured window shows up as dropped iterations)."""
    pre = max(100, lp.rate // 4)
    return pre, max(pre * 4, 200)


def script(lp: LoadPoint, url: str) -> str:
    pre, max_vus = vus_for(lp)
    scenario = {
        "executor": "constant-arrival-rate",
        "rate": lp.rate,
        "timeUnit": "1s",
        "preAllocatedVUs": pre,
        "maxVUs": max_vus,
        "gracefulStop": "2s",
    }
    scenarios = {}
    if lp.warmup_s > 0:
        scenarios["warmup"] = {**scenario, "duration": f"{lp.warmup_s}s"}
    scenarios["measure"] = {
        **scenario,
        "duration": f"{lp.duration_s}s",
        "startTime": f"{lp.warmup_s}s",
    }
    new_connection = lp.connection_mode == "new-connection"
    options = {
        "scenarios": scenarios,
        "discardResponseBodies": True,
        # k6 -> client sidecar: a new TCP connection per request in new-connection mode ...
        "noConnectionReuse": new_connection,
        "noVUConnectionReuse": new_connection,
        "thresholds": {m: ["count>=0"] if "failed" not in m else ["rate>=0"] for m in _SUBMETRICS},
        "summaryTrendStats": ["min", "med", "avg", "p(90)", "p(99)", "p(99.9)", "max"],
    }
    # ... and sidecar -> sidecar -> app: the header selects the sidecars' non-pooling clusters.
    headers = {"x-meshlab-connection": "new"} if new_connection else {}
    return (
        "import http from 'k6/http';\n"
        f"export const options = {json.dumps(options, indent=2)};\n"
        f"const URL = {json.dumps(url)};\n"
        f"const PARAMS = {{ headers: {json.dumps(headers)} }};\n"
        "export default function () { http.get(URL, PARAMS); }\n"
    )


def run_args(csv_out: str, summary_out: str, script_path: str) -> list[str]:
    """`k6 run ...` arguments after the binary: raw CSV + summary export, no noise on stdout."""
    return [
        "run",
        "--quiet",
        "--no-usage-report",
        "--no-color",
        "--out", f"csv={csv_out}",
        "--summary-export", summary_out,
        script_path,
    ]  # fmt: skip


def time_limit_s(lp: LoadPoint) -> int:
    return lp.warmup_s + lp.duration_s + TIME_LIMIT_GRACE_S


def with_path(url: str, path: str) -> str:
    """`url` with its path replaced by the load point's path (the target is the same server)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise MeshlabError(f"target URL {url!r}: expected http://HOST[:PORT][/PATH]")
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
