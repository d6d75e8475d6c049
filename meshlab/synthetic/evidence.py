"""The raw evidence of one synthetic trial, as a testbed hands it to the judge: k6's raw CSV and
summary, /proc/stat and cgroup samples, the sidecars' access logs, the path counters, the
timeline and the host probe. Built so that the judge's figures come out at the values the
generator means (its known truth), and nothing is written past the judge:

- latencies are the lognormal's own quantiles (exp(mu + s z_i) at evenly spaced probabilities,
  in shuffled order), so the percentiles k6's summary gives are the analytic ones;
- requests start exactly on the open-model schedule, so the achieved rate is the rate and the
  schedule lag is 0;
- counters grow linearly, so the values interpolated at the window's edges are exact: CPU per
  1,000 requests of each component is what was asked, and the node's busy time is the
  components' plus a kernel overhead;
- a "noisy neighbour" (a rejected trial) steals 10 % of a CPU for the whole window, so the
  judge's own steal gates reject it, with their own words.
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from meshlab.core.arms import NO_MESH, needs_ebpf
from meshlab.core.procstat import FIELDS as PROC_STAT_FIELDS
from meshlab.core.procstat import USER_HZ
from meshlab.record.format import COMPONENTS, HostProbe, Timeline
from meshlab.record.rundir import TrialDir
from meshlab.trial.judge import Evidence
from meshlab.trial.path import EBPF_COUNTERS, NAT_RULES
from meshlab.trial.sidecar_log import parse

HOST = "meshlab-node"
SAMPLE_S = 0.5
K6_HEADER = (
    "metric_name,timestamp,metric_value,check,error,error_code,expected_response,group,method,"
    "name,proto,scenario,service,status,subproto,tls_version,url,extra_tags,metadata\n"
)
# k6 writes ~13 rows per request; the 'full' template reproduces them so the reader is timed
# on realistic files. {s} = scenario, {t} = unix µs, {v} = duration ms, {w} = waiting ms.
_TAGS = ",,,,true,,GET,http://198.19.0.1/get,HTTP/1.1,{s},,200,,,http://198.19.0.1/get,,\n"
_ROW = "{m},{t},{x}" + _TAGS
FULL_ROWS = [
    _ROW.format(m="http_reqs", t="{t}", x="1.000000", s="{s}"),
    _ROW.format(m="http_req_duration", t="{t}", x="{v}", s="{s}"),
    _ROW.format(m="http_req_blocked", t="{t}", x="0.002000", s="{s}"),
    _ROW.format(m="http_req_connecting", t="{t}", x="0.000000", s="{s}"),
    _ROW.format(m="http_req_tls_handshaking", t="{t}", x="0.000000", s="{s}"),
    _ROW.format(m="http_req_sending", t="{t}", x="0.011000", s="{s}"),
    _ROW.format(m="http_req_waiting", t="{t}", x="{w}", s="{s}"),
    _ROW.format(m="http_req_receiving", t="{t}", x="0.021000", s="{s}"),
    _ROW.format(m="http_req_failed", t="{t}", x="0.000000", s="{s}"),
    "data_sent,{t},84.000000,,,,,,,,,{s},,,,,,,\n",
    "data_received,{t},312.000000,,,,,,,,,{s},,,,,,,\n",
    "iteration_duration,{t},{v},,,,,,,,,{s},,,,,,,\n",
    "iterations,{t},1.000000,,,,,,,,,{s},,,,,,,\n",
]
MINIMAL_ROWS = [FULL_ROWS[1], FULL_ROWS[8], FULL_ROWS[11]]
SIDECAR_SHARE = {"client": 0.8, "server": 0.45}  # of k6's latency, each sidecar's own


@dataclass(frozen=True)
class Shape:
    """What one trial is to show."""

    dataplane: str
    rate: float
    requests: int
    warmup_s: float
    mu: float  # log of the median latency, ms
    sigma: float  # lognormal shape of the requests' latencies
    cpu_per_1000: dict[str, float]  # component -> CPU-s per 1000 requests
    node_overhead_per_1000: float  # the kernel and what no cgroup holds
    noisy: bool  # a neighbour steals 10 % of a CPU throughout
    probe_s: float  # the host probe's seconds
    same_node: bool = True


def latencies(rng: np.random.Generator, n: int, mu: float, sigma: float) -> np.ndarray:
    z = np.array([NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)])
    return np.exp(mu + sigma * z)[rng.permutation(n)]


def write(tdir: TrialDir, rng: np.random.Generator, s: Shape, launch: float, rows: str) -> Evidence:
    """Write the trial's raw files into `tdir` and return the evidence for the judge."""
    first = launch + s.warmup_s
    starts = first + np.arange(s.requests) / s.rate
    lat = latencies(rng, s.requests, s.mu, s.sigma)
    end = float(starts[-1])
    _k6(tdir, rng, starts, lat, s, rows)
    # counters from half a second before launch to half a second after the last request
    t = np.arange(launch - SAMPLE_S, end + 2 * SAMPLE_S, SAMPLE_S)
    span = end - first  # the judge's window: first to last request start
    scale = s.requests / span / 1000 if span > 0 else 0.0  # CPU-s per second per 1000 req
    stat_rows = _proc_stat(t, s, scale)
    cg_rows = _cgroups(t, s, scale)
    logs = {side: _sidecar_log(starts, lat, share, s) for side, share in SIDECAR_SHARE.items()}
    for side, text in logs.items():
        tdir.write_sidecar_log(side, text)
    tdir.write_samples(stat_rows, cg_rows)
    tdir.write_k6_output("")
    before, after = _path(s, 0), _path(s, s.requests)
    probe = {"0": s.probe_s, "1": s.probe_s * 1.02}
    return Evidence(
        started_at=_iso(launch),
        ended_at=_iso(end + 0.5),
        planned_start=first,
        settle={
            "seconds": 1.0,
            "cpu_busy_percent": 2.0,
            "rules_stable": True,
            "timed_out": False,
        },
        stat_rows=stat_rows,
        cgroup_rows=cg_rows,
        rc=0,
        k6_output="",
        k6_env={"GOGC": "off"},
        pinning={"k6": "0", "client_sidecar": "1", "server_sidecar": "1", "app": "1"},
        pods={"client": "client", "server": "server"},
        sidecar_logs={side: parse(text) for side, text in logs.items()},
        timeline=Timeline(
            step_started=launch - 1.3,
            quiet_wait_s=1.0,
            arm_s=0.05,
            settle_s=0.0,
            probe_s=0.1,
            launched=launch,
        ),
        host_probe=HostProbe(work="synthetic", before=probe, after=probe),
        path_snapshots=(before, after),
        same_node=s.same_node,
    )


