"""Export Keras ResNet50 as a TF Serving SavedModel with preprocessing inside the graph.

Usage:
    python models/resnet50/export.py --out DIR [--version N] [--weights none|imagenet]
                                     [--image-size PX] [--force]

Signatures of DIR/resnet50/N:
    serving_default: image_bytes  string [None]          (JPEG bytes, REST clients send b64)
    predict_images:  images       float32 [None,PX,PX,3] (RGB, 0..255)
both returning probabilities float32 [None,1000] and class_id int64 [None].

Prints one JSON object to stdout:
    {"path": ..., "model_name": "resnet50", "version": N, "image_size": PX, "size_bytes": ...}
Everything else goes to stderr so stdout stays machine-readable.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

MODEL_NAME = "resnet50"
NUM_CLASSES = 1000
# keras.applications.ResNet50 rejects inputs smaller than this.
MIN_IMAGE_SIZE = 32
# Keras only accepts the pretrained 1000-class head with 224x224 inputs.
IMAGENET_IMAGE_SIZE = 224
WEIGHTS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
# urlretrieve has no timeout of its own; a black-holed network would otherwise hang forever.
DOWNLOAD_TIMEOUT_S = 60
EXIT_USAGE = 2

log = logging.getLogger("export.resnet50")


class ExportError(Exception):
    """A user-fixable problem: reported on stderr, exit status 2."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="model base directory root")
    parser.add_argument("--version", type=int, default=1, help="version directory (>= 1)")
    parser.add_argument("--weights", choices=["none", "imagenet"], default="none")
    parser.add_argument("--image-size", type=int, default=IMAGENET_IMAGE_SIZE, metavar="PX")
    parser.add_argument(
        "--force", action="store_true", help="replace DIR/resnet50/N if it already exists"
    )
    args = parser.parse_args(argv)
    # TF Serving only picks up non-negative integer directory names; 0 is easy to miss.
    if args.version < 1:
        parser.error(f"--version must be >= 1, got {args.version}")
    if args.image_size < MIN_IMAGE_SIZE:
        parser.error(f"--image-size must be >= {MIN_IMAGE_SIZE}, got {args.image_size}")
    if args.weights == "imagenet" and args.image_size != IMAGENET_IMAGE_SIZE:
        parser.error(
            f"--weights imagenet requires --image-size {IMAGENET_IMAGE_SIZE} "
            "(the pretrained classifier head only fits that input size)"
        )
    return args


def keras_weights_cache() -> Path:
    # Mirrors keras' own lookup so the error message names the directory keras will read.
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def build_model(weights: str, image_size: int) -> keras.Model:
    import keras

    if weights == "none":
        return keras.applications.ResNet50(
            weights=None, input_shape=(image_size, image_size, 3), classes=NUM_CLASSES
        )
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return keras.applications.ResNet50(
            weights="imagenet", input_shape=(image_size, image_size, 3), classes=NUM_CLASSES
        )
    except Exception as exc:
        # keras raises a bare Exception("URL fetch failure ...") when the download fails.
        raise ExportError(
            f"error: could not load ImageNet weights for ResNet50: {exc}\n"
            "cause: keras downloads them on first use and this machine probably has no "
            "network access.\n"
            f"fix: use --weights none, or pre-seed {keras_weights_cache() / WEIGHTS_FILE} "
            "(copy it from a machine with network access)."
        ) from exc
    finally:
        socket.setdefaulttimeout(previous_timeout)


def save_serving_model(model: keras.Model, path: Path, image_size: int) -> None:
    """Write a SavedModel with the JPEG (default) and float-image signatures."""
    import keras
    import tensorflow as tf

    def infer(images: tf.Tensor) -> dict[str, tf.Tensor]:
        # Caffe-style preprocessing (RGB->BGR, ImageNet mean subtraction) matching the weights.
        x = keras.applications.resnet50.preprocess_input(images)
        probabilities = model(x, training=False)
        return {
            "probabilities": probabilities,
            "class_id": tf.argmax(probabilities, axis=-1, output_type=tf.int64),
        }

    def decode_one(jpeg: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_jpeg(jpeg, channels=3)
        image = tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size])
        return tf.ensure_shape(image, [image_size, image_size, 3])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_jpeg(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        # Images in a batch may differ in size, so decode+resize each before stacking.
        images = tf.map_fn(
            decode_one,
            image_bytes,
            fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
        )
        return infer(images)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="images")
        ]
    )
    def predict_images(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return infer(images)

    root = tf.Module()
    # Attaching the model makes its variables reachable from the root, which save() requires.
    root.model = model
    root.serve_jpeg = serve_jpeg
    root.predict_images = predict_images
    tf.saved_model.save(
        root,
        str(path),
        signatures={"serving_default": serve_jpeg, "predict_images": predict_images},
    )


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


def exists_error(final_dir: Path) -> ExportError:
    return ExportError(
        f"error: {final_dir} already exists; refusing to overwrite a published model "
        "version.\nfix: pass a different --version, remove that directory, or re-run "
        "with --force."
    )


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def export(args: argparse.Namespace) -> dict[str, Any]:
    base_dir = args.out / MODEL_NAME
    final_dir = base_dir / str(args.version)
    # Check before importing TensorFlow so the common mistake fails in milliseconds.
    if final_dir.exists() and not args.force:
        raise exists_error(final_dir)

    # Must be set before the first tensorflow import or the C++ logging is already configured.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    start = time.perf_counter()
    model = build_model(args.weights, args.image_size)
    log.info("built ResNet50 (weights=%s, %dpx)", args.weights, args.image_size)

    base_dir.mkdir(parents=True, exist_ok=True)
    # Same parent directory keeps rename() atomic; the dot-prefixed, non-numeric name is
    # ignored by TF Serving's version scan.
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".tmp-{args.version}-", dir=base_dir))
    # mkdtemp creates mode 0700; the model server often runs as a different user.
    tmp_dir.chmod(0o755)
    try:
        save_serving_model(model, tmp_dir, args.image_size)
        try:
            publish(tmp_dir, final_dir, args.force)
        except FileExistsError:
            # Someone else published the same version while we were exporting.
            raise exists_error(final_dir) from None
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)

    size_bytes = dir_size(final_dir)
    log.info(
        "exported %s (%.1f MB) in %.1f s",
        final_dir,
        size_bytes / 1e6,
        time.perf_counter() - start,
    )
    return {
        "path": str(final_dir),
        "model_name": MODEL_NAME,
        "version": args.version,
        "image_size": args.image_size,
        "size_bytes": size_bytes,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    try:
        # Keras prints download progress to stdout; keep it for the one JSON result.
        with contextlib.redirect_stdout(sys.stderr):
            result = export(args)
    except ExportError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
