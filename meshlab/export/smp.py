"""One SMP result per arm x block: meshlab's figures mapped onto the pinned SMP messages.

A block is one (load point, flood, placement) of the plan; an arm ran it once per round. SMP
describes one test, so each SMP field is an aggregate over the arm's valid rounds in the block,
said in `AGGREGATION` (and in the extension, which also carries every round's trial.json, the
pairing, the paired intervals and the verdicts: meshlab/export/extension.py). What SMP has no
field for is never guessed: such fields are left unset (proto3 JSON omits them).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from meshlab.analysis.loading.run import Block, Run, Trial
from meshlab.export.schema import Schema
from meshlab.record.format import LATENCY_KEYS, TrialRecord, iso_of

NO_MESH = "no-mesh"  # the floor arm (docs: no sidecar, no capture): no mTLS, no sidecars
SIDECARS = ("client_sidecar", "server_sidecar")
WORKLOADS = {"app": "nginx", "k6": "k6"}
EXTENSION_FILE = "meshlab.json"
# Which SMP message each file of a result directory holds (smp.<name>).
FILES = {
    "result.json": "PerformanceTestResult",
    "test-config.json": "PerformanceTestConfig",
    "mesh-config.json": "ServiceMeshConfig",
    "environment.json": "EnvironmentConfig",
    # SMP declares PerformanceTestResult.CPU but no field of any message has that type, so the
    # node's CPU by mode is a message of its own, beside the result it belongs to.
    "node-cpu.json": "PerformanceTestResult.CPU",
}
AGGREGATION = {
    "latencies_ms.p50, p90, p99 (extension: every percentile)": "median over the arm's valid "
    "rounds of each trial's percentile (k6 http_req_duration over the trial's window)",
    "latencies_ms.average": "mean over all requests of the valid rounds (request-weighted)",
    "latencies_ms.min / max": "the smallest minimum / the largest maximum of any valid round",
    "actual_qps": "median over valid rounds of the achieved rate ((n - 1) / window span)",
    "start_time / end_time": "the first valid round's window start / the last one's end; the "
    "arm ran only in its rounds' windows in between (interleaved with the other arms)",
    "cpu_mcores (sidecar, node)": "1000 x CPU-seconds / window seconds, summed over the valid "
    "rounds (the mean number of CPUs busy while measured), rounded to an integer",
    "node CPU modes": "percent of the node CPUs' time over the valid rounds' windows (every CPU "
    "of every host that ran the trials); idle, iowait and steal from the precise counters, busy "
    "split into user, nice, system, hardware and software interrupt by the tick-sampled shares",
}


@dataclass(frozen=True)
class ArmBlock:
    """Every trial one arm ran in one block (valid and rejected)."""

    arm: str
    block: Block
    trials: tuple[Trial, ...]
    records: tuple[TrialRecord, ...]  # the trials' trial.json, same order

    @property
    def valid(self) -> list[Trial]:
        return sorted((t for t in self.trials if t.valid), key=lambda t: t.round)

    @property
    def name(self) -> str:
        """The result's directory name: <load point>.<flood>.<placement>.<arm>."""
        return ".".join((*self.block, self.arm))

    @property
    def block_key(self) -> str:
        return "/".join(self.block)  # as the manifest's `stopping` names a block


def arm_blocks(run: Run) -> list[ArmBlock]:
    """Per block (plan order) and arm (experiment order), the arms that ran in it."""
    out = []
    for block in run.blocks():
        for arm in run.arms:
            trials = tuple(t for t in run.trials if t.arm == arm and t.block == block)
            if trials:
                records = tuple(t.dir.read_record() for t in trials)
                out.append(ArmBlock(arm, block, trials, records))
    return out


def ids(run: Run, ab: ArmBlock) -> dict[str, str]:
    base = f"{run.experiment_id}/{run.run_id}"
    return {
        "result": f"{base}/{ab.block_key}/{ab.arm}",
        "test": f"{base}/{ab.block_key}",
        "mesh_config": f"{base}/{ab.arm}",
        "env": base,
    }


