"""Release-to-deploy pipeline for TensorFlow models on Kubernetes.

Stages, one module or package each: artifact (fetch, verify, extract, validate)
→ package (release archives) → … (see docs/architecture.md).
"""

__version__ = "0.1.0"
