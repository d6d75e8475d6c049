"""The SSH keypair nodes accept: the operator's public key if given, else a generated one.

A generated private key leaves only as the secret `ssh_private_key` stack output; the dynamic
inventory writes it to a 0600 file for Ansible. Generated keys are ED25519: Nova stores any
OpenSSH public key, and Nova's own key generation is gone since API microversion 2.92.
"""

from __future__ import annotations

import pulumi
import pulumi_openstack as openstack
import pulumi_tls as tls

from infra.config import LabConfig


class LabKeypair(pulumi.ComponentResource):
    """A Nova keypair; `private_key` is a secret Output, or None when the key was imported."""

    keypair: openstack.compute.Keypair
    private_key: pulumi.Output[str] | None

    def __init__(self, name: str, cfg: LabConfig, opts: pulumi.ResourceOptions | None = None):
        super().__init__("meshlab:openstack:LabKeypair", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        public_key: pulumi.Input[str]
        if cfg.ssh_public_key:
            public_key, self.private_key = cfg.ssh_public_key, None
        else:
            generated = tls.PrivateKey(f"{name}-generated", algorithm="ED25519", opts=child)
            public_key = generated.public_key_openssh
            self.private_key = pulumi.Output.secret(generated.private_key_openssh)
        self.keypair = openstack.compute.Keypair(
            f"{name}-keypair", name=cfg.cluster_name, public_key=public_key, opts=child
        )
        self.register_outputs({"keypair": self.keypair.name})
