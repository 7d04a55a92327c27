"""Stage 3: render the Kustomize overlays, validate them, check the policy."""
