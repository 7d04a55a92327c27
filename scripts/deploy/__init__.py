"""Stage 4: deploy targets (Kubernetes; local) over the same rendered manifests."""
