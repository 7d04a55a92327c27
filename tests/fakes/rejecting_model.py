"""Export a release that rejects every request: a SavedModel with the digits model's
serving signature (``pixels`` float32 [?, 8, 8] → ``probabilities``, ``class_id``) whose
graph fails an assertion on any input, so TF Serving (and the local server) answer
INVALID_ARGUMENT. It validates and deploys like a good release: only the gate can stop it.

    python tests/fakes/rejecting_model.py OUT_DIR   (writes OUT_DIR/digits/VERSION/...)
"""

from __future__ import annotations

import sys
from pathlib import Path

import tensorflow as tf


def main() -> int:
    out, version = Path(sys.argv[1]), int(sys.argv[2])

    class Rejecting(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8], tf.float32, name="pixels")])
        def serve(self, pixels: tf.Tensor) -> dict[str, tf.Tensor]:
            check = tf.debugging.assert_less(
                tf.reduce_sum(pixels), -1.0, message="this release rejects every request"
            )
            with tf.control_dependencies([check]):
                batch = tf.shape(pixels)[0]
                probabilities = tf.fill([batch, 10], 0.1)
                return {
                    "probabilities": probabilities,
                    "class_id": tf.argmax(probabilities, axis=1),
                }

    module = Rejecting()
    target = out / "digits" / str(version)
    tf.saved_model.save(module, str(target), signatures={"serving_default": module.serve})
    print(target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
