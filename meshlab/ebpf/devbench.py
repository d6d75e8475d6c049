"""A preliminary, paired benchmark of the arms on a scratch topology (not the testbed's).

Two pods (`mbbench-client`, `mbbench-server`) with real Envoy sidecars (plaintext, Istio's
listener/cluster shapes), nginx in the server pod, k6 in the client pod; no flood, no mTLS.
Arms: `iptables` (Istio's REDIRECT rules from meshlab.testbed.rules), `ebpf`, `ebpf-connect`
(cgroup programs + the inbound-only capture, as the testbed does). Each round runs every arm
once, in a seeded random order, for each connection mode; statistics are the project's paired
log-ratio statistics (Hodges-Lehmann + paired bootstrap 95 % CI) of arm/iptables per round.

It exists to answer early whether the eBPF arms move latency or CPU at all on this machine
kind; the testbed's experiment (with mTLS, RBAC, the flooder and gates) is the real answer.

    python -m meshlab.ebpf bench [--rounds 6] [--rate 500] [--duration 10] [--out FILE]
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from meshlab.ebpf import capture, dataplane
from meshlab.ebpf.devlab import DevLab, sh, start_envoy, wait_for

ARMS = ("iptables", "ebpf", "ebpf-connect")
CONN_MODES = ("keepalive", "new")
PODS = {"client": "198.18.201.10", "server": "198.18.201.20"}
K6_CPU, MESH_CPU = "0", "1"  # k6 alone on CPU 0; sidecars and nginx on CPU 1
IDLE_TIMEOUT = "1s"  # pooled sidecar connections close between trials
SETTLE_SECONDS = 2.0

K6_SCRIPT = """
import http from 'k6/http';
const fresh = __ENV.NEW === '1';
export const options = {
  discardResponseBodies: true,
  noConnectionReuse: fresh,
  summaryTrendStats: ['med', 'p(99)'],
  scenarios: {
    load: {
      executor: 'constant-arrival-rate', rate: Number(__ENV.RATE), timeUnit: '1s',
      duration: __ENV.DURATION + 's', preAllocatedVUs: 50, maxVUs: 400,
    },
  },
};
const params = fresh ? { headers: { 'x-meshlab-connection': 'new' } } : {};
export default function () { http.get(`http://${__ENV.TARGET}/get`, params); }
"""

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/nginx-tmp;
  keepalive_requests 1000000;
  server {{ listen 80; location / {{ return 200 "ok\\n"; }} }}
}}
"""

# cgroup of each CPU consumer we account: (pod, component)
COMPONENTS = {
    "client_sidecar": ("client", "sidecar"),
    "server_sidecar": ("server", "sidecar"),
    "nginx": ("server", "app"),
    "k6": ("client", "app"),
}


@dataclass
class Trial:
    round: int
    arm: str
    conn: str
    requests: int
    failed: float
    dropped: int
    p50_ms: float
    p99_ms: float
    cpu_s: dict[str, float]

    def cpu_per_1k(self, component: str) -> float:
        return self.cpu_s[component] / (self.requests / 1000)

    @property
    def mesh_cpu_per_1k(self) -> float:
        return sum(self.cpu_per_1k(c) for c in ("client_sidecar", "server_sidecar", "nginx"))


def _lab() -> DevLab:
    return DevLab(
        prefix="mbbench",
        pods=PODS,
        gateway="198.18.201.1",
        subnet="198.18.201.0/24",
        pin_root=Path("/sys/fs/bpf/meshlab-bench"),
    )


def _set_capture(lab: DevLab, arm: str) -> None:
    from meshlab.testbed import rules

    for pod in lab.pods:
        subprocess.run(
            ["ip", "netns", "exec", lab.netns(pod), "iptables-restore"],
            input=rules.istio_capture(arm) + capture.raw_table(arm),
            text=True,
            check=True,
            capture_output=True,
        )


def apply_arm(lab: DevLab, arm: str) -> None:
    """Switch in the order that never leaves a pod uncaptured (docs/ebpf.md)."""
    if arm == "iptables":
        _set_capture(lab, "iptables")
        dataplane.detach(lab.pin_root, cgroup_root=lab.cgroup_root)
    else:
        dataplane.attach(lab.pod_cgroups(), lab.pods, arm, pin_root=lab.pin_root)
        _set_capture(lab, arm)


def _start(lab: DevLab) -> None:
    lab.build()
    for pod in lab.pods:
        start_envoy(lab, pod, PODS["server"], cpus=MESH_CPU, idle_timeout=IDLE_TIMEOUT)
    (lab.workdir / "nginx-tmp").mkdir()
    conf = lab.workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workdir=lab.workdir))
    lab.spawn("server", "app", ["nginx", "-c", str(conf)], cpus=MESH_CPU)
    probe = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://{PODS['server']}/"]
    if not wait_for(lambda: lab.exec(lab.netns("server"), *probe, check=False).stdout == "200"):
        raise RuntimeError(f"nginx did not start: {(lab.workdir / 'nginx.err').read_text()}")
    (lab.workdir / "load.js").write_text(K6_SCRIPT)
    (lab.workdir / "load.js").chmod(0o644)


