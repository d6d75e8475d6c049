#!/bin/sh
# wire-pod.sh NODE_NETNS POD_NETNS POD IP GATEWAY MESH_CIDR: Calico-style pod link. The pod's
# eth0 holds IP/32 and routes the mesh range via GATEWAY (proxy-ARP'ed by the node side); the
# node routes IP/32 to veth-POD. No default route anywhere: nothing leaves the machine.
# Prints "changed" if it had to create anything.
set -eu
node=$1 netns=$2 pod=$3 ip=$4 gateway=$5 mesh=$6
veth="veth-$pod"
changed=""
if ! ip -n "$node" link show "$veth" >/dev/null 2>&1; then
  # Both ends are created directly inside their namespaces: nothing touches the root namespace.
  ip link add name "$veth" netns "$node" type veth peer name eth0 netns "$netns"
  changed=1
fi
if ! ip -n "$netns" -4 addr show dev eth0 | grep -q "inet $ip/32"; then
  ip -n "$netns" addr add "$ip/32" dev eth0; changed=1
fi
ip -n "$netns" link set lo up
ip -n "$netns" link set eth0 up
ip -n "$node" link set "$veth" up
if [ "$(ip netns exec "$node" sysctl -n "net.ipv4.conf.$veth.proxy_arp")" != 1 ]; then
  ip netns exec "$node" sysctl -qw "net.ipv4.conf.$veth.proxy_arp=1"; changed=1
fi
if ! ip -n "$node" route show "$ip/32" | grep -q "dev $veth"; then
  ip -n "$node" route replace "$ip/32" dev "$veth"; changed=1
fi
if ! ip -n "$netns" route show "$gateway" | grep -q "dev eth0"; then
  ip -n "$netns" route replace "$gateway" dev eth0 scope link; changed=1
fi
if ! ip -n "$netns" route show "$mesh" | grep -q "via $gateway"; then
  ip -n "$netns" route replace "$mesh" via "$gateway" dev eth0 onlink; changed=1
fi
[ -n "$changed" ] && echo changed || true
