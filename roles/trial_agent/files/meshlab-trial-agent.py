#!/usr/bin/python3
"""The node side of one cloud trial (installed by the trial_agent role; standard library only).

  meshlab-trial-agent sample --out-dir D --host H --stop-file F --max-seconds N --component ...
      Every --interval seconds (0.2, aligned to the wall clock): one /proc/stat line (with the
      per-CPU task time) to D/proc-stat.jsonl and one cpu.stat line per experiment container to
      D/cgroup-cpu.jsonl (the formats of results/README.md), until F exists or N seconds passed.
      D/containers.json says which container is which component (pod, cgroup, CPUs).

      With --window-file W: the node's snapshot (nodesnap.py: what is attached to the root
      cgroup, Merbridge's maps, the measured pods' nat counters, every task's CPU) before the
      first sample and after the last one, as W = {"start": ..., "end": ...}; --ready-file R is
      touched once the first is taken (`k6 --start-after R` waits for it).

  meshlab-trial-agent snapshot --out FILE --component ...
      One snapshot (without the task list), for the arm check before the trials
      (meshlab.testbeds.cloud.arm_ready on the controller decides from it).

  meshlab-trial-agent rearm --plan-json JSON
      Delete the cgroup_info_map entries the controller named
      (meshlab.testbeds.cloud.arm_ready.rearm:
      measured containers Merbridge decided "not in mesh" before their sidecar listened).

  meshlab-trial-agent probe --url URL --out FILE --component k6=k6/k6
      GET URL, a new connection each time, from inside the k6 container (its cgroup and network
      namespace, like k6 itself) until enough answers are 200: every measured cgroup connects.

  meshlab-trial-agent k6 --out-dir D --limit-s N --component k6=k6/k6 -- K6_ARGS...
      Runs the k6 binary of the k6 container as a process of that container, the way the local
      testbed's podexec does: in its cgroup (its CPU is accounted there), in its network
      namespace (the sidecar captures its traffic), pinned with taskset to the container's
      exclusive CPUs (the static CPU manager's choice), bounded by timeout. Files land in D
      (the working directory); D/k6-run.json records rc, start, end and CPUs.

A component is NAME=APP/CONTAINER: the container CONTAINER of the pod labelled app=APP in the
experiment namespace, e.g. client_sidecar=k6/istio-proxy.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# procstat.py is meshlab/core/procstat.py, installed beside this script by the trial_agent role:
# the node samples with the very code the local testbed samples with.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import armprep
import nodesnap
import procstat


def parse_components(specs: list[str]) -> dict[str, tuple[str, str]]:
    out = {}
    for spec in specs:
        name, sep, rest = spec.partition("=")
        app, sep2, container = rest.partition("/")
        if not (sep and sep2 and name and app and container):
            raise SystemExit(f"--component {spec!r}: expected NAME=APP/CONTAINER")
        out[name] = (app, container)
    return out


def match_containers(
    pods: dict[str, Any],
    containers: dict[str, Any],
    namespace: str,
    wanted: dict[str, tuple[str, str]],
) -> list[dict[str, str]]:
    """Join `crictl pods -o json` and `crictl ps -o json`: this node's wanted containers."""
    by_sandbox = {}
    for pod in pods.get("items") or []:
        meta = pod.get("metadata") or {}
        if meta.get("namespace") == namespace and pod.get("state") == "SANDBOX_READY":
            by_sandbox[pod["id"]] = (meta.get("name", ""), (pod.get("labels") or {}).get("app"))
    found = []
    for c in containers.get("containers") or []:
        if c.get("state") != "CONTAINER_RUNNING" or c.get("podSandboxId") not in by_sandbox:
            continue
        pod_name, app = by_sandbox[c["podSandboxId"]]
        cname = (c.get("metadata") or {}).get("name", "")
        for component, (want_app, want_container) in wanted.items():
            if (app, cname) == (want_app, want_container):
                found.append(
                    {"component": component, "pod": pod_name, "container": cname, "id": c["id"]}
                )
    return found


def find_cgroup(root: Path, container_id: str) -> Path | None:
    """The container's cgroup v2 directory (systemd driver: cri-containerd-<id>.scope)."""
    names = {f"cri-containerd-{container_id}.scope", container_id}
    for dirpath, dirnames, _ in os.walk(root):
        for d in dirnames:
            if d in names:
                return Path(dirpath, d)
    return None


