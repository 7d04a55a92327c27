"""``bases``: the serving bases catalog, and building an optimised base on Cloud Build.

``bases list`` prints the catalog (kustomize/bases.yaml). The ``base image`` workflow
(.github/workflows/base-image.yml; docs/images.md, "Building an optimised base") runs the
other three around ``gcloud builds submit --no-source --config
cloudbuild/tf-serving-base.yaml``:

``bases plan``    the Cloud Build substitutions for a base with a ``build:`` block;
``bases wait``    follow the submitted build until it ends, and check what it pushed;
``bases record``  pin the base to the pushed digest in kustomize/bases.yaml, and with
                  ``--open-pr`` through a pull request (branch ``bases/NAME-<digest12>``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scripts import log as logmod
from scripts.commands import CommandOutput, optional_text
from scripts.config import KUSTOMIZE_DIR, Settings
from scripts.errors import PipelineError, UsageError

DEFAULT_WAIT_S = 18_600.0  # the config's timeout (4.5 h) + queueTtl (30 min) + 10 min


def _build_id(value: str) -> str | None:
    from scripts.image.base_build import build_id

    if not value:
        return None  # a workflow passes --build-id "$BUILD_ID" whether or not it is set
    try:
        return build_id(value)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(exc.what) from exc


def _seconds(value: str) -> float:
    seconds = float(value)
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {value}")
    return seconds


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "bases",
        parents=[common],
        help="the serving bases; build an optimised TF Serving base on Cloud Build",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="bases_command", metavar="ACTION", parser_class=type(p))
    tree = argparse.ArgumentParser(add_help=False)
    tree.add_argument(
        "--kustomize-dir",
        type=Path,
        default=KUSTOMIZE_DIR,
        help="the tree holding bases.yaml (default: ./kustomize)",
    )

    listing = actions.add_parser("list", parents=[common, tree], help="the catalog, as JSON")
    listing.set_defaults(handler=run_list)

    plan = actions.add_parser(
        "plan", parents=[common, tree], help="the Cloud Build substitutions for a base"
    )
    plan.add_argument("--base", required=True, metavar="NAME", help="a base with a build: block")
    plan.add_argument(
        "--repository",
        type=optional_text,
        metavar="REGISTRY/REPO",
        help="where to push it (default: the base's image: in bases.yaml; the workflow "
        "passes the variable SERVING_BASE_REPOSITORY)",
    )
    plan.set_defaults(handler=run_plan)

    wait = actions.add_parser(
        "wait",
        parents=[common, tree],
        help="follow a Cloud Build build until it ends; check what it pushed",
    )
    wait.add_argument("--base", required=True, metavar="NAME", help="the base it builds")
    wait.add_argument(
        "--build-json",
        type=Path,
        metavar="FILE",
        help="`gcloud builds submit --async --format=json` output (its id, project, region)",
    )
    wait.add_argument(
        "--build-id",
        type=_build_id,
        metavar="ID",
        help="a build started earlier (wins over --build-json; empty: not given)",
    )
    wait.add_argument("--project", type=optional_text, help="the build's project")
    wait.add_argument(
        "--region",
        type=optional_text,
        help="the build's region (default: the JSON's, else global)",
    )
    wait.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_WAIT_S,
        metavar="SECONDS",
        help=f"how long to wait (default: {DEFAULT_WAIT_S:.0f}, the config's timeout and "
        "queueTtl and a margin)",
    )
    wait.add_argument(
        "--poll", type=_seconds, default=60.0, metavar="SECONDS", help="between polls (60)"
    )
    wait.add_argument(
        "--out", type=Path, metavar="FILE", help="write the ended Build resource (JSON) here"
    )
    wait.set_defaults(handler=run_wait)

    record = actions.add_parser(
        "record",
        parents=[common, tree],
        help="pin a base to the digest its build pushed (optionally by pull request)",
    )
    record.add_argument("--base", required=True, metavar="NAME", help="the base it built")
    record.add_argument(
        "--build-json",
        type=Path,
        required=True,
        metavar="FILE",
        help="the Build resource: `gcloud builds describe ID --format=json`, or `bases wait --out`",
    )
    record.add_argument(
        "--open-pr",
        action="store_true",
        help="also open a pull request that pins it on the default branch (GITHUB_TOKEN, "
        "GITHUB_REPOSITORY; contents and pull-requests: write)",
    )
    record.set_defaults(handler=run_record)
    p.set_defaults(handler=_no_action)


def _no_action(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    raise UsageError(
        "bases needs an action",
        cause="no list, plan, wait or record after `bases`",
        fix="python -m scripts bases --help",
    )


def run_list(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.image.base_build import catalog_listing
    from scripts.image.bases import load_catalog

    catalog = load_catalog(args.kustomize_dir)
    rows = catalog_listing(catalog)
    lines = []
    for name, base in sorted(catalog.bases.items()):
        where = base.image or "(local: an empty image)"
        if base.digest:
            where = f"{where.split('@', 1)[0]}@{base.digest}"
        elif base.build is not None:
            where += "  (not built yet)"
        families = f"  families: {','.join(base.families)}" if base.families else ""
        lines.append(f"{name:<20} {where}{families}")
    return CommandOutput(
        data={
            "default": catalog.default,
            "node_family_label": catalog.node_family_label,
            "bases": rows,
            "families": {k: list(v) for k, v in sorted(catalog.families.items())},
        },
        text="\n".join(lines),
    )


def run_plan(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.image.base_build import plan_build
    from scripts.image.bases import load_catalog

    plan = plan_build(load_catalog(args.kustomize_dir), args.base, args.repository)
    return CommandOutput(
        data=plan.to_dict(),
        text=plan.substitutions_flag(),
        outputs={
            "substitutions": plan.substitutions_flag(),
            "image": plan.image,
            "repository": plan.repository,
            "tf-serving-version": plan.tf_serving_version,
            "march": plan.march,
        },
    )


def run_wait(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.atomic import write_text_atomic
    from scripts.image.base_build import GLOBAL, BuildRef, CloudBuild, judge_build, wait_for_build
    from scripts.image.bases import load_catalog

    catalog = load_catalog(args.kustomize_dir)
    if args.build_id:
        ref = BuildRef(args.build_id, args.project, args.region or GLOBAL)
    elif args.build_json:
        submitted = CloudBuild.from_file(args.build_json)
        ref = BuildRef(
            submitted.id, submitted.project or args.project, args.region or submitted.region
        )
    else:
        raise UsageError(
            "bases wait needs --build-id or --build-json",
            cause="neither was given (an empty --build-id counts as none)",
            fix="pass the JSON `gcloud builds submit --async --format=json` printed, or the id",
        )
    with logmod.stage(f"wait for Cloud Build {ref.id}"):
        build = wait_for_build(ref, timeout_s=args.timeout, poll_s=args.poll)
    if args.out:
        write_text_atomic(args.out, json.dumps(dict(build.raw), indent=2, sort_keys=True) + "\n")
    outputs = {"build-id": build.id, "status": build.status, "log-url": build.log_url}
    try:
        built = judge_build(catalog, args.base, build)
    except PipelineError:
        logmod.set_outputs(outputs)  # the failed build's id and logs, for the summary
        raise
    outputs |= {
        "digest": built.digest,
        "pinned": built.pinned,
        # Compact, one line: the next job writes it to a file for `bases record`.
        "build": json.dumps(build.resource(), separators=(",", ":"), sort_keys=True),
    }
    return CommandOutput(
        data=built.to_dict(),
        text=f"{build.id}: {build.status}, pushed {built.pinned}",
        summary_markdown=f"### Cloud Build `{build.id}`: {build.status}\n\n"
        f"`{args.base}` → `{built.pinned}` ([logs]({build.log_url}))\n",
        outputs=outputs,
    )


def run_record(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.image.base_build import CloudBuild, record_build

    build = CloudBuild.from_file(args.build_json)
    repository = settings.github.repository
    if args.open_pr and not repository:
        raise UsageError(
            "--open-pr needs GITHUB_REPOSITORY (OWNER/REPO) and GITHUB_TOKEN",
            cause="the command runs outside GitHub Actions",
            fix="drop --open-pr (the file is still rewritten here), or set both",
        )
    with logmod.stage("record"):
        result = record_build(args.base, build, args.kustomize_dir)
    data: dict[str, object] = result.to_dict()
    outputs = {"digest": result.built.digest, "pinned": result.built.pinned}
    summary = f"### `{args.base}` → `{result.built.pinned}`\n\nCloud Build `{build.id}`" + (
        f" ([logs]({build.log_url}))" if build.log_url else ""
    )
    text = f"{args.base}: {result.built.pinned}"
    if args.open_pr and repository:
        from scripts.github.base_pr import open_pull_request
        from scripts.github.client import GitHubApi

        with logmod.stage("pull request"), GitHubApi(settings, repository) as api:
            pull = open_pull_request(api, result.built, run_url=settings.github.run_url)
        # already_pinned: the name this command's JSON has always used for already_applied
        data["pull_request"] = pull.to_dict() | {"already_pinned": pull.already_applied}
        if pull.already_applied:
            note = "the default branch already pins it: no pull request needed"
        else:
            state = "opened" if pull.created else "reused"
            note = f"pull request #{pull.number} ({state}): {pull.url}"
            outputs |= {"pr-number": str(pull.number), "pr-url": str(pull.url)}
        summary += f"\n\n{note}"
        text += f"\n{note}"
    return CommandOutput(
        data=data,
        text=text,
        summary_markdown=summary + "\n",
        outputs=outputs,
    )
