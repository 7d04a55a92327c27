"""Command-line commands, one module per command; each exposes ``register``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field

from scripts.config import Settings


@dataclass
class CommandOutput:
    """What a command produced: ``data`` is the --json object, ``text`` the human view."""

    data: dict[str, object]
    text: str
    summary_markdown: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    exit_code: int = 0


Handler = Callable[[argparse.Namespace, Settings], CommandOutput]


def optional_text(value: str) -> str | None:
    """An argparse type: the empty string means "not given" (a workflow passes
    ``--base "$BASE_IMAGE"`` whether or not the variable is set)."""
    return value or None


def truth(value: str) -> bool:
    """An argparse type for ``--flag VALUE`` from a workflow input: true/false, 1/0, yes/no."""
    text = value.strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {value!r}")


def image_repository(value: str) -> str:
    """An argparse type for REGISTRY/REPO that names the workflow variable when it is empty
    (``--image "$IMAGE_REPOSITORY/$MODEL"`` with the variable unset gives ``/digits``)."""
    if not value or value.startswith("/"):
        raise argparse.ArgumentTypeError(
            f"{value!r} names no registry: is the repository variable IMAGE_REPOSITORY "
            "set (e.g. europe-west4-docker.pkg.dev/PROJECT/models)?"
        )
    return value
