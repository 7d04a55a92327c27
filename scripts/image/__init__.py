"""Stage 2: bake a model into a TF Serving image and push it, without a Docker daemon."""
