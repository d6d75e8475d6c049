"""Apply a rendered rule set inside a testbed namespace, idempotently.

`iptables-restore` without --noflush replaces exactly the tables present in its input, in one
transaction: that is how kube-proxy syncs and how istio-iptables installs. We only call it when
the namespace's current table differs from the rendered one, so a second `testbed up` changes
nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass

from meshlab.ebpf.capture import raw_table
from meshlab.errors import MeshlabError
from meshlab.testbed import rules
from meshlab.testbed.flood import parse_flood

# iptables-save prints statistic probabilities from a 32-bit fixed point (0.02000000002 for
# kube-proxy's 0.0200000000): compare them at a precision both sides agree on.
_PROBABILITY = re.compile(r"--probability (\d+\.\d+)")


@dataclass(frozen=True)
class Table:
    name: str
    chains: frozenset[str]
    rules: dict[str, tuple[str, ...]]

    @property
    def rule_count(self) -> int:
        return sum(len(r) for r in self.rules.values())


def parse(text: str) -> Table:
    """One table of iptables-save/-restore text, canonicalised (no chain order, no counters)."""
    name = ""
    chains: set[str] = set()
    by_chain: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("*"):
            name = line[1:].strip()
        elif line.startswith(":"):
            chains.add(line.split()[0][1:])
        elif line.startswith("-A "):
            line = _PROBABILITY.sub(lambda m: f"--probability {float(m.group(1)):.6f}", line)
            by_chain.setdefault(line.split()[1], []).append(line)
    return Table(name, frozenset(chains), {c: tuple(r) for c, r in by_chain.items()})


def _netns_cmd(netns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def save(netns: str, table: str) -> str:
    proc = subprocess.run(
        _netns_cmd(netns, "iptables-save", "-t", table), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise MeshlabError(f"iptables-save -t {table} in {netns} failed: {proc.stderr.strip()}")
    return proc.stdout


def save_line_count(netns: str) -> int:
    """`iptables-save | wc -l` in a namespace: the thesis' "iptables entries" (all tables)."""
    proc = subprocess.run(
        _netns_cmd(netns, "iptables-save"), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise MeshlabError(f"iptables-save in {netns} failed: {proc.stderr.strip()}")
    return proc.stdout.count("\n")


def apply(netns: str, text: str) -> dict[str, object]:
    """Make the namespace's table equal to `text`; report whether anything changed."""
    wanted = parse(text)
    started = time.monotonic()
    current = parse(save(netns, wanted.name))
    changed = current.chains != wanted.chains or current.rules != wanted.rules
    if changed:
        proc = subprocess.run(
            _netns_cmd(netns, "iptables-restore", "-w", "30"),
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise MeshlabError(
                f"iptables-restore of table {wanted.name} in {netns} failed: "
                f"{proc.stderr.strip()[:500]}"
            )
    return {
        "changed": changed,
        "netns": netns,
        "table": wanted.name,
        "rules": wanted.rule_count,
        "chains": len(wanted.chains),
        "seconds": round(time.monotonic() - started, 3),
    }


def _services(spec: str) -> list[rules.Service]:
    """`name=vip:port>endpoint:target_port,...` from the Ansible role."""
    out = []
    for item in filter(None, spec.split(",")):
        name, rest = item.split("=", 1)
        front, back = rest.split(">", 1)
        vip, port = front.rsplit(":", 1)
        endpoint, target = back.rsplit(":", 1)
        out.append(rules.Service("meshlab", name, vip, int(port), int(target), (endpoint,)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshlab.testbed.iptables")
    parser.add_argument("--netns", required=True)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--istio", metavar="ARM", help="Istio capture for this dataplane arm")
    what.add_argument("--kube-proxy-nat", metavar="FLOOD", help="PODSxSERVICES or off")
    what.add_argument("--kube-proxy-filter", action="store_true")
    parser.add_argument("--services", default="", help="name=vip:port>endpoint:port,...")
    parser.add_argument("--mesh-ips", default="", help="meshed pod IPs on this host (eBPF arms)")
    args = parser.parse_args(argv)
    try:
        if args.istio:
            # The arm's nat capture, and the raw table the eBPF arms need (empty otherwise).
            nat = apply(args.netns, rules.istio_capture(args.istio))
            mesh_ips = [ip for ip in args.mesh_ips.split(",") if ip]
            raw = apply(args.netns, raw_table(args.istio, mesh_ips or None))
            print(json.dumps({**nat, "changed": nat["changed"] or raw["changed"], "raw": raw}))
            return 0
        if args.kube_proxy_filter:
            text = rules.kube_proxy_filter()
        else:
            flood = parse_flood(args.kube_proxy_nat)
            text = rules.kube_proxy_nat(_services(args.services) + rules.flood_services(flood))
        result = apply(args.netns, text)
        if args.kube_proxy_nat:
            result["save_lines"] = save_line_count(args.netns)
    except MeshlabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
