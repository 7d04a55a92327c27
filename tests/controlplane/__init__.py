"""The test control plane: real Kubernetes components built from Go modules (cluster.py)."""
