"""``deliver``: the phases of a delivery, one per job of ``.github/workflows/deliver.yml``.

    deliver build     fetch → validate → build and push by digest (or check a digest
                      delivered before); opens the GitHub deployment (queued)
    deliver canary    render → deploy the canary → load test → gate; exits 0 with the
                      verdict as output (the next job decides), non-zero if it broke
    deliver promote   the stable track moves to the canary's image (the job bound to
                      the environment: its reviewers approved it); deployment success
    deliver rollback  the canary goes (and a cut-short promotion is undone); deployment
                      failure or error; exits with the gate's code
    deliver conclude  the delivery's last word: a deployment left without a decision is
                      marked error; the release notes get the outcome

Each phase is the same library as ``run`` (``scripts/pipeline.py``); a rerun of a job
reuses its earlier attempt's deployment records and what is still valid.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from scripts.commands import CommandOutput, image_repository, optional_text
from scripts.commands.fetch import add_fetch_options
from scripts.commands.run import add_delivery_options, output, pipeline_request
from scripts.config import Settings
from scripts.errors import PipelineError, UsageError
from scripts.log import log

if TYPE_CHECKING:
    from scripts.github.delivery import DeliveryRecords
    from scripts.github.deployments import DeliveryPayload
    from scripts.pipeline import Artifact, PipelineRun

PHASES = ("build", "canary", "promote", "rollback", "conclude")


def _common_options(p: argparse.ArgumentParser, *, version: bool = True) -> None:
    p.add_argument("--model", required=True, help="model name (the release tag's)")
    if version:  # `deliver build` has it from the fetch options
        p.add_argument(
            "--model-version", dest="model_version", type=int, required=True, help="version"
        )
    p.add_argument(
        "--record-deployment",
        action="store_true",
        help="keep the GitHub deployment records (needs GITHUB_REPOSITORY and GITHUB_TOKEN)",
    )
    p.add_argument("--deployment-id", default="", help="the delivery's GitHub deployment")
    p.add_argument("--canary-deployment-id", default="", help="the canary's GitHub deployment")
    p.add_argument("--environment-url", default="", help="URL of the environment, for the records")


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "deliver",
        parents=[common],
        help="one phase of a delivery (a workflow job)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    phases = p.add_subparsers(dest="phase", metavar="PHASE", parser_class=type(p))

    build = phases.add_parser("build", parents=[common], help="fetch, validate, build, push")
    build.add_argument("--source", default="", help="the release archive (see `fetch --help`)")
    build.add_argument(
        "--image",
        required=True,
        type=image_repository,
        help="REGISTRY/REPO to push to (or oci:DIR for a local layout)",
    )
    build.add_argument(
        "--known-image",
        type=optional_text,
        help="REPO@sha256:… delivered before: check it exists instead of building",
    )
    add_fetch_options(build)
    _common_options(build, version=False)
    add_delivery_options(build)
    build.set_defaults(handler=run_build)

    for name, handler, text in (
        ("canary", run_canary, "deploy the canary, load test it, judge it"),
        ("promote", run_promote, "promote the canary (the environment's reviewers approved)"),
        ("rollback", run_rollback, "remove the canary (or undo a cut-short promotion)"),
    ):
        phase = phases.add_parser(name, parents=[common], help=text)
        phase.add_argument("--image", required=True, help="the candidate: REPO@sha256:…")
        _common_options(phase)
        add_delivery_options(phase)
        phase.set_defaults(handler=handler)
    rollback = phases.choices["rollback"]
    rollback.add_argument(
        "--verdict", default="", help="the canary job's verdict (empty: it never reached one)"
    )
    rollback.add_argument(
        "--promote-result",
        default="",
        help="the promote job's result (success, failure, cancelled, skipped)",
    )

    conclude = phases.add_parser("conclude", parents=[common], help="the delivery's last word")
    conclude.add_argument("--environment", required=True, help="the GitHub environment")
    conclude.add_argument("--model", required=True)
    conclude.add_argument("--model-version", dest="model_version", type=int, required=True)
    conclude.add_argument("--deployment-id", default="")
    conclude.add_argument("--release-id", default="", help="release whose notes get the outcome")
    conclude.add_argument("--verdict", default="")
    conclude.add_argument("--action", default="")
    conclude.add_argument("--image", default="")
    conclude.set_defaults(handler=run_conclude)
    p.set_defaults(handler=_no_phase)


def _no_phase(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    raise UsageError(
        "deliver needs a phase", fix=f"python -m scripts deliver {{{','.join(PHASES)}}} --help"
    )


def _int(value: str) -> int | None:
    return int(value) if value and value.isdigit() else None


def _records(args: argparse.Namespace, settings: Settings) -> DeliveryRecords | None:
    if not getattr(args, "record_deployment", False):
        return None
    from scripts.github.client import GitHubApi
    from scripts.github.delivery import DeliveryRecords

    if not settings.github.repository:
        raise UsageError(
            "--record-deployment needs GITHUB_REPOSITORY",
            cause="the command runs outside GitHub Actions",
            fix="drop --record-deployment, or set GITHUB_REPOSITORY and GITHUB_TOKEN",
        )
    environment = args.environment or args.overlay
    return DeliveryRecords(
        GitHubApi(settings, settings.github.repository), settings.github, environment
    )


def _payload(
    args: argparse.Namespace, settings: Settings, artifact: Artifact, source: str | None
) -> DeliveryPayload:
    from scripts.github.deployments import DeliveryPayload, delivery_key

    return DeliveryPayload(
        model=artifact.model,
        version=artifact.version,
        archive_sha256=artifact.archive_sha256 or args.archive_sha256 or None,
        image=artifact.image,
        overlay=args.overlay,
        delivery=delivery_key(settings.github, args.environment or args.overlay),
        source=source,
    )


def _run_for(
    args: argparse.Namespace, settings: Settings, *, stop_after: str | None
) -> PipelineRun:
    from scripts.pipeline import PipelineRun

    request = pipeline_request(
        args,
        settings,
        source=None,
        image_repo=None,
        known_image=args.image,
        model=args.model,
        version=args.model_version,
        archive_sha256=args.archive_sha256 or None,
        stop_after=stop_after,
    )
    return PipelineRun(request, settings)


# -- build ------------------------------------------------------------------------------
def run_build(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.pipeline import PipelineRun

    if not args.source and not args.known_image:
        raise UsageError("deliver build needs --source or --known-image")
    request = pipeline_request(
        args,
        settings,
        source=args.source or None,
        image_repo=args.image,
        known_image=args.known_image,
        model=args.model,
        version=args.model_version,
        archive_sha256=args.archive_sha256 or None,
        stop_after="build",
    )
    run = PipelineRun(request, settings)
    artifact = run.artifact()
    records = _records(args, settings)
    if records is not None and not args.dry_run:
        deployment = records.queued(_payload(args, settings, artifact, args.source or None))
        run.outputs["deployment-id"] = str(deployment)
    run.outputs["image"] = artifact.image
    run.outputs["archive-sha256"] = artifact.archive_sha256 or ""
    return output(run.result(artifact))


# -- canary -----------------------------------------------------------------------------
def run_canary(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.pipeline import DRY_RUN

    run = _run_for(args, settings, stop_after=None)
    artifact = run.artifact()
    records = _records(args, settings)
    canary_id: int | None = None
    if records is not None and not args.dry_run:
        canary_id = records.canary_started(
            _int(args.deployment_id), _payload(args, settings, artifact, None)
        )
        run.outputs["canary-deployment-id"] = str(canary_id)
    try:
        canary = run.canary(artifact)
    except BaseException:
        if records is not None and canary_id is not None:
            try:
                records.canary_judged(canary_id, "error", "the canary phase broke", None)
            except PipelineError as exc:  # the original failure is the one to report
                log.warning("could not record the canary's error: %s", exc)
        raise
    if canary is None:  # already stable: nothing to test; promote will find nothing to do
        if records is not None and canary_id is not None:
            records.canary_judged(canary_id, "pass", "already the stable image", None)
        result = run.result(artifact, action="already stable")
        result.outputs["verdict"] = "pass"
        return output(result)
    if records is not None and canary_id is not None:
        records.canary_judged(
            canary_id,
            canary.outcome,
            canary.reasons[0] if canary.reasons else "",
            args.environment_url or None,
        )
    if canary.outcome == DRY_RUN:
        action = DRY_RUN
    else:
        action = "awaiting promotion" if canary.outcome == "pass" else "to roll back"
    result = run.result(
        artifact,
        outcome=canary.outcome,
        action=action,
        reasons=canary.reasons,
        verdict=canary.verdict,
    )
    result.exit_code = 0  # the verdict is this phase's output; the next job acts on it
    result.outputs["reasons"] = json.dumps(canary.reasons)
    return output(result)


# -- promote ----------------------------------------------------------------------------
def run_promote(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.github.delivery import DeliveryIds

    run = _run_for(args, settings, stop_after=None)
    artifact = run.artifact()
    action = run.promote(artifact)
    records = _records(args, settings)
    if records is not None:
        records.promoted(
            DeliveryIds(_int(args.deployment_id), _int(args.canary_deployment_id)),
            _payload(args, settings, artifact, None),
            args.environment_url or None,
        )
    result = run.result(artifact, outcome="pass", action=action)
    return output(result)


# -- rollback ---------------------------------------------------------------------------
def run_rollback(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.gate.verdict import EXIT_CODES, PASS
    from scripts.github.delivery import DeliveryIds
    from scripts.pipeline import ROLLED_BACK

    run = _run_for(args, settings, stop_after=None)
    verdict = args.verdict or None
    if verdict == PASS:
        reason = f"the promotion did not happen (promote job: {args.promote_result or 'unknown'})"
    elif verdict:
        reason = f"the gate's verdict was {verdict}"
    else:
        reason = "the canary phase never reached a verdict"
    run.text.append(f"rolling back: {reason}")
    action = run.roll_back(args.image)
    records = _records(args, settings)
    if records is not None:
        records.rolled_back(
            DeliveryIds(_int(args.deployment_id), _int(args.canary_deployment_id)), verdict, reason
        )
    result = run.result(None, outcome=verdict or "error", action=action, reasons=[reason])
    # A declined promotion is a decision, not a failure; anything else fails the job.
    result.exit_code = 0 if verdict == PASS else EXIT_CODES.get(verdict or "error", 52)
    result.outputs["action"] = ROLLED_BACK
    return output(result)


# -- conclude ---------------------------------------------------------------------------
def run_conclude(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.github.client import GitHubApi
    from scripts.github.delivery import DeliveryRecords
    from scripts.github.release_notes import delivery_section, with_section

    state = None
    repository = settings.github.repository
    if repository and (args.deployment_id or args.release_id):
        with GitHubApi(settings, repository) as api:
            records = DeliveryRecords(api, settings.github, args.environment)
            state = records.conclude(_int(args.deployment_id))
            if args.release_id:
                release = api.release(int(args.release_id))
                section = delivery_section(
                    environment=args.environment,
                    verdict=args.verdict or "none (the delivery stopped before the gate)",
                    action=args.action or "not delivered",
                    image=args.image or None,
                    run_url=settings.github.run_url,
                )
                body = with_section(release.body, args.environment, section)
                if body != (release.body or ""):
                    api.update_release_body(release.id, body)
    action = args.action or "not delivered"
    text = (
        f"{args.model} v{args.model_version} → {args.environment}: {action}"
        f" (verdict: {args.verdict or 'none'})"
        + (f"\n  deployment {args.deployment_id}: {state}" if state else "")
    )
    summary = (
        f"### Delivery of `{args.model}` v{args.model_version} to `{args.environment}`: "
        f"**{action}**\n\n| | |\n|---|---|\n| verdict | {args.verdict or '—'} |\n"
        f"| image | `{args.image or '—'}` |\n| deployment record | {state or '—'} |\n"
    )
    return CommandOutput(
        data={
            "model": args.model,
            "version": args.model_version,
            "environment": args.environment,
            "verdict": args.verdict or None,
            "action": action,
            "deployment_state": state,
        },
        text=text,
        summary_markdown=summary,
        outputs={"action": action, "deployment-state": state or ""},
    )
