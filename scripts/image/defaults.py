"""Image defaults that the command line shows before any image code is loaded."""

# The official TF Serving image, pinned; override per model (model.yaml base_image)
# or per run (--base). Mirror it once into Artifact Registry (docs/images.md) so that
# production builds mount its layers instead of copying them.
DEFAULT_BASE = "docker.io/tensorflow/serving:2.19.0"
