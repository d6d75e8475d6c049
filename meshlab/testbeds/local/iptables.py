"""Apply a rendered rule set inside a testbed namespace, idempotently.

`iptables-restore` without --noflush replaces exactly the tables present in its input, in one
transaction: that is how kube-proxy syncs and how istio-iptables installs. We only call it when
the namespace's current table differs from the rendered one, so a second `testbed up` changes
nothing.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass

from meshlab.core.flood import parse_flood
from meshlab.ebpf.capture import raw_table
from meshlab.errors import MeshlabError
from meshlab.testbeds.local import rules

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


def apply_capture(netns: str, arm: str, mesh_ips: list[str]) -> dict[str, object]:
    """The arm's nat capture in a pod namespace, and the raw table the eBPF arms need (empty
    otherwise)."""
    nat = apply(netns, rules.istio_capture(arm))
    raw = apply(netns, raw_table(arm, mesh_ips or None))
    return {**nat, "changed": nat["changed"] or raw["changed"], "raw": raw}


def apply_kube_proxy(netns: str, flood: str, services: str) -> dict[str, object]:
    """kube-proxy's filter chains and its nat chains for `services` plus the flood, each in
    one transaction, as its full sync writes them; with the node's resulting rule count."""
    filter_ = apply(netns, rules.kube_proxy_filter())
    flood_services = rules.flood_services(parse_flood(flood, field="--flood"))
    nat = apply(netns, rules.kube_proxy_nat(_services(services) + flood_services))
    return {
        **nat,
        "changed": nat["changed"] or filter_["changed"],
        "filter": filter_,
        "save_lines": save_line_count(netns),
    }