def _iso(t: float) -> str:
    from meshlab.record.format import iso_of

    return iso_of(t)


def _k6(
    tdir: TrialDir,
    rng: np.random.Generator,
    starts: np.ndarray,
    lat: np.ndarray,
    s: Shape,
    rows: str,
) -> None:
    template = "".join(FULL_ROWS if rows == "full" else MINIMAL_ROWS)
    n_warm = int(s.warmup_s * s.rate)
    warm_starts = starts[0] - (np.arange(n_warm, 0, -1) / s.rate)
    warm = rng.choice(lat, n_warm) * 1.1 if n_warm else np.empty(0)
    with gzip.open(tdir.file(tdir.K6_RAW), "wt", compresslevel=1, newline="") as fh:
        fh.write(K6_HEADER)
        for scen, ts, vals in (("warmup", warm_starts, warm), ("measure", starts, lat)):
            # a row's timestamp is its request's end: start + duration
            us = np.round((ts + vals / 1000) * 1e6).astype(np.int64).tolist()
            fh.write(
                "".join(
                    template.format(s=scen, t=t, v=f"{v:.6f}", w=f"{v * 0.9:.6f}")
                    for t, v in zip(us, vals.tolist(), strict=True)
                )
            )
    summary = {
        "metrics": {
            "http_reqs{scenario:measure}": {"count": s.requests, "rate": float(s.rate)},
            "dropped_iterations{scenario:measure}": {"count": 0},
            "http_req_failed{scenario:measure}": {"passes": 0, "fails": s.requests},
            "iterations{scenario:measure}": {"count": s.requests},
        }
    }
    tdir.file(tdir.K6_SUMMARY).write_text(json.dumps(summary))


