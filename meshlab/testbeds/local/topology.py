"""The local testbed's topology, read from the one file that defines it (topology.yml beside
this module; the playbooks read the same file through playbooks/vars/topology.yml)."""

from __future__ import annotations

import ipaddress
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

FILE = Path(__file__).with_name("topology.yml")


class Topology(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)  # the layout lists are the playbooks'

    prefix: str
    run_dir: Path
    bpf_pin_root: Path
    envoy_uid: int
    outbound_port: int
    inbound_port: int
    hbone_port: int
    inbound_excluded_ports: tuple[int, ...]
    cluster_cidr: str
    mesh_cidr: str
    service_cidr: str
    flood_pods_from: ipaddress.IPv4Address
    flood_vips_from: ipaddress.IPv4Address
    nodes: list[dict[str, Any]]

    @property
    def state_file(self) -> Path:
        """testbed.json: the recorded state the CLI and the trial loop read."""
        return self.run_dir / "testbed.json"

    def flood_pod_ips(self, pods: int) -> list[str]:
        return [str(self.flood_pods_from + 1 + i) for i in range(pods)]

    def flood_vips(self, services: int) -> list[str]:
        return [str(self.flood_vips_from + 1 + j) for j in range(services)]


@cache
def topology() -> Topology:
    return Topology.model_validate(yaml.safe_load(FILE.read_text())["meshlab_topology"])
