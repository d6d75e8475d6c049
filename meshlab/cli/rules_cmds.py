"""`meshlab rules ...` (hidden): write a rendered iptables table into a testbed namespace,
idempotently (the testbed roles call these; meshlab.testbed.iptables does the work)."""

from __future__ import annotations

from typing import Annotated

import typer

from meshlab.cli.base import print_json, typer_app

app = typer_app("Apply the testbed's rendered iptables tables (called by the testbed roles).")
Netns = Annotated[str, typer.Option(help="the testbed namespace")]


@app.command()
def istio(
    netns: Netns,
    arm: Annotated[str, typer.Option(help="the pod's dataplane arm")],
    mesh_ips: Annotated[
        str, typer.Option(help="meshed pod IPs on this host, comma-separated")
    ] = "",
) -> None:
    """A pod's Istio capture for its arm (nat), and the raw table the eBPF arms need."""
    from meshlab.testbed import iptables

    print_json(iptables.apply_capture(netns, arm, [ip for ip in mesh_ips.split(",") if ip]))


@app.command("kube-proxy")
def kube_proxy(
    netns: Netns,
    flood: Annotated[str, typer.Option(help="PODSxSERVICES or off")] = "off",
    services: Annotated[str, typer.Option(help="name=vip:port>endpoint:port,...")] = "",
) -> None:
    """kube-proxy's filter and nat chains in the node namespace: the services plus the flood."""
    from meshlab.testbed import iptables

    print_json(iptables.apply_kube_proxy(netns, flood, services))
