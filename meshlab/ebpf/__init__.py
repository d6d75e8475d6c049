"""meshlab's eBPF arm: a Merbridge-equivalent redirection for the local testbed.

Programs live in bpf/ (C); this package builds them (build), checks the host (features),
and loads/attaches/switches/removes them (dataplane). Entry points for the testbed:

    attach(pod_cgroups, pod_ips, mode)   # mode: "ebpf" | "ebpf-connect"
    detach()
    status()

or `meshlab ebpf attach|detach|status|build|check` (see docs/ebpf.md).
"""

from meshlab.ebpf.dataplane import MODES, attach, detach, status

__all__ = ["MODES", "attach", "detach", "status"]
