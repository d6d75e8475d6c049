"""Stack output keys, shared by the program, `meshlab up`, the dynamic inventory and the tests."""

NODES = "nodes"  # [{name, role, groups, private_ip, public_ip, flavor}]
SSH_USER = "ssh_user"
BASTION = "bastion"  # {name, private_ip, public_ip}
ANSIBLE_INVENTORY = "ansible_inventory"  # infra.inventory.build_inventory(...)
SSH_PRIVATE_KEY = "ssh_private_key"  # secret; only when the keypair was generated
CLUSTER_NAME = "cluster_name"
