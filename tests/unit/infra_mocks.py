"""Pulumi mocks for the infra/ program, and a runner that gives each test a fresh engine.

Import this before `infra.*`: it puts the repository root on sys.path (infra/ is run by path by
pulumi, not installed by pip).
"""

from __future__ import annotations

import re
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import pulumi  # noqa: E402  (after the path above, like the infra imports of the tests)
from pulumi.runtime import settings  # noqa: E402

with warnings.catch_warnings():
    # The provider's own deprecated `index/*V2` aliases warn on import; nothing here uses them.
    warnings.simplefilter("ignore", DeprecationWarning)
    import pulumi_openstack  # noqa: F401  (imported here only to silence those warnings)

BASTION_IP = "203.0.113.10"
EXTERNAL_NET_ID = "ext-net-id"
IMAGE_ID = "11111111-2222-4333-8444-555555555555"
PROJECT_ID = "project-id"
MOCK_PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nmock\n-----END OPENSSH PRIVATE KEY-----\n"
# A node's mock private IP is derived from its port's name, never from call order (which varies).
ROLE_BASE = {"control-plane": 10, "worker": 20, "loadtest": 30, "monitoring": 40}
PORT_NAME = re.compile(r"^nodes-(?P<role>[a-z-]+)-(?P<index>\d+)-port$")

BASE_CONFIG = {
    "image": "debian-12-genericcloud-amd64",
    "flavor": "m1.large",
    "operatorCidrs": '["198.51.100.0/24"]',
}

PORT = "openstack:networking/port:Port"
INSTANCE = "openstack:compute/instance:Instance"
SERVER_GROUP = "openstack:compute/serverGroup:ServerGroup"
SEC_GROUP = "openstack:networking/secGroup:SecGroup"
SEC_GROUP_RULE = "openstack:networking/secGroupRule:SecGroupRule"
FLOATING_IP = "openstack:networking/floatingIp:FloatingIp"
FLAVOR = "openstack:compute/flavor:Flavor"
FLAVOR_ACCESS = "openstack:compute/flavorAccess:FlavorAccess"
KEYPAIR = "openstack:compute/keypair:Keypair"
PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
NETWORK = "openstack:networking/network:Network"
SUBNET = "openstack:networking/subnet:Subnet"
ROUTER = "openstack:networking/router:Router"
ROUTER_INTERFACE = "openstack:networking/routerInterface:RouterInterface"


NODE_SLUGS = ["control-plane-0", "worker-0", "loadtest-0", "monitoring-0"]
SG = {group: f"network-sg-{group}-id" for group in ("internal", "ssh", "kube-api", "monitoring")}


def mock_ip(role: str, index: int) -> str:
    return f"10.42.0.{ROLE_BASE[role] + index}"


class LabMocks(pulumi.runtime.Mocks):
    """Records every registration and answers the program's data-source invokes."""

    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []
        self.calls: list[pulumi.runtime.MockCallArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        state = dict(args.inputs)
        state.setdefault("name", args.name)
        if args.typ == PORT:
            match = PORT_NAME.match(args.name)
            assert match, f"unexpected port name {args.name}"
            state["allFixedIps"] = [mock_ip(match["role"], int(match["index"]))]
        elif args.typ == FLOATING_IP:
            state["address"] = BASTION_IP
        elif args.typ == PRIVATE_KEY:
            state["publicKeyOpenssh"] = "ssh-ed25519 AAAAmock"
            state["privateKeyOpenssh"] = MOCK_PRIVATE_KEY
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[Any]]:
        self.calls.append(args)
        if args.token == "openstack:networking/getNetwork:getNetwork":
            return {"id": EXTERNAL_NET_ID, "name": args.args.get("name"), "external": True}, []
        if args.token == "openstack:images/getImage:getImage":
            return {"id": IMAGE_ID, "name": args.args.get("name")}, []
        if args.token == "openstack:identity/getAuthScope:getAuthScope":
            return {"projectId": PROJECT_ID, "name": args.args.get("name")}, []
        raise AssertionError(f"unexpected invoke {args.token}")

    def of_type(self, typ: str) -> list[pulumi.runtime.MockResourceArgs]:
        return sorted((r for r in self.resources if r.typ == typ), key=lambda r: r.name)

    def named(self, name: str) -> pulumi.runtime.MockResourceArgs:
        (found,) = [r for r in self.resources if r.name == name]
        return found


@dataclass
class Run:
    mocks: LabMocks
    outputs: dict[str, Any]
    secret_outputs: set[str]

    def counts(self) -> Counter[str]:
        """Registered resources (components included) per type token."""
        return Counter(r.typ for r in self.mocks.resources)


def fresh_engine(config: dict[str, str], stack: str = "dev") -> LabMocks:
    """New mocks and config; forget the previous test's root stack (its exports would leak)."""
    mocks = LabMocks()
    settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project="meshlab", stack=stack, preview=False)
    pulumi.runtime.set_all_config({f"meshlab:{key}": value for key, value in config.items()})
    return mocks


def lab_config(overrides: dict[str, str] | None = None) -> dict[str, str]:
    return {**BASE_CONFIG, **(overrides or {})}


def run_program(mocks: LabMocks) -> Run:
    """Run infra.lab.build under `mocks` (from fresh_engine); return registrations and outputs."""
    from infra import config, lab

    captured: dict[str, Any] = {}
    secrets: set[str] = set()

    @pulumi.runtime.test
    async def program() -> None:
        built = lab.build(config.load())
        captured.update(await pulumi.Output.all(**built.outputs).future() or {})
        for key, output in built.outputs.items():
            if await output.is_secret():
                secrets.add(key)

    try:
        program()
    except config.ConfigError:
        raise
    except Exception as err:
        # Re-raised shallow: pytest 9 on CPython 3.11 crashes (INTERNALERROR, "AST constructor
        # recursion depth mismatch") rendering the engine's deep async frames.
        raise AssertionError(f"the program failed under mocks: {err}") from None
    # Guard against the silent false green of a program built outside the mocks (apis.md §3.3).
    assert captured, "stack outputs never resolved: the program did not run under the mocks"
    return Run(mocks, captured, secrets)


def run_lab(overrides: dict[str, str] | None = None) -> Run:
    """The lab with BASE_CONFIG plus `overrides`, on a fresh mock engine."""
    return run_program(fresh_engine(lab_config(overrides)))


if __name__ == "__main__":
    # Regenerate the recorded payload after changing the program's outputs:
    #   .venv/bin/python tests/unit/infra_mocks.py > tests/unit/fixtures/stack_outputs_dev.json
    import json

    print(json.dumps(dict(sorted(run_lab().outputs.items())), indent=2))