def _proc_stat(t: np.ndarray, s: Shape, scale: float) -> list[dict[str, Any]]:
    """Two CPUs sharing the node's busy time (components + overhead), in USER_HZ ticks as
    floats (exact: the judge interpolates them), steal on CPU 1 when noisy."""
    node = (sum(s.cpu_per_1000.values()) + s.node_overhead_per_1000) * scale  # CPU-s per s
    busy = min(0.9, node / 2)  # per CPU, share of its time
    steal = 0.10 if s.noisy else 0.0
    rows = []
    for ti in t:
        dt = ti - t[0]
        cpus = {}
        for name, st in (("cpu0", 0.0), ("cpu1", steal)):
            v = dict.fromkeys(PROC_STAT_FIELDS, 0.0)
            v["user"] = USER_HZ * dt * busy * 0.6
            v["system"] = USER_HZ * dt * busy * 0.3
            v["softirq"] = USER_HZ * dt * busy * 0.1
            v["steal"] = USER_HZ * dt * st
            v["idle"] = USER_HZ * dt * max(0.0, 1 - busy - st)
            cpus[name] = v
        cpus["cpu"] = {m: cpus["cpu0"][m] + cpus["cpu1"][m] for m in PROC_STAT_FIELDS}
        rows.append({"t": float(ti), "host": HOST, "cpus": cpus})
    return rows


def _cgroups(t: np.ndarray, s: Shape, scale: float) -> list[dict[str, Any]]:
    rows = []
    for ti in t:
        dt = ti - t[0]
        for comp in COMPONENTS:
            u = 1e6 * s.cpu_per_1000[comp] * scale * dt
            rows.append(
                {
                    "t": float(ti),
                    "host": HOST,
                    "component": comp,
                    "usage_usec": u,
                    "user_usec": 0.7 * u,
                    "system_usec": 0.3 * u,
                }
            )
    return rows


def _sidecar_log(starts: np.ndarray, lat: np.ndarray, share: float, s: Shape) -> str:
    if s.dataplane == NO_MESH:
        return ""  # no sidecar on the floor's path
    return "".join(
        f"{t + 0.0001:.6f} {round(v * share * 1000)} 200\n"
        for t, v in zip(starts.tolist(), lat.tolist(), strict=True)
    )


def _path(s: Shape, progress: int) -> dict[str, Any]:
    """Counter snapshots as testbeds/local/paths.py reads them, before (0) and after a trial
    of `progress` requests in the shape's arm."""
    counters = dict.fromkeys((*NAT_RULES, *EBPF_COUNTERS), 0)
    conns = 100 if progress else 0
    if s.dataplane == "iptables":
        counters.update(
            outbound_redirect=conns, inbound_redirect=conns // 50, inbound_delivery=conns // 50
        )
    elif needs_ebpf(s.dataplane):
        counters.update(out_redirect=conns, bypass=conns // 50)
        if s.dataplane == "ebpf":
            counters.update(
                msg_outbound=2 * progress, msg_bypass=2 * progress, msg_inbound=2 * progress
            )
    mode = s.dataplane if needs_ebpf(s.dataplane) else "off"
    return {"counters": counters, "programs": {"client": mode, "server": mode}}


def mu_of(base_p50_ms: float, *log_terms: float) -> float:
    return math.log(base_p50_ms) + sum(log_terms)
