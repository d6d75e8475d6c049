"""meshlab: paired, noise-gated benchmarks of sidecar redirection (iptables vs eBPF)."""
