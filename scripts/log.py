"""Logging that knows where it runs.

Plain text on stderr everywhere. Inside GitHub Actions (``GITHUB_ACTIONS=true``)
it also emits workflow commands: a ``::group::`` per stage, ``::error::`` and
``::warning::`` annotations, Markdown appended to ``$GITHUB_STEP_SUMMARY`` and
``key=value`` lines appended to ``$GITHUB_OUTPUT``.

Workflow commands go to stderr as well: the Actions runner reads commands from
both streams, and stdout is reserved for the one ``--json`` object.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOGGER_NAME = "scripts"
log = logging.getLogger(LOGGER_NAME)


@dataclass(frozen=True)
class CIEnvironment:
    """What we know about the CI we run in; resolved once from the environment."""

    github_actions: bool = False
    step_summary: Path | None = None
    output_file: Path | None = None
    run_url: str | None = None  # where a truncated summary points for the rest

    @classmethod
    def from_env(cls, env: dict[str, str]) -> CIEnvironment:
        on_actions = env.get("GITHUB_ACTIONS") == "true"
        summary = env.get("GITHUB_STEP_SUMMARY")
        output = env.get("GITHUB_OUTPUT")
        run_url = None
        if env.get("GITHUB_REPOSITORY") and env.get("GITHUB_RUN_ID"):
            server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
            run_url = f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
        return cls(
            github_actions=on_actions,
            step_summary=Path(summary) if on_actions and summary else None,
            output_file=Path(output) if on_actions and output else None,
            run_url=run_url,
        )


class _State:
    """The CI environment chosen at start-up (module state, set once by setup())."""

    ci = CIEnvironment()


_state = _State()


def _escape_data(text: str) -> str:
    # Workflow command escaping, as in @actions/core's escapeData.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


class _ActionsAnnotationHandler(logging.Handler):
    """Turns ERROR/WARNING records into ``::error::``/``::warning::`` annotations."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            command = "error"
        elif record.levelno >= logging.WARNING:
            command = "warning"
        else:
            return
        sys.stderr.write(f"::{command}::{_escape_data(record.getMessage())}\n")
        sys.stderr.flush()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time (it may be replaced after setup)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def setup(verbosity: int, ci: CIEnvironment) -> None:
    """Configure the project's logger. ``verbosity``: -1 quiet, 0 normal, 1+ debug."""
    _state.ci = ci
    level = logging.INFO
    if verbosity < 0:
        level = logging.WARNING
    elif verbosity > 0:
        level = logging.DEBUG
    root = logging.getLogger(LOGGER_NAME)
    root.handlers.clear()
    root.setLevel(level)
    root.propagate = False
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    if ci.github_actions:
        # The annotation carries errors and warnings; plain lines carry the rest.
        handler.addFilter(lambda record: record.levelno < logging.WARNING)
        root.addHandler(_ActionsAnnotationHandler())
    root.addHandler(handler)
    if verbosity > 1:
        logging.getLogger("urllib3").setLevel(logging.DEBUG)


def ci() -> CIEnvironment:
    return _state.ci


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Mark one pipeline stage: a collapsible group on Actions, a heading elsewhere."""
    started = time.monotonic()
    if _state.ci.github_actions:
        sys.stderr.write(f"::group::{_escape_data(name)}\n")
        sys.stderr.flush()
    else:
        log.info("== %s", name)
    try:
        yield
    finally:
        elapsed = time.monotonic() - started
        log.info("%s finished in %.1f s", name, elapsed)
        if _state.ci.github_actions:
            sys.stderr.write("::endgroup::\n")
            sys.stderr.flush()


def append_summary(markdown: str) -> None:
    """Append Markdown to the GitHub step summary (no-op outside Actions).

    GitHub keeps at most 1 MiB per step: what does not fit is truncated with a pointer
    to the run's artifacts, never a failure.
    """
    from scripts.github.markdown import STEP_SUMMARY_LIMIT_BYTES, fit

    path = _state.ci.step_summary
    if path is None:
        return
    used = path.stat().st_size if path.is_file() else 0
    room = STEP_SUMMARY_LIMIT_BYTES - used
    if room < 512:
        log.warning("the step summary is full (1 MiB); the rest is in the report artifact")
        return
    more = f"{_state.ci.run_url}#artifacts" if _state.ci.run_url else None
    text = fit(markdown.rstrip("\n") + "\n\n", room, in_bytes=True, more=more)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text)


def set_outputs(values: dict[str, str]) -> None:
    """Append step outputs to ``$GITHUB_OUTPUT`` (no-op outside Actions)."""
    if _state.ci.output_file is None:
        return
    with _state.ci.output_file.open("a", encoding="utf-8") as fh:
        for key, value in values.items():
            if "\n" in value:
                # Multiline values use the heredoc form with a delimiter not in the value.
                delimiter = f"EOF_{abs(hash(value))}"
                fh.write(f"{key}<<{delimiter}\n{value}\n{delimiter}\n")
            else:
                fh.write(f"{key}={value}\n")


def progress_enabled(quiet: bool) -> bool:
    """Progress bars only on an interactive terminal, never in CI logs."""
    return not quiet and not _state.ci.github_actions and sys.stderr.isatty()
