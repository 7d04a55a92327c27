"""Train a small Keras CNN on scikit-learn's 8x8 digits and export it for TF Serving.

Usage:
    python models/digits/export.py --out DIR [--version N] [--epochs E] [--seed S] [--force]

Writes DIR/digits/N/{saved_model.pb,variables/} and prints one JSON object to stdout:
    {"path": ..., "model_name": "digits", "version": N,
     "holdout_accuracy": ..., "train_seconds": ...}
Everything else (progress, TF/Keras chatter) goes to stderr so stdout stays machine-readable.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

if TYPE_CHECKING:
    import keras

MODEL_NAME = "digits"
NUM_CLASSES = 10
IMAGE_SIDE = 8
# load_digits() pixels are integer intensities in 0..16.
PIXEL_MAX = 16.0
EXIT_USAGE = 2

log = logging.getLogger("export.digits")


def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (x_train, x_test, y_train, y_test); x is float32 [N, 8, 8], y is int64 [N].

    The parameters are fixed so the integration test can evaluate on exactly the same holdout.
    """
    digits = load_digits()
    x = digits.images.astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    return x_train, x_test, y_train, y_test


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="model base directory root")
    parser.add_argument("--version", type=int, default=1, help="version directory (>= 1)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--force", action="store_true", help="replace DIR/digits/N if it already exists"
    )
    args = parser.parse_args(argv)
    # TF Serving only picks up non-negative integer directory names; 0 is easy to miss.
    if args.version < 1:
        parser.error(f"--version must be >= 1, got {args.version}")
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    return args


def build_model() -> keras.Model:
    import keras

    inputs = keras.Input(shape=(IMAGE_SIDE, IMAGE_SIDE), name="pixels")
    x = keras.layers.Reshape((IMAGE_SIDE, IMAGE_SIDE, 1))(inputs)
    # Scaling lives in the graph so clients send raw 0..16 pixels, same as load_digits().
    x = keras.layers.Rescaling(1.0 / PIXEL_MAX)(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name=MODEL_NAME)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def train(model: keras.Model, x_train: np.ndarray, y_train: np.ndarray, epochs: int) -> float:
    """Fit the model and return wall-clock training seconds."""
    import keras

    def log_epoch(epoch: int, logs: dict[str, Any] | None) -> None:
        logs = logs or {}
        log.info(
            "epoch %d/%d loss=%.4f accuracy=%.4f",
            epoch + 1,
            epochs,
            logs.get("loss", float("nan")),
            logs.get("accuracy", float("nan")),
        )

    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=32,
        shuffle=True,
        verbose=0,
        callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=log_epoch)],
    )
    return time.perf_counter() - start


def save_serving_model(model: keras.Model, path: Path) -> Any:
    """Write a SavedModel whose serving_default takes raw pixels; return the signature fn."""
    import tensorflow as tf

    root = tf.Module()
    # Attaching the model makes its variables reachable from the root, which save() requires.
    root.model = model

    @tf.function(
        input_signature=[tf.TensorSpec([None, IMAGE_SIDE, IMAGE_SIDE], tf.float32, name="pixels")]
    )
    def serve(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = model(pixels, training=False)
        return {
            "probabilities": probabilities,
            "class_id": tf.argmax(probabilities, axis=-1, output_type=tf.int64),
        }

    root.serve = serve
    tf.saved_model.save(root, str(path), signatures={"serving_default": serve})
    return serve


def publish(tmp_dir: Path, final_dir: Path, force: bool) -> None:
    """Move a finished export into place with rename so TF Serving never sees a partial one."""
    if not final_dir.exists():
        try:
            tmp_dir.rename(final_dir)
        except OSError as exc:
            # Lost a race with another exporter: Linux reports ENOTEMPTY for a non-empty target.
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise FileExistsError(final_dir) from exc
            raise
        return
    if not force:
        raise FileExistsError(final_dir)
    # Directories cannot be swapped atomically with rename(2); move the old one aside first so
    # the window without a version N is two renames long, then delete it at leisure.
    trash = final_dir.with_name(f".trash-{final_dir.name}-{uuid.uuid4().hex[:8]}")
    final_dir.rename(trash)
    tmp_dir.rename(final_dir)
    shutil.rmtree(trash, ignore_errors=True)


class VersionExistsError(Exception):
    """The target version directory is already published."""

    def __init__(self, final_dir: Path) -> None:
        super().__init__(
            f"error: {final_dir} already exists; refusing to overwrite a published model "
            "version.\nfix: pass a different --version, remove that directory, or re-run "
            "with --force."
        )


def export(args: argparse.Namespace) -> dict[str, Any]:
    base_dir = args.out / MODEL_NAME
    final_dir = base_dir / str(args.version)
    # Check before importing TensorFlow and training so the common mistake fails in milliseconds.
    if final_dir.exists() and not args.force:
        raise VersionExistsError(final_dir)

    # Must be set before the first tensorflow import or the C++ logging is already configured.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(args.seed)

    x_train, x_test, y_train, y_test = split()
    model = build_model()
    log.info("training on %d samples for %d epochs", len(x_train), args.epochs)
    train_seconds = train(model, x_train, y_train, args.epochs)

    base_dir.mkdir(parents=True, exist_ok=True)
    # Same parent directory keeps rename() atomic; the dot-prefixed, non-numeric name is
    # ignored by TF Serving's version scan.
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".tmp-{args.version}-", dir=base_dir))
    # mkdtemp creates mode 0700; the model server often runs as a different user.
    tmp_dir.chmod(0o755)
    try:
        serve = save_serving_model(model, tmp_dir)
        # Score through the exported signature function, not model.predict, so the reported
        # number describes what will actually be served.
        class_ids = serve(pixels=x_test)["class_id"].numpy()
        holdout_accuracy = float(np.mean(class_ids == y_test))
        try:
            publish(tmp_dir, final_dir, args.force)
        except FileExistsError:
            # Someone else published the same version while we were training.
            raise VersionExistsError(final_dir) from None
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)

    log.info("exported %s (holdout accuracy %.4f)", final_dir, holdout_accuracy)
    return {
        "path": str(final_dir),
        "model_name": MODEL_NAME,
        "version": args.version,
        "holdout_accuracy": round(holdout_accuracy, 6),
        "train_seconds": round(train_seconds, 3),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    try:
        # Libraries occasionally print() progress to stdout; keep it for the one JSON result.
        with contextlib.redirect_stdout(sys.stderr):
            result = export(args)
    except VersionExistsError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
