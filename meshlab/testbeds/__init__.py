"""The two testbeds behind one interface (base.Testbed): `local`, an Istio-style mesh in
network namespaces on this host, and `cloud`, Kubernetes on OpenStack VMs. The engine picks
one by name; nothing else asks which testbed it is on."""

from __future__ import annotations

from meshlab.errors import MeshlabError
from meshlab.record.format import TESTBEDS
from meshlab.testbeds.base import Testbed


def get(name: str) -> Testbed:
    if name == "local":
        from meshlab.testbeds.local import LocalTestbed

        return LocalTestbed()
    if name == "cloud":
        from meshlab.testbeds.cloud import CloudTestbed

        return CloudTestbed()
    raise MeshlabError(f"--testbed: {name!r} is not a testbed; expected {' or '.join(TESTBEDS)}")
