"""Image defaults that the command line shows before any image code is loaded."""

# The official TF Serving image, pinned to the newest release known when this was
# written. The example models export with TensorFlow 2.21; a SavedModel that uses an
# op newer than the server fails to load, which the canary's readiness probe catches.
# Pin by digest in production; override per model (model.yaml base_image)
# or per run (--base). Mirror it once into Artifact Registry (docs/images.md) so that
# production builds mount its layers instead of copying them.
DEFAULT_BASE = "docker.io/tensorflow/serving:2.20.0"
