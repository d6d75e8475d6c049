"""meshlab's Pulumi program for the OpenStack cloud testbed (Pulumi.yaml: `main: infra/`).

Kept import-light on purpose: `inventory/meshlab_inventory.py` imports the pure `infra.inventory`
with whatever python3 Ansible finds, so nothing here may import pulumi at package level.
"""
