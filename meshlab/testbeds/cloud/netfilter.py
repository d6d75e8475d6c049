"""Packet counters of istio-init's REDIRECT chains, from `iptables-save -c -t nat` output.

iptables 1.8.9 prints each rule with counters as `[packets:bytes] -A CHAIN ...`
(meshlab/testbeds/cloud/facts/iptables-1.8.9.yml). The nat table sees only a connection's
first packet,
so a REDIRECT rule's packet count is the number of connections it redirected. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from meshlab.testbeds.cloud import upstream

RULE = re.compile(r"^\[(\d+):(\d+)\]\s+-A\s+(\S+)\s*(.*)$")


@dataclass(frozen=True)
class Counters:
    """Connections REDIRECTed to Envoy's outbound and inbound listeners in one netns, and those
    ISTIO_OUTPUT returned untouched because they come from the inbound passthrough address."""

    outbound: int  # ISTIO_REDIRECT -> 15001
    inbound: int  # ISTIO_IN_REDIRECT -> 15006
    passthrough: int  # ISTIO_OUTPUT -s 127.0.0.6 -j RETURN (Envoy toward the app)
    chains_seen: bool  # istio-init's chains exist in this table at all


def outbound_chain() -> str:
    return upstream.value("istio", "iptables_outbound_chain")["chain"]


def inbound_chain() -> str:
    return upstream.value("istio", "iptables_inbound_chain")["chain"]


def parse(text: str) -> Counters:
    """Sum the REDIRECT rules' packets of each Istio chain in one `iptables-save -c` text."""
    out, inb, passthrough, seen = 0, 0, 0, False
    source = upstream.value("istio", "inbound_passthrough_source")
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(":") and line[1:].split(" ", 1)[0] in (
            outbound_chain(),
            inbound_chain(),
        ):
            seen = True
        m = RULE.match(line)
        if not m:
            continue
        packets, chain, rest = int(m.group(1)), m.group(3), m.group(4)
        if chain == outbound_chain() and "REDIRECT" in rest:
            out += packets
        elif chain == inbound_chain() and "REDIRECT" in rest:
            inb += packets
        elif chain == "ISTIO_OUTPUT" and f"-s {source}/32" in rest and rest.endswith("RETURN"):
            passthrough += packets
    return Counters(out, inb, passthrough, seen)


def best(texts: dict[str, str]) -> tuple[str, Counters] | None:
    """The backend (legacy or nft) whose nat table holds istio-init's chains; istio-init writes
    to one of them, the other is empty."""
    parsed = {backend: parse(text) for backend, text in texts.items() if text}
    with_chains = [(b, c) for b, c in parsed.items() if c.chains_seen]
    return with_chains[0] if with_chains else None