def crictl_json(crictl: str, *args: str) -> dict[str, Any]:
    out = subprocess.run([crictl, *args, "-o", "json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout or "{}")


def discover(
    crictl: str, namespace: str, wanted: dict[str, tuple[str, str]], cgroup_root: Path, host: str
) -> list[dict[str, Any]]:
    pods = crictl_json(crictl, "pods", "--namespace", namespace)
    ps = crictl_json(crictl, "ps", "--namespace", namespace)
    sandboxes = {c["id"]: c.get("podSandboxId", "") for c in ps.get("containers") or []}
    found = []
    for c in match_containers(pods, ps, namespace, wanted):
        cgroup = find_cgroup(cgroup_root, c["id"])
        record = {**c, "host": host, "cgroup": str(cgroup or ""), "cpus": ""}
        if cgroup is not None:
            try:
                record["cpus"] = (cgroup / "cpuset.cpus.effective").read_text().strip()
                record["pid"] = int((cgroup / "cgroup.procs").read_text().split()[0])
                record["cgroup_id"] = nodesnap.cgroup_id(str(cgroup))
            except (OSError, ValueError, IndexError):
                pass
        sandbox = sandboxes.get(c["id"], "")
        record["pod_ip"] = nodesnap.pod_ip(nodesnap.run_command, crictl, sandbox) if sandbox else ""
        found.append(record)
    return found


def sample_lines(
    t: float, host: str, stat_text: str, containers: list[dict[str, Any]], read: Callable
) -> tuple[str, list[str]]:
    """One proc-stat line and the cgroup-cpu lines of the containers still there."""
    stat = procstat.stat_row(t, host, stat_text, procstat.read_task_time())
    lines = []
    for c in containers:
        try:
            text = read(Path(c["cgroup"], "cpu.stat"))
        except OSError:
            continue  # the container went away: its samples stop (the engine notices)
        lines.append(procstat.cgroup_row(t, host, c["component"], text))
    return stat, lines


def write_json(path: Path, doc: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)


def parse_cpulist(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def sample(args: argparse.Namespace) -> int:
    if args.affinity:
        os.sched_setaffinity(0, parse_cpulist(args.affinity))  # off the measured CPUs
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wanted = parse_components(args.component)
    try:
        containers = discover(args.crictl, args.namespace, wanted, args.cgroup_root, args.host)
    except (OSError, subprocess.CalledProcessError, ValueError) as err:
        containers = []
        (out / "agent-errors.txt").write_text(f"container discovery failed: {err}\n")
    containers = [c for c in containers if c["cgroup"]]
    write_json(out / "containers.json", containers)
    window = {"start": take_snapshot(args, containers, with_tasks=True)} if args.window_file else {}
    if args.ready_file:
        Path(args.ready_file).touch()  # k6 waits for this: the snapshot precedes its connections
    stop = Path(args.stop_file)
    deadline = time.time() + args.max_seconds
    step = args.interval
    next_t = (int(time.time() / step) + 1) * step
    with (
        (out / "proc-stat.jsonl").open("a", encoding="utf-8") as ps,
        (out / "cgroup-cpu.jsonl").open("a", encoding="utf-8") as cg,
    ):
        while True:
            time.sleep(max(0.0, next_t - time.time()))
            stat, lines = sample_lines(
                time.time(), args.host, Path("/proc/stat").read_text(), containers, Path.read_text
            )
            ps.write(stat + "\n")
            cg.writelines(line + "\n" for line in lines)
            ps.flush()
            cg.flush()
            if stop.exists() or time.time() >= deadline:
                break
            next_t += step
            if next_t < time.time():
                next_t = (int(time.time() / step) + 1) * step
    if args.window_file:
        window["end"] = take_snapshot(args, containers, with_tasks=True)
        write_json(Path(args.window_file), window)
    return 0


def take_snapshot(
    args: argparse.Namespace, containers: list[dict[str, Any]], with_tasks: bool
) -> dict[str, Any]:
    return nodesnap.snapshot(
        args.host,
        containers,
        nodesnap.run_command,
        args.bpftool,
        args.dump_map,
        target=args.target,
        with_tasks=with_tasks,
    )


def snapshot_cmd(args: argparse.Namespace) -> int:
    """One snapshot for the arm check; a failed discovery is recorded, not fatal."""
    errors = []
    try:
        found = discover(
            args.crictl,
            args.namespace,
            parse_components(args.component),
            args.cgroup_root,
            args.host,
        )
    except (OSError, subprocess.CalledProcessError, ValueError) as err:
        found, errors = [], [f"container discovery failed: {err}"]
    doc = take_snapshot(args, [c for c in found if c["cgroup"]], with_tasks=False)
    doc["errors"] += errors
    write_json(Path(args.out), doc)
    return 0


def k6_argv(pid: int, cpus: str, limit_s: int, k6_binary: str, k6_args: list[str]) -> list[str]:
    return [
        "timeout",
        "--kill-after=10",
        str(limit_s),
        "taskset",
        "-c",
        cpus,
        "nsenter",
        f"--net=/proc/{pid}/ns/net",
        "--",
        f"/proc/{pid}/root{k6_binary}",
        *k6_args,
    ]


def run_k6(args: argparse.Namespace) -> int:
    out = Path(args.out_dir)
    record: dict[str, Any] = {"rc": -1, "started": None, "ended": None, "cpus": ""}
    record["host"] = args.host
    output = ""
    if args.start_after:
        # The node's start snapshot must not overlap k6's first connections (their counters).
        deadline = time.time() + args.start_after_timeout
        while not Path(args.start_after).exists() and time.time() < deadline:
            time.sleep(0.05)
        record["start_after_waited"] = Path(args.start_after).exists()
    try:
        wanted = parse_components(args.component)
        found = discover(args.crictl, args.namespace, wanted, args.cgroup_root, args.host)
        k6 = next((c for c in found if c["component"] == "k6" and c["cgroup"]), None)
        if k6 is None:
            raise RuntimeError(f"no running k6 container in namespace {args.namespace} here")
        cgroup = Path(k6["cgroup"])
        pid = int((cgroup / "cgroup.procs").read_text().split()[0])
        record["cpus"], record["pod"] = k6["cpus"], k6["pod"]
        if not k6["cpus"]:
            raise RuntimeError(f"{cgroup}: no cpuset.cpus.effective to pin k6 to")
        argv = k6_argv(pid, k6["cpus"], args.limit_s, args.k6_binary, args.k6_args)
        record["argv"] = argv

        def join_cgroup() -> None:  # in the child, before exec: k6 runs in the k6 container
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(out), **dict(args.env)}
        record["started"] = time.time()
        proc = subprocess.run(
            argv,
            cwd=out,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=join_cgroup,  # single-threaded caller: safe, and needed for the cgroup
            check=False,
        )
        record["ended"] = time.time()
        record["env"] = dict(args.env)
        record["rc"] = proc.returncode
        output = proc.stdout
        if proc.returncode == 124:
            output += f"\nk6 killed after {args.limit_s} s"
    except (OSError, RuntimeError, ValueError, subprocess.CalledProcessError) as err:
        output += f"\nmeshlab-trial-agent: {err}"
    (out / "k6-output.txt").write_text(output)
    write_json(out / "k6-run.json", record)
    return 0  # the engine judges from the files; a failed k6 is a rejected trial, not a failed play


def _env(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("sample", "k6", "snapshot", "probe"):
        p = sub.add_parser(name)
        p.add_argument("--host", default=socket.gethostname())
        p.add_argument("--namespace", default="meshlab")
        p.add_argument("--component", action="append", default=[])
        p.add_argument("--crictl", default="/usr/local/bin/crictl")
        p.add_argument("--cgroup-root", type=Path, default=Path("/sys/fs/cgroup/kubepods.slice"))
    for name in ("sample", "snapshot", "rearm"):
        p = sub.choices.get(name) or sub.add_parser(name)
        p.add_argument("--bpftool", default="/usr/sbin/bpftool")
        p.add_argument("--dump-map", action="append", default=[], help="Merbridge map to dump")
        p.add_argument("--target", default="", help="k6's target IP:PORT (recorded)")
    for name in ("sample", "k6"):
        sub.choices[name].add_argument("--out-dir", required=True)
    s = sub.choices["sample"]
    s.add_argument("--stop-file", required=True)
    s.add_argument("--max-seconds", type=float, required=True)
    s.add_argument("--affinity", default="", help="CPU list to run the sampler on")
    s.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    s.add_argument("--window-file", default="", help="snapshots at the start and the end")
    s.add_argument("--ready-file", default="", help="touched once the start snapshot is taken")
    sub.choices["snapshot"].add_argument("--out", required=True)
    sub.choices["rearm"].add_argument("--plan-json", required=True)
    pr = sub.choices["probe"]
    pr.add_argument("--url", required=True)
    pr.add_argument("--out", required=True)
    pr.add_argument("--requests", type=int, default=20)
    pr.add_argument("--successes", type=int, default=3)
    inner = sub.add_parser("probe-requests")
    inner.add_argument("--url", required=True)
    inner.add_argument("--requests", type=int, default=20)
    inner.add_argument("--successes", type=int, default=3)
    k = sub.choices["k6"]
    k.add_argument("--limit-s", type=int, required=True)
    k.add_argument("--k6-binary", default="/usr/bin/k6", help="path inside the k6 container")
    k.add_argument("--env", type=_env, action="append", default=[])
    k.add_argument("--start-after", default="", help="wait until this file exists")
    k.add_argument("--start-after-timeout", type=float, default=60.0)
    k.add_argument("k6_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.cmd == "sample":
        return sample(args)
    if args.cmd == "snapshot":
        return snapshot_cmd(args)
    if args.cmd == "rearm":
        return armprep.rearm(args)
    if args.cmd == "probe":
        return armprep.probe(args, discover, parse_components, Path(__file__).resolve())
    if args.cmd == "probe-requests":
        print(json.dumps(armprep.probe_requests(args.url, args.requests, args.successes)))
        return 0
    if args.k6_args[:1] == ["--"]:
        args.k6_args = args.k6_args[1:]
    return run_k6(args)


if __name__ == "__main__":
    raise SystemExit(main())
