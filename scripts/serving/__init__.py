"""A TF-Serving-compatible model server (``python -m scripts serve``) for local runs.

REST and gRPC as TensorFlow Serving documents them, Prometheus metrics, dynamic
batching, version hot-swap and opt-in fault injection. The only part of the
pipeline besides model export that imports TensorFlow.
"""
