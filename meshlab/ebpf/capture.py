"""iptables the pod namespaces need in the eBPF arms, beyond Istio's inbound capture.

The testbed's rule generator (meshlab.testbeds.local.rules) owns the pod namespaces' tables; this
module only states what the eBPF arms need from it, so both stay in one place each.

Why a raw table: in the eBPF arms the nat table still exists in every pod namespace (the
PREROUTING inbound capture), so conntrack tracks every connection, including the mesh legs
the programs redirect. NAT keeps 4-tuples unique: a new connection whose tuple equals the
reply tuple of an existing entry gets its *source port* remapped on the wire, invisibly to
the connecting socket. The iptables arm leaves exactly such entries behind (REDIRECT'd
connections, 120 s in TIME_WAIT), so right after a switch to an eBPF arm, under
new-connection load, a share of connections (≈ entries left / ephemeral ports: 18 to 24 %
measured at 500 conn/s) reaches the sidecar from a port the connecting side never saw; the
4-tuple key misses and SO_ORIGINAL_DST has no answer, so the request fails. Not tracking
the mesh legs removes the clash (untracked packets skip NAT) and matches the design's intent
that mesh traffic skips iptables. Traffic from outside the mesh (e.g. plaintext to :80) is
still tracked and REDIRECTed to 15006; plaintext aimed at :15006 itself reaches Envoy's
inbound listener untracked, finds no original destination and no filter chain, and is closed,
as it is with the REDIRECT.
"""

from __future__ import annotations

from collections.abc import Sequence

# iptables-restore input for the raw table of a pod namespace in the ebpf/ebpf-connect arms.
EBPF_RAW = """*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -p tcp -m tcp --dport 15006 -j NOTRACK
-A PREROUTING -p tcp -m tcp --sport 15006 -j NOTRACK
-A OUTPUT -p tcp -m tcp --dport 15006 -j NOTRACK
-A OUTPUT -p tcp -m tcp --sport 15006 -j NOTRACK
-A OUTPUT -o lo -p tcp -m tcp --dport 15001 -j NOTRACK
-A OUTPUT -o lo -p tcp -m tcp --sport 15001 -j NOTRACK
COMMIT
"""

# The raw table in the iptables arm: empty (Istio's REDIRECT needs conntrack on every leg).
IPTABLES_RAW = """*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
"""


def raw_table(arm: str, mesh_ips: Sequence[str] | None = None) -> str:
    """The raw table for `arm`. With `mesh_ips` (the meshed pods on this host), the 15006 legs
    are untracked only between those pods: the legs the programs bypass. A client outside the
    eBPF bypass (another node, an ingress, the node namespace) still reaches :80 through the
    inbound REDIRECT, whose replies leave from :15006 and must stay tracked to be un-NATed
    back to :80."""
    if arm in ("iptables", "no-mesh"):
        return IPTABLES_RAW
    if mesh_ips is None:
        return EBPF_RAW
    rules = []
    for ip in mesh_ips:
        rules += [
            f"-A PREROUTING -s {ip}/32 -p tcp -m tcp --dport 15006 -j NOTRACK",
            f"-A PREROUTING -s {ip}/32 -p tcp -m tcp --sport 15006 -j NOTRACK",
            f"-A OUTPUT -d {ip}/32 -p tcp -m tcp --dport 15006 -j NOTRACK",
            f"-A OUTPUT -d {ip}/32 -p tcp -m tcp --sport 15006 -j NOTRACK",
        ]
    rules += [
        "-A OUTPUT -o lo -p tcp -m tcp --dport 15001 -j NOTRACK",
        "-A OUTPUT -o lo -p tcp -m tcp --sport 15001 -j NOTRACK",
    ]
    head = "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
    return head + "\n".join(rules) + "\nCOMMIT\n"
