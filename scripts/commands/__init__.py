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