def latency_ms(valid: list[Trial]) -> dict[str, float]:
    """Every summary.latency_ms key aggregated over the valid rounds (AGGREGATION)."""
    out = {}
    for key in LATENCY_KEYS:
        values = [t.latency[key] for t in valid if key in t.latency]
        if not values:
            continue
        if key == "min":
            out[key] = min(values)
        elif key == "max":
            out[key] = max(values)
        elif key == "mean":
            weights = [float(t.requests or 0) for t in valid if key in t.latency]
            total = sum(weights)
            out[key] = (
                sum(v * w for v, w in zip(values, weights, strict=True)) / total
                if total > 0
                else statistics.fmean(values)
            )
        else:
            out[key] = statistics.median(values)
    return out


def actual_qps(valid: list[Trial]) -> float | None:
    rates = [t.achieved_rate for t in valid if t.achieved_rate is not None]
    return statistics.median(rates) if rates else None


def _seconds(t: Trial) -> float:
    return t.window[1] - t.window[0] if t.window else 0.0


def mcores(valid: list[Trial], components: tuple[str, ...]) -> int | None:
    """Mean millicores the components used while measured (AGGREGATION)."""
    busy, seconds = 0.0, 0.0
    for t in valid:
        values = [t.cpu_value(c, "cpu_seconds") for c in components]
        if any(v is None for v in values) or _seconds(t) <= 0:
            continue
        busy += sum(v for v in values if v is not None)
        seconds += _seconds(t)
    return round(1000 * busy / seconds) if seconds > 0 else None


def node_cpu_seconds(ab: ArmBlock) -> dict[str, float] | None:
    """The node accounts (trial.json `node`) summed over the valid rounds, CPUs and hosts."""
    totals: dict[str, float] = {}
    windows = 0.0
    for record in ab.records:
        if not record.valid or record.node is None:
            continue
        windows += record.window.seconds
        for cpus in record.node.hosts.values():
            for a in cpus.values():
                for key in ("elapsed", "busy", "idle", "iowait", "steal"):
                    totals[key] = totals.get(key, 0.0) + getattr(a, key)
                for mode, value in a.ticks.items():
                    totals[f"ticks_{mode}"] = totals.get(f"ticks_{mode}", 0.0) + value
    if not totals or totals.get("elapsed", 0.0) <= 0:
        return None
    return {**totals, "window_seconds": windows}


def node_cpu(seconds: dict[str, float] | None) -> dict[str, Any]:
    """smp.PerformanceTestResult.CPU from the summed node accounts (AGGREGATION)."""
    if seconds is None:
        return {}
    elapsed = seconds["elapsed"]
    out: dict[str, Any] = {
        "cpu_mcores": round(1000 * seconds["busy"] / seconds["window_seconds"])
        if seconds["window_seconds"] > 0
        else 0,
        "idle": 100 * seconds["idle"] / elapsed,
        "iowait": 100 * seconds["iowait"] / elapsed,
        "steal": 100 * seconds["steal"] / elapsed,
    }
    ticks = {k.removeprefix("ticks_"): v for k, v in seconds.items() if k.startswith("ticks_")}
    tick_total = sum(ticks.values())
    if tick_total > 0:
        busy = 100 * seconds["busy"] / elapsed
        for mode, smp_name in (
            ("user", "user"),
            ("nice", "nice"),
            ("system", "system"),
            ("irq", "hardware_interrupt"),
            ("softirq", "software_interrupt"),
        ):
            out[smp_name] = busy * ticks.get(mode, 0.0) / tick_total
    return out


