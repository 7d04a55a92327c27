"""Stage 1: fetch a model archive from where it was published, verify and unpack it."""
