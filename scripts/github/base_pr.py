"""The pull request that pins a freshly built serving base (``bases record --open-pr``).

The digest reaches ``kustomize/bases.yaml`` on the default branch through a pull
request, never a push: a reviewer sees which build made it (id, logs, flags) before any
model is built on it. The branch is ``bases/NAME-<first 12 hex of the digest>``; the
file is rewritten from the branch's own copy, so the diff is the two lines of that base.
How the branch, the commit and the pull request are made (and reused by a rerun) is
scripts/github/file_pr.py. Open pull requests for the same base with another digest are
listed in the new one's body ("supersedes"), and left for a reviewer to close.
"""

from __future__ import annotations

from scripts.github.client import GitHubApi
from scripts.github.file_pr import FileChange, ProposedChange, propose
from scripts.image.base_build import CATALOG_REPO_PATH, BuiltBase, pinned_text

BRANCH_PREFIX = "bases/"
MARKER = "<!-- tf-release-pipeline:base-build {base} -->"


def branch_for(built: BuiltBase) -> str:
    return f"{BRANCH_PREFIX}{built.plan.base}-{built.digest.split(':', 1)[1][:12]}"


def title_for(built: BuiltBase) -> str:
    plan = built.plan
    return f"bases: {plan.base} built (TF Serving {plan.tf_serving_version}, -march={plan.march})"


def body_for(built: BuiltBase, *, run_url: str | None, supersedes: list[int]) -> str:
    plan, build = built.plan, built.build
    logs = f"[logs]({build.log_url})" if build.log_url else "no log URL"
    rows = [
        ("base", f"`{plan.base}`"),
        ("TF Serving", f"`{plan.tf_serving_version}` (tensorflow/serving tag)"),
        ("compiled with", f"`--config=release --copt=-march={plan.march}`"),
        ("image", f"`{plan.image}`"),
        ("digest", f"`{built.digest}`"),
        ("Cloud Build", f"`{build.id}` ({logs})"),
    ]
    if run_url:
        rows.append(("workflow run", run_url))
    lines = [
        f"Pins `{plan.base}` in `{CATALOG_REPO_PATH}` to the image Cloud Build just built "
        f"and pushed (`cloudbuild/tf-serving-base.yaml`).",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
        f"Once merged, every build that uses `{plan.base}` (by `--base`, a model's "
        "`base_image:` or an overlay's `serving-base.yaml`) bakes models into "
        f"`{built.pinned}`; until then the base cannot be used.",
        "",
        "Checks do not start by themselves on a pull request opened with the workflow's "
        "token: close and reopen it (or push to it) to run them.",
    ]
    if supersedes:
        numbers = ", ".join(f"#{n}" for n in supersedes)
        lines += ["", f"Supersedes {numbers} (the same base, another build): close them."]
    lines += ["", MARKER.format(base=plan.base)]
    return "\n".join(lines) + "\n"


def open_pull_request(
    api: GitHubApi, built: BuiltBase, *, run_url: str | None = None
) -> ProposedChange:
    """Open (or bring up to date) the pull request that pins ``built``; idempotent."""
    plan = built.plan
    return propose(
        api,
        FileChange(
            path=CATALOG_REPO_PATH,
            change=lambda text: pinned_text(text, built),
            branch=branch_for(built),
            title=title_for(built),
            commit_message=(
                f"bases: pin {plan.base} to {built.digest[:19]} "
                f"(TF Serving {plan.tf_serving_version}, -march={plan.march})\n\n"
                f"Cloud Build {built.build.id}: {built.pinned}"
            ),
            body=lambda supersedes, _: body_for(built, run_url=run_url, supersedes=supersedes),
            supersede_prefix=f"{BRANCH_PREFIX}{plan.base}-",
        ),
    )
