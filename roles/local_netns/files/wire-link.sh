#!/bin/sh
# wire-link.sh NETNS_A ID_A IP_A NETNS_B ID_B IP_B PREFIX: the link between two node namespaces,
# like the wire between two hosts: a veth whose end in A is named node<ID_B> and holds IP_A, and
# whose end in B is named node<ID_A> and holds IP_B (both /PREFIX, from 198.18.0.0/15). Nothing
# is created in the root namespace and neither node gets a default route.
# Prints "changed" if it had to create anything.
set -eu
a=$1 ida=$2 ipa=$3 b=$4 idb=$5 ipb=$6 prefix=$7
dev_a="node$idb" dev_b="node$ida"
changed=""
if ! ip -n "$a" link show "$dev_a" >/dev/null 2>&1; then
  ip link add name "$dev_a" netns "$a" type veth peer name "$dev_b" netns "$b"
  changed=1
fi
for side in "$a $dev_a $ipa" "$b $dev_b $ipb"; do
  set -- $side
  if ! ip -n "$1" -4 addr show dev "$2" | grep -q "inet $3/$prefix"; then
    ip -n "$1" addr add "$3/$prefix" dev "$2"; changed=1
  fi
  ip -n "$1" link set "$2" up
done
[ -n "$changed" ] && echo changed || true
