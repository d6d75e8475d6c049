"""CLI for Ansible and humans: python -m meshlab.ebpf attach|detach|status|build|check.

    python -m meshlab.ebpf attach --mode ebpf \
        --pod client 198.18.1.10 /sys/fs/cgroup/unified/meshlab/client \
        --pod server 198.18.1.20 /sys/fs/cgroup/unified/meshlab/server --json
    python -m meshlab.ebpf detach --cgroup-root /sys/fs/cgroup/unified/meshlab --json
    python -m meshlab.ebpf status --json

Errors print one line `meshlab: error: ...` and exit 2 (like the meshlab CLI).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from meshlab.ebpf import build, dataplane, features
from meshlab.errors import MeshlabError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m meshlab.ebpf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--pin-root", type=Path, default=dataplane.DEFAULT_PIN_ROOT)
        p.add_argument("--json", action="store_true", help="print the result as JSON")

    p_attach = sub.add_parser("attach", help="attach (or switch) the eBPF arm")
    common(p_attach)
    p_attach.add_argument("--mode", choices=dataplane.MODES, default="ebpf")
    p_attach.add_argument(
        "--pod",
        nargs=3,
        action="append",
        metavar=("NAME", "IP", "CGROUP"),
        required=True,
        help="a meshed pod: name, IPv4, cgroup v2 directory (repeat per pod)",
    )

    p_detach = sub.add_parser("detach", help="detach everything and unpin")
    common(p_detach)
    p_detach.add_argument(
        "--pod",
        nargs=2,
        action="append",
        metavar=("NAME", "CGROUP"),
        help="take only this pod out of the eBPF arm (repeat per pod); default: everything",
    )
    p_detach.add_argument(
        "--cgroup-root",
        type=Path,
        default=None,
        help="also remove ml_* programs attached under this cgroup subtree (lost pins)",
    )

    p_status = sub.add_parser("status", help="attached programs, map counts, mode")
    common(p_status)

    p_build = sub.add_parser("build", help="compile bpf/*.c into bpf/build/")
    p_build.add_argument("--force", action="store_true")
    p_build.add_argument("--json", action="store_true")

    p_bench = sub.add_parser("bench", help="preliminary paired benchmark on a scratch topology")
    p_bench.add_argument("--rounds", type=int, default=6)
    p_bench.add_argument("--rate", type=int, default=500, help="requests per second")
    p_bench.add_argument("--duration", type=int, default=10, help="seconds per trial")
    p_bench.add_argument("--seed", type=int, default=7)
    p_bench.add_argument("--out", type=Path, default=None, help="write trials + summary JSON")
    p_bench.add_argument("--json", action="store_true")

    p_check = sub.add_parser("check", help="check the kernel and toolchain features")
    p_check.add_argument("--json", action="store_true")
    return parser


def _run(args: argparse.Namespace) -> dict:
    if args.command == "attach":
        cgroups = {name: Path(cg) for name, _ip, cg in args.pod}
        ips = {name: ip for name, ip, _cg in args.pod}
        return dataplane.attach(cgroups, ips, args.mode, pin_root=args.pin_root)
    if args.command == "detach":
        pods = {name: Path(cg) for name, cg in args.pod} if args.pod else None
        return dataplane.detach(args.pin_root, args.cgroup_root, pods)
    if args.command == "status":
        return dataplane.status(args.pin_root)
    if args.command == "build":
        objects = build.ensure_built(force=args.force)
        return {"objects": {k: str(v) for k, v in objects.items()}}
    if args.command == "bench":
        from meshlab.ebpf import devbench

        return devbench.run(args.rounds, args.rate, args.duration, args.seed, args.out)
    features.require(build=True)
    return {"ok": True}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = _run(args)
    except MeshlabError as err:
        print(f"meshlab: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        _print_human(args.command, result)
    return 0


def _print_human(command: str, result: dict) -> None:
    if command in ("attach", "status"):
        print(f"mode: {result['mode']}  (pins: {result['pin_root']})")
        for cgroup, entries in result["cgroups"].items():
            progs = ", ".join(f"{e['attach_type']}={e['program']}" for e in entries)
            print(f"  {cgroup}: {progs}")
        print(f"  msg_verdict on {dataplane.SOCKHASH}: {result['msg_verdict_attached']}")
        for name, count in result["maps"].items():
            print(f"  map {name}: {count['entries']}/{count['max_entries']}")
        if result["counters"]:
            print("  counters: " + " ".join(f"{k}={v}" for k, v in result["counters"].items()))
    elif command == "bench":
        from meshlab.ebpf import devbench

        print(devbench.format_table(result["summary"]))
    elif command == "detach":
        n = sum(len(v) for v in result["cgroups"].values())
        print(f"detached {n} program(s); unpinned: {result['unpinned']}")
    else:
        print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
