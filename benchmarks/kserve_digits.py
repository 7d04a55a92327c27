"""The digits SavedModel in the kserve python model server: benchmarks/serving.py's baseline.

Runs in its own venv (``make bench-kserve-venv`` → ``.venv-kserve``: kserve pins protobuf
differently from the project), never imports the project:

    .venv-kserve/bin/python benchmarks/kserve_digits.py --model-dir DIR/digits/1 --port 8080

A ``kserve.Model`` whose ``predict`` runs the SavedModel's ``serving_default`` with
TensorFlow — the same export and the same TF threads (``--intra-op`` / ``--inter-op``,
default 1 / 1) as our server — and answers kserve's V1 protocol,
``POST /v1/models/digits:predict`` with ``{"instances": [...]}``, in TF Serving's row
format: ``{"predictions": [{"class_id": 0, "probabilities": [...]}, ...]}``.

One uvicorn worker, REST only (kserve's gRPC server listens on ``[::]`` and is not
needed), and the REST socket on ``--host`` (127.0.0.1): kserve 0.21 hard-codes
``0.0.0.0`` in ``RESTServer``'s uvicorn config and has no flag for it, so
``LoopbackModelServer.start`` is ``ModelServer.start`` for one worker without gRPC with
the host set before the server binds. kserve's per-request latency log and uvicorn's
access log are off, as they are in our server: the comparison is of the serving paths,
not of logging.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="a SavedModel: DIR/digits/1")
    parser.add_argument("--name", default="digits")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--intra-op", type=int, default=1)
    parser.add_argument("--inter-op", type=int, default=1)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    # kserve.model_server parses sys.argv when it is imported: give it none of ours.
    sys.argv = sys.argv[:1]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    from kserve import Model, ModelServer
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.protocol.rest.server import RESTServer

    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)

    class DigitsModel(Model):  # type: ignore[misc]
        def __init__(self, name: str, model_dir: str) -> None:
            super().__init__(name)
            self.model_dir = model_dir
            self.fn: Any = None

        def load(self) -> bool:
            self.loaded = tf.saved_model.load(self.model_dir)
            self.fn = self.loaded.signatures["serving_default"]
            self.input_name = next(iter(self.fn.structured_input_signature[1]))
            self.ready = True
            return self.ready

        def predict(self, payload: dict[str, Any], headers: Any = None) -> dict[str, Any]:
            pixels = tf.constant(np.asarray(payload["instances"], dtype=np.float32))
            outputs = {k: v.numpy() for k, v in self.fn(**{self.input_name: pixels}).items()}
            rows = len(pixels)
            return {
                "predictions": [
                    {k: v[i].tolist() for k, v in sorted(outputs.items())} for i in range(rows)
                ]
            }

    class LoopbackModelServer(ModelServer):  # type: ignore[misc]
        """``ModelServer.start`` for one worker and no gRPC, REST bound to ``host``."""

        def __init__(self, host: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.host = host

        def start(self, models: list[Any]) -> None:
            self._register_and_check_atleast_one_model_is_ready(models)
            self._rest_server = RESTServer(
                FASTAPI_APP_IMPORT_STRING,
                self.dataplane,
                self.model_repository_extension,
                self.http_port,
                access_log_format=self.access_log_format,
                workers=1,
                grace_period=self.grace_period,
                event_loop=self.event_loop,
                timeout_keep_alive=self.timeout_keep_alive,
            )
            self._rest_server.config.host = self.host
            self.servers.append(self._rest_server.start())
            self.setup_event_loop()
            self.register_signal_handler()
            asyncio.run(self._serve())

    model = DigitsModel(args.name, args.model_dir)
    model.load()
    server = LoopbackModelServer(
        args.host,
        http_port=args.port,
        workers=1,
        enable_grpc=False,
        enable_latency_logging=False,
    )
    for name in ("uvicorn.access", "kserve", "kserve.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([model])


if __name__ == "__main__":
    main()