def _k6(lab: DevLab, conn: str, rate: int, duration: int, summary: Path | None) -> None:
    k6 = str(Path(sys.executable).parent / "k6")
    argv = [k6, "run", "--quiet", "--no-usage-report", str(lab.workdir / "load.js")]
    argv += ["-e", f"TARGET={PODS['server']}", "-e", f"RATE={rate}"]
    argv += ["-e", f"DURATION={duration}", "-e", f"NEW={int(conn == 'new')}"]
    if summary is not None:
        argv += ["--summary-export", str(summary)]
    proc = lab.spawn(
        "client",
        "app",
        argv,
        cpus=K6_CPU,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = proc.communicate(timeout=duration + 120)
    if proc.returncode not in (0, 99):  # 99: thresholds crossed (none defined), still a run
        raise RuntimeError(f"k6 failed ({proc.returncode}): {err[-2000:]}")


def run_trial(lab: DevLab, rnd: int, arm: str, conn: str, rate: int, duration: int) -> Trial:
    apply_arm(lab, arm)
    time.sleep(SETTLE_SECONDS)
    _k6(lab, conn, rate, 3, None)  # warm-up: Envoy pools, caches, first connections
    time.sleep(SETTLE_SECONDS)
    summary = lab.workdir / f"k6-{rnd}-{arm}-{conn}.json"
    before = {name: lab.cpu_usec(*where) for name, where in COMPONENTS.items()}
    _k6(lab, conn, rate, duration, summary)
    after = {name: lab.cpu_usec(*where) for name, where in COMPONENTS.items()}
    metrics = json.loads(summary.read_text())["metrics"]
    duration_ms = metrics["http_req_duration"]
    return Trial(
        round=rnd,
        arm=arm,
        conn=conn,
        requests=int(metrics["http_reqs"]["count"]),
        failed=float(metrics["http_req_failed"].get("value", 0.0)),
        dropped=int(metrics.get("dropped_iterations", {}).get("count", 0)),
        p50_ms=float(duration_ms["med"]),
        p99_ms=float(duration_ms["p(99)"]),
        cpu_s={name: (after[name] - before[name]) / 1e6 for name in COMPONENTS},
    )


METRICS: dict[str, Callable[[Trial], float]] = {
    "p50": lambda t: t.p50_ms,
    "p99": lambda t: t.p99_ms,
    "mesh CPU-s/1k": lambda t: t.mesh_cpu_per_1k,
    "sidecars CPU-s/1k": lambda t: t.cpu_per_1k("client_sidecar") + t.cpu_per_1k("server_sidecar"),
}


def summarise(trials: list[Trial], seed: int) -> list[dict]:
    """Per connection mode, metric and eBPF arm: ratio to iptables (HL of per-round log-ratios)
    with its paired-bootstrap 95 % CI, plus each arm's median level."""
    from meshlab.analysis.stats import paired_stats

    rows: list[dict] = []
    rng = np.random.default_rng(seed)
    for conn in sorted({t.conn for t in trials}):
        by = {(t.round, t.arm): t for t in trials if t.conn == conn}
        rounds = sorted({r for r, _a in by})
        for arm in ("ebpf", "ebpf-connect"):
            paired = [r for r in rounds if (r, arm) in by and (r, "iptables") in by]
            d = np.array(
                [
                    [math.log(f(by[(r, arm)]) / f(by[(r, "iptables")])) for r in paired]
                    for f in METRICS.values()
                ]
            )
            stats = paired_stats(d, margin=math.log(1.02), rng=rng)
            for i, metric in enumerate(METRICS):
                f = METRICS[metric]
                rows.append(
                    {
                        "conn": conn,
                        "metric": metric,
                        "arm": arm,
                        "rounds": len(paired),
                        "iptables": float(np.median([f(by[(r, "iptables")]) for r in paired])),
                        "arm_level": float(np.median([f(by[(r, arm)]) for r in paired])),
                        "ratio": math.exp(stats.estimate[i]),
                        "ci95": [math.exp(x) for x in stats.ci95[i]],
                        "wilcoxon_p": float(stats.wilcoxon_p[i]),
                    }
                )
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        f"{'conn':<10}{'metric':<19}{'arm':<13}{'iptables':>10}{'arm':>10}"
        f"{'ratio':>8}  {'95% CI':<17}{'p':>7}"
    ]
    for r in rows:
        ci = "n/a" if any(math.isnan(x) for x in r["ci95"]) else "{:.3f}..{:.3f}".format(*r["ci95"])
        lines.append(
            f"{r['conn']:<10}{r['metric']:<19}{r['arm']:<13}{r['iptables']:>10.4f}"
            f"{r['arm_level']:>10.4f}{r['ratio']:>8.3f}  {ci:<17}{r['wilcoxon_p']:>7.3f}"
        )
    return "\n".join(lines)


def run(rounds: int, rate: int, duration: int, seed: int, out: Path | None) -> dict:
    lab = _lab()
    trials: list[Trial] = []
    rng = random.Random(seed)  # noqa: S311 - a seeded trial order, not a secret
    try:
        _start(lab)
        for rnd in range(rounds):
            for conn in CONN_MODES:
                order = list(ARMS)
                rng.shuffle(order)
                for arm in order:
                    trial = run_trial(lab, rnd, arm, conn, rate, duration)
                    trials.append(trial)
                    print(
                        f"round {rnd} {conn:<9} {arm:<12} p50 {trial.p50_ms:.3f} ms "
                        f"p99 {trial.p99_ms:.3f} ms  mesh CPU {trial.mesh_cpu_per_1k:.3f} s/1k "
                        f"failed {trial.failed:.4f} dropped {trial.dropped}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        lab.teardown()
    result = {
        "setup": {
            "rounds": rounds,
            "rate": rate,
            "duration_s": duration,
            "seed": seed,
            "kernel": sh("uname", "-r").stdout.strip(),
        },
        "trials": [asdict(t) for t in trials],
        "summary": summarise(trials, seed),
    }
    if out is not None:
        out.write_text(json.dumps(result, indent=2))
    return result
