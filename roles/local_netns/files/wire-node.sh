#!/bin/sh
# wire-node.sh NETNS GATEWAY SERVICE_CIDR: the node namespace: its loopback holds the pods' gateway address
# (answered over ARP on every veth), forwarding on, no uplink and no default route.
# Prints "changed" if it had to create anything.
set -eu
netns=$1 gateway=$2 services=$3
changed=""
n() { ip -n "$netns" "$@"; }
n link set lo up
if ! n -4 addr show dev lo | grep -q "inet $gateway/32"; then n addr add "$gateway/32" dev lo; changed=1; fi
# Like a Kubernetes node, the node can call ClusterIPs: the route only has to exist for the
# first lookup; kube-proxy's DNAT then re-routes to a pod. It points at lo, never off-machine.
if ! n route show "$services" | grep -q "dev lo"; then n route replace "$services" dev lo; changed=1; fi
# Pods reach each other only through this namespace (Calico-style routing), so it forwards.
for kv in net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0; do
  key=${kv%%=*} want=${kv#*=}
  [ "$(ip netns exec "$netns" sysctl -n "$key")" = "$want" ] || { ip netns exec "$netns" sysctl -qw "$kv"; changed=1; }
done
[ -n "$changed" ] && echo changed || true
