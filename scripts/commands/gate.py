"""``gate``: judge load-test results against SLOs and the baseline; exit code = outcome."""

from __future__ import annotations

import argparse
from pathlib import Path

from scripts import log as logmod
from scripts.commands import CommandOutput
from scripts.config import MODELS_DIR, Settings
from scripts.errors import UsageError


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "gate", parents=[common], help="pass / fail / inconclusive / error", description=__doc__
    )
    p.add_argument("--results", required=True, type=Path, help="candidate results directory")
    p.add_argument("--baseline", type=Path, help="baseline results directory")
    p.add_argument("--slo", type=Path, help="gate file or model.yaml with slos")
    p.add_argument("--model", help="read the SLOs from models/NAME/model.yaml")
    p.add_argument("--report-dir", type=Path, help="where the charts go (default: --results)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.gate.report import charts, markdown
    from scripts.gate.verdict import decide, load_rules

    if args.slo is None and args.model is None:
        raise UsageError("the gate needs --slo FILE or --model NAME")
    rules = load_rules(args.slo or MODELS_DIR / args.model / "model.yaml")
    with logmod.stage("gate"):
        verdict = decide(args.results, rules, args.baseline)
        pngs = charts(args.results, args.baseline, args.report_dir or args.results)
    text = markdown(verdict, "Promotion gate", pngs)
    data = verdict.to_dict() | {"charts": [str(p) for p in pngs], "markdown": text}
    return CommandOutput(
        data=data,
        text=text,
        summary_markdown=text,
        outputs={"verdict": verdict.outcome},
        exit_code=verdict.exit_code,
    )