def documents(schema: Schema, run: Run, ab: ArmBlock) -> dict[str, dict[str, Any]]:
    """file name -> the SMP message it holds, in JSON form, before validation."""
    valid = ab.valid
    m = run.manifest
    exp = m.experiment
    lp = next(x for x in exp.load_points if x.name == ab.block[0])
    ident = ids(run, ab)
    versions = m.versions
    cloud = m.testbed == "cloud"
    meshed = ab.arm != NO_MESH
    pairs = max((t.pair for t in ab.trials), default=1)
    labels = {
        "meshlab.arm": ab.arm,
        "meshlab.dataplane": exp.arms[ab.arm].dataplane,
        "meshlab.load_point": lp.name,
        "meshlab.flood": ab.block[1],
        "meshlab.placement": ab.block[2],
        "meshlab.rounds_valid": str(len(valid)),
        "meshlab.aggregation": "over rounds: see meshlab.json",
    }
    lat = latency_ms(valid)
    qps = actual_qps(valid)
    result: dict[str, Any] = {
        "smp_version": schema.tag,
        "id": ident["result"],
        "labels": labels,
        "latencies_ms": {
            smp_key: lat[key]
            for smp_key, key in (
                ("min", "min"),
                ("average", "mean"),
                ("p50", "p50"),
                ("p90", "p90"),
                ("p99", "p99"),
                ("max", "max"),
            )
            if key in lat
        },
        "details_uri": EXTENSION_FILE,
        "test_id": ident["test"],
        "mesh_config_id": ident["mesh_config"],
        "env_id": ident["env"],
    }
    windows = [t.window for t in valid if t.window]
    if windows:
        result["start_time"] = iso_of(min(w[0] for w in windows))
        result["end_time"] = iso_of(max(w[1] for w in windows))
    if qps is not None:
        result["actual_qps"] = qps
    test_config = {
        "smp_version": schema.tag,
        "id": ident["test"],
        "name": f"{run.experiment_id} {ab.block_key}",
        "labels": {
            "meshlab.experiment": run.experiment_id,
            "meshlab.run": run.run_id,
            "meshlab.spec_hash": run.spec_hash,
            "meshlab.connection_mode": lp.connection_mode,
            "meshlab.warmup_s": str(lp.warmup_s),
            "meshlab.design": exp.design,
        },
        "clients": [
            {
                "internal": True,  # k6 runs inside the testbed, beside the client sidecar
                "load_generator": f"k6 {versions.get('k6', 'unknown')}",
                "protocol": "PROTOCOL_HTTP",
                "rps": lp.rate,
                "endpoint_urls": [lp.path],
                "additional_options": "constant-arrival-rate (open model); "
                f"{lp.connection_mode}; warm-up {lp.warmup_s} s not measured",
            }
            for _ in range(pairs)
        ],
        "duration": f"{lp.duration_s}s",
    }
    sidecar: dict[str, Any] = {"count": 2 * pairs if meshed else 0}
    side_mcores = mcores(valid, SIDECARS)
    if meshed and side_mcores is not None:
        sidecar["cpu_mcores"] = side_mcores
    if meshed and qps is not None:
        sidecar["rps"] = round(qps)
    mesh_labels = {"meshlab.testbed": m.testbed, "meshlab.dataplane": exp.arms[ab.arm].dataplane}
    mesh_type: dict[str, Any] = {"labels": mesh_labels}
    if cloud:
        mesh_type |= {"type": "ISTIO", "version": versions.get("istio", "unknown")}
    else:  # the local testbed runs Envoy sidecars with an Istio-like bootstrap, not Istio
        mesh_type["version"] = f"envoy {versions.get('envoy', 'unknown')}"
    mesh_config = {
        "smp_version": schema.tag,
        "id": ident["mesh_config"],
        "labels": {"meshlab.arm": ab.arm, "meshlab.description": exp.arms[ab.arm].description},
        "sidecar": sidecar,
        # both testbeds run STRICT mTLS between sidecars (docs/architecture.md); the floor has none
        "mtls_enabled": meshed,
        "mesh_build": f"istio {versions['istio']}" if cloud and "istio" in versions else "",
        "proxy_build": f"envoy {versions.get('envoy', 'unknown')}" if meshed else "",
        "exp_group_uuid": run.experiment_id,
        "exp_uuid": run.run_id,
        "profile": ab.arm,
        "mesh_type": mesh_type,
    }
    environment = {
        "smp_version": schema.tag,
        "id": ident["env"],
        "labels": {
            "meshlab.testbed": m.testbed,
            "meshlab.hostname": str(m.host.get("hostname", "")),
            "meshlab.kernel": versions.get("kernel", ""),
            "meshlab.git_sha": m.git.sha,
        },
        "kubernetes_version": versions.get("kubernetes", "") if cloud else "",
        "nodes": [
            {
                "type": str(m.host.get("cpu_model") or "unknown"),
                "cores": int(m.host.get("cores") or 0),
            }
        ],
        "individual_workloads": [{"name": name, "count": pairs} for name in WORKLOADS.values()],
    }
    return {
        "result.json": result,
        "test-config.json": test_config,
        "mesh-config.json": mesh_config,
        "environment.json": environment,
        "node-cpu.json": node_cpu(node_cpu_seconds(ab)),
    }
