#!/bin/sh
# teardown.sh PREFIX RUN_DIR CGROUP_PARENT BPF_PIN_ROOT
# Remove everything the local testbed made, found by its prefix (no state needed, so it also
# cleans up after a crash): processes, eBPF attachments and pins, namespaces (their veths and
# iptables rules go with them), cgroups, the runtime directory. Prints "changed" if it removed
# anything.
set -u
prefix=$1 run_dir=$2 cgroup_parent=$3 pins=$4
cg="$cgroup_parent/$prefix"
changed=""

pids_in_testbed() {
  for ns in $(ip netns list | awk '{print $1}' | grep "^$prefix-"); do ip netns pids "$ns" 2>/dev/null; done
  [ -d "$cg" ] && find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null
}

# Daemons first, politely through their pid files, then anything left in a namespace or cgroup.
# A pid file is only believed for a process inside the testbed: pids wrap within minutes under
# load, and a stale file may name an unrelated process by now.
ours=$(pids_in_testbed | sort -u)
for pidfile in "$run_dir"/*.pid; do
  [ -e "$pidfile" ] || continue
  pid=$(cat "$pidfile" 2>/dev/null)
  if [ -n "$pid" ] && printf '%s\n' "$ours" | grep -qx "$pid"; then
    start-stop-daemon --stop --quiet --oknodo --retry TERM/5/KILL/2 --pid "$pid" && changed=1
  fi
  rm -f "$pidfile"
done
for sig in TERM KILL; do
  pids=$(pids_in_testbed | sort -u)
  [ -n "$pids" ] || break
  kill -s "$sig" $pids 2>/dev/null && changed=1
  sleep 0.5
done

# eBPF: detach from the testbed's cgroups, then unpin.
if [ -d "$cg" ] && command -v bpftool >/dev/null 2>&1; then
  for dir in $(find "$cg" -type d); do
    bpftool cgroup show "$dir" 2>/dev/null | awk 'NR>1 && $1 ~ /^[0-9]+$/ {print $1, $2}' |
      while read -r id type; do bpftool cgroup detach "$dir" "$type" id "$id" && echo detached; done
  done | grep -q detached && changed=1
fi
if [ -d "$pins" ]; then rm -rf "$pins"; changed=1; fi

for ns in $(ip netns list | awk '{print $1}' | grep "^$prefix-"); do
  ip netns del "$ns" && changed=1
done

if [ -d "$cg" ]; then
  # Children before parents; a cgroup directory is removed with rmdir, never rm -r.
  find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
  [ -d "$cg" ] && { echo "teardown: cannot remove cgroup $cg (processes left?)" >&2; exit 1; }
  changed=1
fi
if [ -d "$run_dir" ]; then rm -rf "$run_dir"; changed=1; fi
[ -n "$changed" ] && echo changed || true
