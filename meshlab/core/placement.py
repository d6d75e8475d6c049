"""Where the client and server pods run: on one node, or on two (the thesis' layout: k6 on the
load-test node, the server on a worker). Same-node is where Merbridge-style eBPF helps most
(the sockops/sk_msg bypass skips the sidecar-to-sidecar TCP path); across nodes it can only
shorten the app <-> sidecar hops, and every packet still crosses both nodes' netfilter hooks."""

from __future__ import annotations

from typing import Literal, get_args

Placement = Literal["same-node", "cross-node"]
PLACEMENTS: tuple[str, ...] = get_args(Placement)
