"""The Ansible inventory, as pure functions of node facts (no Pulumi, no I/O, stdlib only).

The Pulumi program exports `build_inventory(...)` as the `ansible_inventory` stack output, and
`inventory/meshlab_inventory.py` (run by Ansible with whatever python3 it finds) turns that output
into the `--list` JSON. This module is the only place that knows the inventory's shape:

    all:
      vars: {ansible_user, ansible_python_interpreter, meshlab_testbed_name: cloud}
      hosts: {<name>: {ansible_host, meshlab_node_ip, ...}}      # every host's vars, once
      children:
        k8s_cluster: {vars: {...}, children: {kube_control_plane: {hosts}, kube_node: {hosts}}}
        loadtest:    {hosts}
        monitoring:  {hosts}
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Group nesting as kubespray names it: k8s_cluster has no hosts of its own.
PARENT_GROUPS: dict[str, tuple[str, ...]] = {"k8s_cluster": ("kube_control_plane", "kube_node")}
TOP_GROUPS = ("k8s_cluster", "loadtest", "monitoring")
LEAF_GROUPS = ("kube_control_plane", "kube_node", "loadtest", "monitoring")
# Lab VMs are recreated often and floating IPs get recycled: known_hosts entries go stale. Same
# stance as ansible.cfg's host_key_checking = false, applied to the jump hop too.
JUMP_SSH_OPTIONS = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null")


@dataclass(frozen=True)
class NodeFacts:
    """What the inventory needs to know about one VM (the `nodes` stack output, one entry)."""

    name: str
    role: str
    groups: tuple[str, ...]
    private_ip: str
    public_ip: str | None = None
    flavor: str | None = None

    @classmethod
    def from_output(cls, entry: Mapping[str, Any]) -> NodeFacts:
        return cls(
            name=entry["name"],
            role=entry["role"],
            groups=tuple(entry["groups"]),
            private_ip=entry["private_ip"],
            public_ip=entry.get("public_ip"),
            flavor=entry.get("flavor"),
        )

    def as_output(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "groups": list(self.groups),
            "private_ip": self.private_ip,
            "public_ip": self.public_ip,
            "flavor": self.flavor,
        }


def jump_args(jump: str, identity_file: str | None = None) -> str:
    """`ansible_ssh_common_args` that reach a private node through the bastion `user@ip`.

    This is OpenSSH's ProxyJump spelled as `ProxyCommand ssh -W`: options given on the command
    line (`-i`, host-key policy) do not reach a `-J`/ProxyJump hop, so a generated key and a
    recycled floating IP would break the jump.
    """
    hop = ["ssh", "-W", "%h:%p", "-q", *JUMP_SSH_OPTIONS]
    if identity_file:
        hop += ["-i", identity_file]
    hop.append(jump)
    return f'-o ProxyCommand="{shlex.join(hop)}"'


def build_inventory(
    nodes: Sequence[NodeFacts],
    ssh_user: str,
    cluster_vars: Mapping[str, Any] | None = None,
    identity_file: str | None = None,
) -> dict[str, Any]:
    """The YAML-inventory-shaped dict for the cloud testbed (see the module docstring)."""
    _check_groups(nodes)
    bastion = next((node for node in nodes if node.public_ip), None)
    if bastion is None:
        raise ValueError("no node has a public IP: the inventory needs a bastion to reach the lab")
    jump = f"{ssh_user}@{bastion.public_ip}"
    all_vars: dict[str, Any] = {
        "ansible_user": ssh_user,
        "ansible_python_interpreter": "/usr/bin/python3",
        "meshlab_testbed_name": "cloud",
        "meshlab_bastion": bastion.name,
    }
    if identity_file:
        all_vars["ansible_ssh_private_key_file"] = identity_file
    hosts = {node.name: _host_vars(node, jump, identity_file) for node in nodes}
    children: dict[str, Any] = {}
    for group in TOP_GROUPS:
        if group in PARENT_GROUPS:
            sub = {leaf: {"hosts": _members(nodes, leaf)} for leaf in PARENT_GROUPS[group]}
            children[group] = {"vars": dict(cluster_vars or {}), "children": sub}
        else:
            children[group] = {"hosts": _members(nodes, group)}
    return {"all": {"vars": all_vars, "hosts": hosts, "children": children}}


def _host_vars(node: NodeFacts, jump: str, identity_file: str | None) -> dict[str, Any]:
    host: dict[str, Any] = {
        "ansible_host": node.public_ip or node.private_ip,
        "meshlab_node_ip": node.private_ip,
        "meshlab_node_role": node.role,
    }
    if node.flavor:
        host["meshlab_flavor"] = node.flavor
    if not node.public_ip:
        host["meshlab_jump"] = jump
        host["ansible_ssh_common_args"] = jump_args(jump, identity_file)
    return host


def _members(nodes: Iterable[NodeFacts], group: str) -> dict[str, dict[str, Any]]:
    return {node.name: {} for node in nodes if group in node.groups}


def _check_groups(nodes: Iterable[NodeFacts]) -> None:
    known = set(LEAF_GROUPS) | set(PARENT_GROUPS)
    for node in nodes:
        unknown = set(node.groups) - known
        if unknown:
            raise ValueError(f"node {node.name}: unknown groups {sorted(unknown)}")
        for parent, leaves in PARENT_GROUPS.items():
            if (parent in node.groups) != any(leaf in node.groups for leaf in leaves):
                raise ValueError(f"node {node.name}: {parent} goes with one of {list(leaves)}")


def with_identity_file(inventory: Mapping[str, Any], identity_file: str) -> dict[str, Any]:
    """A copy of `inventory` whose hosts, and jump hops, log in with `identity_file`."""
    top = inventory["all"]
    hosts = {}
    for name, host in top.get("hosts", {}).items():
        host = dict(host)
        if "meshlab_jump" in host:
            host["ansible_ssh_common_args"] = jump_args(host["meshlab_jump"], identity_file)
        hosts[name] = host
    all_vars = {**top.get("vars", {}), "ansible_ssh_private_key_file": identity_file}
    return {"all": {**top, "vars": all_vars, "hosts": hosts}}


def local_testbed() -> dict[str, Any]:
    """The single-host local testbed (network namespaces on this machine)."""
    localhost = {
        "ansible_connection": "local",
        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
    }
    local = {"hosts": {"localhost": localhost}, "vars": {"meshlab_testbed_name": "local"}}
    return {"all": {"children": {"local": local}}}


def to_script_json(inventory: Mapping[str, Any]) -> dict[str, Any]:
    """The `--list` JSON of an Ansible inventory script, from the YAML-shaped dict."""
    out: dict[str, Any] = {"_meta": {"hostvars": {}}}
    _flatten("all", inventory["all"], out)
    return out


def _flatten(name: str, group: Mapping[str, Any], out: dict[str, Any]) -> None:
    entry: dict[str, Any] = {}
    hostvars = out["_meta"]["hostvars"]
    for host, host_vars in (group.get("hosts") or {}).items():
        hostvars.setdefault(host, {}).update(host_vars or {})
        entry.setdefault("hosts", []).append(host)
    if group.get("vars"):
        entry["vars"] = dict(group["vars"])
    children = group.get("children") or {}
    if children:
        entry["children"] = list(children)
    out[name] = entry
    for child, sub in children.items():
        _flatten(child, sub, out)
