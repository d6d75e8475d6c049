"""`meshlab rules ...` (hidden): write kube-proxy's rendered tables into a testbed node
namespace, idempotently (roles/local_kube_proxy calls it; testbeds/local/iptables.py works)."""

from __future__ import annotations

from typing import Annotated

import typer

from meshlab.cli.base import print_json, typer_app

app = typer_app("Apply the testbed's rendered iptables tables (called by the testbed roles).")
Netns = Annotated[str, typer.Option(help="the testbed namespace")]


@app.command("kube-proxy")
def kube_proxy(
    netns: Netns,
    flood: Annotated[str, typer.Option(help="PODSxSERVICES or off")] = "off",
    services: Annotated[str, typer.Option(help="name=vip:port>endpoint:port,...")] = "",
) -> None:
    """kube-proxy's filter and nat chains in the node namespace: the services plus the flood."""
    from meshlab.testbeds.local import iptables

    print_json(iptables.apply_kube_proxy(netns, flood, services))
