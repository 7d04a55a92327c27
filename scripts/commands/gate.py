"""``gate``: judge load-test results against SLOs and the baseline; exit code = outcome.

``gate calibrate``: measure how far apart two identical versions are on a target and
overlay (A/A runs of the stable image against fresh copies of itself), and write the
latency tolerance that follows into ``models/NAME/gate-calibration.yaml`` (docs/gate.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scripts import log as logmod
from scripts.commands import CommandOutput
from scripts.config import KUSTOMIZE_DIR, MODELS_DIR, Settings
from scripts.errors import UsageError


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "gate", parents=[common], help="pass / fail / inconclusive / error", description=__doc__
    )
    p.add_argument("--results", type=Path, help="candidate results directory (required)")
    p.add_argument("--baseline", type=Path, help="baseline results directory")
    p.add_argument("--slo", type=Path, help="gate file or model.yaml with slos")
    p.add_argument("--model", help="read the SLOs from models/NAME/model.yaml")
    p.add_argument(
        "--overlay",
        help="the overlay the results come from: its calibrated latency tolerance applies "
        "(gate-calibration.yaml beside the model.yaml), when there is one",
    )
    p.add_argument("--report-dir", type=Path, help="where the charts go (default: --results)")
    p.set_defaults(handler=run)
    commands = p.add_subparsers(dest="gate_command", metavar="calibrate | record")
    calibrate = commands.add_parser(
        "calibrate",
        parents=[common],
        help="A/A runs: the stable image against fresh copies of itself; writes the "
        "latency tolerance for the overlay",
        description=__doc__,
    )
    _calibrate_options(calibrate)
    calibrate.set_defaults(handler=run_calibrate)
    record = commands.add_parser(
        "record",
        parents=[common],
        help="write a calibration measured elsewhere (gate calibrate --no-write --json) into "
        "gate-calibration.yaml, or propose it by pull request",
    )
    record.add_argument("--model", required=True, help="models/NAME")
    record.add_argument("--overlay", required=True, help="the overlay it was measured on")
    record.add_argument(
        "--model-config", type=Path, help="the model.yaml (default: models/NAME/model.yaml)"
    )
    record.add_argument(
        "--calibration-json",
        required=True,
        type=Path,
        help="gate calibrate's --json output, or its `calibration` output",
    )
    record.add_argument(
        "--open-pr",
        action="store_true",
        help="propose it by pull request (GITHUB_REPOSITORY, GITHUB_TOKEN) instead of "
        "only writing it here",
    )
    record.set_defaults(handler=run_record)


def _calibrate_options(p: argparse.ArgumentParser) -> None:
    from scripts.commands.deploy import add_target_options
    from scripts.commands.loadtest import add_profile_options
    from scripts.commands.render import add_render_options

    add_render_options(p)
    add_target_options(p)
    add_profile_options(p)
    p.add_argument(
        "--trials",
        type=int,
        default=10,
        help="A/A runs (default: 10; each is a deploy, one load test and a removal)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path(".pipeline/calibration"),
        help="where each trial's results go (default: .pipeline/calibration)",
    )
    p.add_argument(
        "--write",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write the tolerance into gate-calibration.yaml beside the model.yaml "
        "(default: yes; --no-write only reports it)",
    )


def run(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.gate.report import charts, markdown
    from scripts.gate.verdict import decide, load_rules

    if args.results is None:
        raise UsageError(
            "the gate needs --results DIR (or the subcommand `calibrate`)",
            fix="python -m scripts gate --results DIR [--baseline DIR] --model NAME",
        )
    if args.slo is None and args.model is None:
        raise UsageError("the gate needs --slo FILE or --model NAME")
    rules = load_rules(args.slo or MODELS_DIR / args.model / "model.yaml", args.overlay)
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


def run_calibrate(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.commands.deploy import make_target
    from scripts.commands.loadtest import load_options
    from scripts.commands.render import render_request
    from scripts.deploy.target import DeployOptions
    from scripts.gate.calibrate import run_calibration
    from scripts.gate.calibration import DETECTABLE, calibration_path, write_calibration
    from scripts.gate.verdict import load_rules
    from scripts.loadtest.options import load_test_request
    from scripts.manifests.render import render
    from scripts.model_spec import load_model_spec

    if not args.model:
        raise UsageError("gate calibrate needs --model NAME", fix="e.g. --model digits")
    if args.unsafe_fault_injection:
        raise UsageError(
            "gate calibrate measures identical versions: --unsafe-fault-injection would make "
            "the canary differ from its baseline",
            fix="drop --unsafe-fault-injection",
        )
    model_file: Path = args.model_config or MODELS_DIR / args.model / "model.yaml"
    spec = load_model_spec(model_file)
    rules = load_rules(model_file)  # uncalibrated: the trials count its false alarms
    target = make_target(args, settings, None)
    stable = target.status().stable
    if not stable.image:
        raise UsageError(
            f"no stable version of {args.model} on {args.target}: nothing to calibrate",
            cause="calibration compares the stable image with fresh copies of itself",
            fix="deliver a release first (python -m scripts run / deliver), then calibrate",
        )
    stable_image: str = stable.image
    with logmod.stage("render"):
        rendered = render(render_request(args, stable_image))
    target = make_target(args, settings, rendered)
    options = load_options(args)
    kustomize_dir = args.kustomize_dir or KUSTOMIZE_DIR

    def load_test(tracks: dict[str, list[str]], out: Path) -> None:
        from scripts.loadtest.runner import run_load_test

        request = load_test_request(
            options, spec, tracks, out, overlay=args.overlay, model=rendered.model,
            kustomize_dir=kustomize_dir,
        )  # fmt: skip
        if options.uses_job(with_target=True):
            from dataclasses import replace

            from scripts.loadtest.in_cluster import generator_load_test

            generator_load_test(
                request,
                target,
                replace(options.job, kustomize_dir=kustomize_dir, kube_version=args.kube_version),
                namespace=target.status().namespace,
                run_id=f"calibrate-{settings.run_id or 'local'}",
                cache_dir=settings.cache_dir,
                docker_config=settings.docker_config,
                insecure=getattr(args, "insecure_registry", False),
                # On a cluster, the generator image beside the model's (as `run` does).
                sibling_of=stable_image if args.target == "k8s" else None,
            )
        else:
            run_load_test(request)

    with logmod.stage("calibrate"):
        result = run_calibration(
            target=target,
            rendered=rendered,
            rules=rules,
            trials=args.trials,
            load_test=load_test,
            workdir=args.workdir,
            options=DeployOptions(wait=True, timeout_s=args.timeout),
            profile=args.profile,
            grpc=options.protocol == "grpc",
        )
    entry = result.calibration
    path = calibration_path(model_file)
    if args.write:
        write_calibration(path, spec.name, args.overlay, entry)
    lines = [
        f"{entry.trials} A/A runs of {entry.image} on {args.overlay} ({entry.target}); "
        f"{entry.inconclusive} inconclusive",
        "ratios: " + ", ".join(f"×{r:.3f}" for r in entry.ratios),
        f"log ratio: mean {entry.log_ratio_mean:+.4f}, σ {entry.log_ratio_sigma:.4f} "
        f"(≤ {entry.log_ratio_sigma_upper:.4f} at 90 %)",
        f"latency tolerance: ×{entry.latency_tolerance:g} (was ×"
        f"{rules.baseline.latency_tolerance:g}; {result.false_alarms} of these runs would "
        "have failed with it)",
        f"written to {path}" if args.write else "not written (--no-write)",
    ]
    if entry.latency_tolerance > DETECTABLE:
        lines.append(
            f"WARNING: ×{entry.latency_tolerance:g} is above ×{DETECTABLE:g}: on this "
            "overlay and machine the gate cannot tell a +25 % latency regression from "
            "noise. Give the pods more CPU, or load longer (more blocks), and calibrate again."
        )
    text = "\n".join(lines)
    summary = (
        f"### Gate calibration: `{spec.name}` on `{args.overlay}`\n\n"
        + "\n".join(f"- {line}" for line in lines)
        + "\n"
    )
    return CommandOutput(
        data={
            "model": spec.name,
            "overlay": args.overlay,
            "path": str(path) if args.write else None,
            "false_alarms": result.false_alarms,
            "calibration": entry.model_dump(),
        },
        text=text,
        summary_markdown=summary,
        outputs={
            "latency_tolerance": f"{entry.latency_tolerance:g}",
            # Compact, one line: the next job writes it to a file for `gate record`.
            "calibration": json.dumps(entry.model_dump(), separators=(",", ":")),
        },
    )


def run_record(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from pydantic import ValidationError

    from scripts.errors import ConfigError
    from scripts.gate.calibration import (
        OverlayCalibration,
        calibration_path,
        write_calibration,
    )
    from scripts.gate.verdict import load_rules

    repository = settings.github.repository
    if args.open_pr and not repository:
        raise UsageError(
            "--open-pr needs GITHUB_REPOSITORY (OWNER/REPO) and GITHUB_TOKEN",
            cause="the command runs outside GitHub Actions",
            fix="drop --open-pr (the file is still written here), or set both",
        )
    try:
        raw = json.loads(args.calibration_json.read_text(encoding="utf-8"))
        entry = OverlayCalibration.model_validate(
            raw.get("calibration", raw) if isinstance(raw, dict) else raw
        )
    except (OSError, ValueError, ValidationError) as exc:
        raise ConfigError(
            f"{args.calibration_json} holds no calibration: {exc}",
            cause="not the output of `gate calibrate --json` (or of its `calibration` output)",
            fix="pass the file `gate calibrate --no-write --json` wrote",
        ) from exc
    model_file: Path = args.model_config or MODELS_DIR / args.model / "model.yaml"
    previous = load_rules(model_file, args.overlay).baseline.latency_tolerance
    uncalibrated = load_rules(model_file).baseline.latency_tolerance
    path = calibration_path(model_file)
    with logmod.stage("record"):
        write_calibration(path, args.model, args.overlay, entry)
    data: dict[str, object] = {
        "model": args.model,
        "overlay": args.overlay,
        "path": str(path),
        "latency_tolerance": entry.latency_tolerance,
        "previous_tolerance": previous,
    }
    text = (
        f"{args.model} on {args.overlay}: tolerance ×{entry.latency_tolerance:g} "
        f"(was ×{previous:g})"
    )
    outputs = {"latency_tolerance": f"{entry.latency_tolerance:g}"}
    if args.open_pr and repository:
        from scripts.github.calibration_pr import open_calibration_pull_request
        from scripts.github.client import GitHubApi

        with logmod.stage("pull request"), GitHubApi(settings, repository) as api:
            pull = open_calibration_pull_request(
                api, args.model, args.overlay, entry, uncalibrated=uncalibrated,
                run_url=settings.github.run_url,
            )  # fmt: skip
        data["pull_request"] = pull.to_dict()
        if pull.already_applied:
            note = "the default branch already has it: no pull request needed"
        else:
            state = "opened" if pull.created else "reused"
            note = f"pull request #{pull.number} ({state}): {pull.url}"
            outputs |= {"pr-number": str(pull.number), "pr-url": str(pull.url)}
        text += f"\n{note}"
    return CommandOutput(
        data=data,
        text=text,
        summary_markdown=f"### Gate calibration of `{args.model}` on `{args.overlay}`\n\n{text}\n",
        outputs=outputs,
    )
