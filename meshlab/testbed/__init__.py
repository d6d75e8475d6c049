"""The local testbed: an Istio-style sidecar mesh in network namespaces on one host."""
