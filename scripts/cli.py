"""Argument parsing and the one place that turns results and errors into an exit status.

Contract: with ``--json`` exactly one JSON object goes to stdout (the result,
or ``{"ok": false, "error": {...}}``); logs and progress go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from scripts import __version__
from scripts import log as logmod
from scripts.commands import CommandOutput, Handler
from scripts.commands import bases as bases_cmd
from scripts.commands import bench as bench_cmd
from scripts.commands import build as build_cmd
from scripts.commands import deliver as deliver_cmd
from scripts.commands import deploy as deploy_cmd
from scripts.commands import fetch as fetch_cmd
from scripts.commands import gate as gate_cmd
from scripts.commands import generator_image as generator_image_cmd
from scripts.commands import github as github_cmd
from scripts.commands import loadtest as loadtest_cmd
from scripts.commands import package as package_cmd
from scripts.commands import preflight as preflight_cmd
from scripts.commands import render as render_cmd
from scripts.commands import report as report_cmd
from scripts.commands import run as run_cmd
from scripts.commands import serve as serve_cmd
from scripts.commands import validate as validate_cmd
from scripts.config import Settings
from scripts.errors import PipelineError, UsageError
from scripts.log import log

INTERRUPTED_EXIT = 130
INTERNAL_ERROR_EXIT = 1


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so main() stays the one exit.

    Abbreviated flags are refused: a workflow that says ``--gate`` must not keep working
    by luck when ``--gate-mode`` is renamed (tests/unit/test_workflows.py, drift).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(
            f"{self.prog}: {message}",
            cause="a missing or malformed command-line argument",
            fix=f"run `{self.prog} --help`",
        )


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", help="print exactly one JSON object on stdout"
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more logging (repeat for HTTP debugging)",
    )
    common.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m scripts",
        description="Release-to-deploy pipeline for TensorFlow models on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    common = _common()
    for module in (
        package_cmd,
        fetch_cmd,
        validate_cmd,
        build_cmd,
        render_cmd,
        deploy_cmd,
        serve_cmd,
        loadtest_cmd,
        generator_image_cmd,
        gate_cmd,
        run_cmd,
        report_cmd,
        preflight_cmd,
        deliver_cmd,
        github_cmd,
        bench_cmd,
        bases_cmd,
    ):
        module.register(sub, common)
    return parser


def _emit(output: CommandOutput, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(output.data, indent=2, sort_keys=True, default=str) + "\n")
    elif output.text:
        sys.stdout.write(output.text.rstrip("\n") + "\n")
    sys.stdout.flush()
    if output.summary_markdown:
        logmod.append_summary(output.summary_markdown)
    if output.outputs:
        logmod.set_outputs(output.outputs)


def _report_error(exc: PipelineError, command: str, as_json: bool) -> None:
    # The three parts on separate lines; on Actions the first becomes an annotation.
    log.error("%s", exc)
    logmod.append_summary(
        f"### :x: `{command}` failed (exit {exc.exit_code})\n\n"
        f"**{exc.what}**\n\n"
        + (f"- Likely cause: {exc.cause}\n" if exc.cause else "")
        + (f"- Fix: {exc.fix}\n" if exc.fix else "")
    )
    if as_json:
        sys.stdout.write(json.dumps({"ok": False, "error": exc.to_dict()}, indent=2) + "\n")
        sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run one command, and return the process exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args_list
    parser = build_parser()
    command = "?"
    try:
        settings = Settings.from_env(os.environ)
        args = parser.parse_args(args_list)
        command = args.command or "?"
        verbosity = -1 if args.quiet else args.verbose
        logmod.setup(verbosity, settings.ci)
        if args.command is None:
            parser.print_help(sys.stderr)
            raise UsageError("no command given", fix="pick one of the commands listed above")
        handler: Handler = args.handler
        output = handler(args, settings)
        _emit(output, args.json)
        return output.exit_code
    except PipelineError as exc:
        if not logging.getLogger(logmod.LOGGER_NAME).handlers:
            logmod.setup(0, Settings().ci)
        _report_error(exc, command, as_json)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return INTERRUPTED_EXIT
    except Exception as exc:  # the one place that catches everything: report a bug clearly
        if not logging.getLogger(logmod.LOGGER_NAME).handlers:
            logmod.setup(0, Settings().ci)
        log.error("internal error: %s: %s\n%s", type(exc).__name__, exc, traceback.format_exc())
        if as_json:
            sys.stdout.write(
                json.dumps(
                    {
                        "ok": False,
                        "error": {
                            "kind": "internal",
                            "exit_code": INTERNAL_ERROR_EXIT,
                            "message": f"{type(exc).__name__}: {exc}",
                            "cause": "a bug in the pipeline",
                            "fix": "please report it with this output",
                        },
                    }
                )
                + "\n"
            )
        return INTERNAL_ERROR_EXIT
