"""``serve``: a TF-Serving-compatible model server (REST + gRPC) for local runs.

Takes ``tensorflow_model_server``'s flags, so the container args in the manifests run
unchanged: ``python -m scripts serve --port=8500 --rest_api_port=8501
--model_config_file=models.config``.
"""

from __future__ import annotations

import argparse

from scripts.commands import CommandOutput
from scripts.config import Settings


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    from scripts.serving.flags import add_serving_flags

    p = sub.add_parser(
        "serve", parents=[common], help="serve models like TF Serving", description=__doc__
    )
    add_serving_flags(p)
    p.set_defaults(handler=run)


def hide_sklearn() -> None:
    """Keep scikit-learn out of the server process.

    TensorFlow imports Keras, and Keras imports its scikit-learn wrappers whenever
    sklearn is installed (it is: models/digits/export.py uses its datasets). That is
    0.7-1 s of every server start on this machine (``python -X importtime``), for
    wrappers a model server never uses; Keras treats a missing sklearn as optional.
    ``sys.modules[name] = None`` makes ``import sklearn`` raise ImportError in this
    process only."""
    import sys

    if "sklearn" not in sys.modules:
        sys.modules["sklearn"] = None  # type: ignore[assignment]


def run(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    hide_sklearn()
    from scripts.serving.server import serve

    serve(args)
    return CommandOutput(data={"stopped": True}, text="server stopped")
