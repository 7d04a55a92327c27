"""``report``: one row per release from run records — version, verdict, action, key figures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scripts.commands import CommandOutput
from scripts.config import Settings
from scripts.errors import ConfigError


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "report", parents=[common], help="summarise run records as a table", description=__doc__
    )
    p.add_argument("records", nargs="+", type=Path, metavar="RUN_JSON")
    p.set_defaults(handler=run)


def _fmt(value: object, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) else "—"


def run(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    rows = []
    for path in args.records:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read run record {path}: {exc}") from exc
        for release in record.get("releases", []):
            rows.append(
                release
                | {
                    "record": str(path),
                    "report": str(path.parent / "summary.md"),
                    "charts": str(path.parent / "report"),
                }
            )
    header = "| version | verdict | action | p95 ms | p99 ms | error ratio | req/s |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| v{r['version']} | {r['verdict']} | {r['action']} | "
            f"{_fmt(r.get('p95_ms'), '.1f')} | {_fmt(r.get('p99_ms'), '.1f')} | "
            f"{_fmt(r.get('error_ratio'), '.2%')} | {_fmt(r.get('req_per_s'), '.1f')} |"
        )
    table = "\n".join(lines)
    reports = "\n".join(f"  v{r['version']}: {r['report']} (charts: {r['charts']})" for r in rows)
    return CommandOutput(
        data={"releases": rows},
        text=f"{table}\n\nReports:\n{reports}",
        summary_markdown="### Releases\n\n" + table,
    )
