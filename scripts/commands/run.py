"""``run``: the whole pipeline for one release, stage by stage, with a run record.

fetch → validate → build → render → deploy canary → load test (canary, and the
stable track as baseline when there is one) → gate → promote on pass, roll back
on fail / inconclusive / error → report.

Embedded defaults for one machine with no cloud: without ``--image`` the image is
an OCI layout under WORKDIR/images (on an empty base: the local runtime serves the
model layer); ``--target local`` runs the rendered ``local`` overlay as processes.
Production runs pass ``--image REGISTRY/REPO --target k8s --overlay production``.

A rerun of a release that is already stable is a no-op; a rerun after a crash
starts again from the top (every stage is idempotent).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scripts.atomic import write_text_atomic
from scripts.commands import CommandOutput
from scripts.commands.build import add_build_options, build_request
from scripts.commands.build import describe as describe_build
from scripts.commands.deploy import add_target_options, make_target
from scripts.commands.fetch import add_fetch_options, describe, request_and_context
from scripts.commands.loadtest import add_profile_options, load_test_request
from scripts.config import MODELS_DIR, Settings
from scripts.image.defaults import DEFAULT_BASE
from scripts.image.reference import SCRATCH
from scripts.log import log
from scripts.run_record import RunRecord

if TYPE_CHECKING:
    from scripts.deploy.target import DeployResult
    from scripts.model_spec import ModelSpec


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "run", parents=[common], help="run the pipeline for one release", description=__doc__
    )
    p.add_argument("--source", required=True, help="artifact source (see `fetch --help`)")
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path(".pipeline"),
        help="working directory for models, reports and the run record",
    )
    p.add_argument(
        "--model-config",
        type=Path,
        metavar="MODEL_YAML",
        help="model.yaml (default: models/NAME/model.yaml when it exists)",
    )
    p.add_argument(
        "--image",
        help="image to build: REGISTRY/REPO[:TAG] or oci:DIR[:TAG] "
        "(default: oci:WORKDIR/images, a local OCI layout)",
    )
    p.add_argument("--overlay", default="local", help="kustomize overlay (default: local)")
    p.add_argument(
        "--kube-version",
        default="1.33.0",
        help="Kubernetes version whose schemas validate the manifests",
    )
    p.add_argument(
        "--stop-after",
        choices=("validate", "build", "render", "deploy"),
        help="stop after this stage (no load test, gate or promotion)",
    )
    p.add_argument("--slo", type=Path, help="gate file (default: the model.yaml's slos)")
    p.add_argument(
        "--canary-endpoint",
        action="append",
        default=[],
        help="load-test the canary here instead of the target's own address (repeat per "
        "replica; e.g. an internal load balancer or a port-forward when the runner is "
        "outside the cluster)",
    )
    p.add_argument(
        "--baseline-endpoint",
        action="append",
        default=[],
        help="the same for the stable (baseline) track",
    )
    add_fetch_options(p)
    add_build_options(p)
    add_target_options(p, target_default="local", with_insecure=False)
    add_profile_options(p)
    p.set_defaults(handler=run)


def _spec_for(args: argparse.Namespace, model_name: str) -> ModelSpec | None:
    from scripts.model_spec import load_model_spec

    if args.model_config:
        return load_model_spec(args.model_config)
    default = MODELS_DIR / model_name / "model.yaml"
    if default.is_file():
        return load_model_spec(default)
    log.warning("no %s: the sample request is not checked", default)
    return None


def _image_and_base(
    args: argparse.Namespace, spec: ModelSpec | None, model_name: str
) -> tuple[str, str]:
    if args.image:
        return args.image, args.base or (spec.base_image if spec else None) or DEFAULT_BASE
    image = f"oci:{args.workdir / 'images'}:{model_name}"
    base = args.base or (spec.base_image if spec else None)
    if base is None:
        log.info(
            "local image: the model layer on an empty base (production builds use %s)", DEFAULT_BASE
        )
        base = SCRATCH
    return image, base


def _release_row(
    version: int, outcome: str, action: str, verdict: dict[str, Any] | None
) -> dict[str, Any]:
    figures = (verdict or {}).get("candidate") or {}
    latency = figures.get("latency_ms") or {}
    return {
        "version": version,
        "verdict": outcome,
        "action": action,
        "p95_ms": latency.get("p95"),
        "p99_ms": latency.get("p99"),
        "error_ratio": figures.get("error_ratio"),
        "req_per_s": figures.get("achieved_rate"),
    }


def run(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.artifact.fetch import fetch
    from scripts.artifact.validate import validate
    from scripts.deploy.target import DeployOptions
    from scripts.gate.report import charts, markdown
    from scripts.gate.verdict import PASS, decide, load_rules
    from scripts.image.build import build
    from scripts.loadtest.runner import run_load_test
    from scripts.manifests.render import RenderRequest, render
    from scripts.manifests.render import write as write_manifests

    workdir: Path = args.workdir
    record = RunRecord(path=workdir / "run.json", source=args.source)
    request, ctx = request_and_context(args, settings, args.source, workdir / "models")

    with record.stage("fetch") as stage:
        fetched = fetch(request, ctx)
        stage.result = fetched.to_dict()
    with record.stage("validate") as stage:
        spec = _spec_for(args, fetched.model_name)
        validated = validate(fetched.version_path, args.signature, spec)
        stage.result = validated.to_dict()
    text, summary = describe(fetched)
    text += f"\n  validated: {validated.version_dir}" + (
        " (sample request fits)" if validated.sample_checked else ""
    )
    outputs = {"model_dir": str(fetched.path), "run_record": str(record.path)}

    def finish(extra_text: str = "", exit_code: int = 0) -> CommandOutput:
        if record.status == "running":
            record.finish()
        write_text_atomic(workdir / "summary.md", summary + "\n")
        return CommandOutput(
            data=record.to_dict(),
            text=f"{text}{extra_text}\nrun record: {record.path}",
            summary_markdown=summary,
            outputs=outputs,
            exit_code=exit_code,
        )

    if args.stop_after == "validate":
        return finish()
    with record.stage("build") as stage:
        image, base = _image_and_base(args, spec, fetched.model_name)
        built = build(build_request(args, settings, fetched.path, image, base))
        stage.result = built.to_dict()
    build_text, build_summary = describe_build(built)
    text += "\nimage: " + build_text
    summary += "\n\n" + build_summary
    outputs["image"] = built.image
    if args.stop_after == "build":
        return finish()
    with record.stage("render") as stage:
        rendered = render(
            RenderRequest(
                overlay=args.overlay,
                image=built.image,
                model=fetched.model_name,
                kube_version=args.kube_version,
            )
        )
        manifests = workdir / "manifests" / f"{args.overlay}.yaml"
        write_manifests(rendered, manifests)
        stage.result = rendered.to_dict() | {"path": str(manifests)}
    text += f"\nmanifests: {manifests} ({len(rendered.objects)} objects, valid)"
    if args.stop_after == "render":
        return finish()

    target = make_target(args, settings, rendered)
    options = DeployOptions(wait=True, timeout_s=args.timeout)
    candidate = (
        rendered.image
        if not rendered.image.startswith("oci:")
        else next(o for o in rendered.objects if o["kind"] == "Deployment")["spec"]["template"][
            "spec"
        ]["containers"][0]["image"]
    )
    status = target.status()
    if status.stable.exists and status.stable.image == candidate and not status.canary.exists:
        # A rerun of a release that already went through: nothing to do.
        with record.stage("deploy") as stage:
            stage.result = {
                "action": "none",
                "reason": "this image is already stable",
                "image": candidate,
            }
        record.releases = [_release_row(fetched.version, "pass", "already stable", None)]
        text += f"\n{candidate} is already the stable image: nothing to do"
        return finish()

    first_deploy = not status.stable.exists
    with record.stage("deploy") as stage:
        deployed: DeployResult = target.deploy(rendered, canary=True, options=options)
        stage.result = deployed.to_dict()
    text += "\ncanary: " + ", ".join(deployed.endpoints.get("canary", [])) or "(no endpoints)"
    if args.stop_after == "deploy":
        return finish()

    verdict_data: dict[str, Any] | None = None
    outcome = "error"
    try:
        with record.stage("loadtest") as stage:
            if spec is None:
                from scripts.errors import ConfigError

                raise ConfigError(
                    f"model {fetched.model_name} has no model.yaml: no sample "
                    "request, SLOs or load profile for the gate",
                    fix="add models/NAME/model.yaml or pass --model-config",
                )
            grpc = args.protocol == "grpc"
            tracks = {
                "canary": args.canary_endpoint
                or deployed.endpoints.get("canary_grpc" if grpc else "canary", [])
            }
            if not first_deploy:
                stable = target.status().stable
                tracks["baseline"] = args.baseline_endpoint or (
                    stable.grpc_endpoints if grpc else stable.endpoints
                )
            results_dir = workdir / "loadtest"
            results = run_load_test(
                load_test_request(args, spec, tracks, fetched.model_name, results_dir)
            )
            stage.result = {t: r.to_dict() for t, r in results.items()}
        with record.stage("gate") as stage:
            rules = load_rules(
                args.slo or args.model_config or MODELS_DIR / fetched.model_name / "model.yaml"
            )
            baseline_dir = results_dir / "baseline" if "baseline" in results else None
            verdict = decide(results_dir / "canary", rules, baseline_dir)
            pngs = charts(results_dir / "canary", baseline_dir, workdir / "report")
            gate_md = markdown(
                verdict,
                f"Gate for {fetched.model_name} v{fetched.version}"
                + (" (first deploy: SLOs only)" if first_deploy else ""),
                pngs,
            )
            write_text_atomic(
                workdir / "report" / "verdict.json", json.dumps(verdict.to_dict(), indent=2) + "\n"
            )
            verdict_data = verdict.to_dict()
            outcome = verdict.outcome
            stage.result = verdict_data | {"charts": [str(p) for p in pngs]}
            summary += "\n\n" + gate_md
    except Exception as exc:  # noqa: BLE001 - a broken load test or gate must roll back
        log.error("the load test or the gate broke (%s): rolling back", exc)
        outcome = "error"
        record.status = "running"  # the run goes on to roll back, then reports the failure
    if outcome == PASS:
        with record.stage("promote") as stage:
            promoted = target.promote(rendered, options)
            stage.result = promoted.to_dict()
        action = "promoted"
    else:
        with record.stage("rollback") as stage:
            rolled = target.rollback(options)
            stage.result = rolled.to_dict()
        action = "rolled back"
    record.releases = [_release_row(fetched.version, outcome, action, verdict_data)]
    text += f"\nverdict: {outcome} → {action}"
    text += (
        f"\nreport: {workdir / 'summary.md'}, {workdir / 'report'}, "
        f"{workdir / 'loadtest' / 'locust.html'}"
    )
    outputs.update({"verdict": outcome, "action": action})
    from scripts.gate.verdict import EXIT_CODES

    if outcome != PASS:
        record.status = "failed"
        record.save()
    return finish(exit_code=EXIT_CODES.get(outcome, 52))
