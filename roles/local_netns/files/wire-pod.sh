#!/bin/sh
# wire-pod.sh NODE_NETNS POD_NETNS POD IP GATEWAY MESH_CIDR [OTHER_NETNS:DEV:VIA ...]:
# Calico-style pod link. The pod's eth0 holds IP/32 and routes the mesh range via GATEWAY (its
# node's address, proxy-ARP'ed by the node side); the node routes IP/32 to veth-POD. Every other
# node (OTHER_NETNS) routes IP/32 via VIA (this node's end of the link) on DEV, and loses its
# veth-POD if the pod ran there before: that is how a pod moves between nodes (placement).
# No default route anywhere: nothing leaves the machine.
# Prints "changed" if it had to create or move anything, and "moved" if the pod changed node.
set -eu
node=$1 netns=$2 pod=$3 ip=$4 gateway=$5 mesh=$6
shift 6
veth="veth-$pod"
changed="" moved=""
for other in "$@"; do
  other_netns=${other%%:*}
  if ip -n "$other_netns" link show "$veth" >/dev/null 2>&1; then
    ip -n "$other_netns" link del "$veth"  # takes the pod's eth0 with it
    changed=1 moved=1
  fi
done
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
if ! ip -n "$netns" route show "$mesh" | grep -q "via $gateway "; then
  ip -n "$netns" route replace "$mesh" via "$gateway" dev eth0 onlink; changed=1
fi
for other in "$@"; do
  other_netns=${other%%:*} rest=${other#*:}
  dev=${rest%%:*} via=${rest#*:}
  if ! ip -n "$other_netns" route show "$ip/32" | grep -q "via $via dev $dev"; then
    ip -n "$other_netns" route replace "$ip/32" via "$via" dev "$dev"; changed=1
  fi
done
[ -n "$moved" ] && echo moved
[ -n "$changed" ] && echo changed || true
