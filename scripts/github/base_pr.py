"""The pull request that pins a freshly built serving base (``bases record --open-pr``).

The digest reaches ``kustomize/bases.yaml`` on the default branch through a pull
request, never a push: a reviewer sees which build made it (id, logs, flags) before any
model is built on it. Everything goes through the REST API (no git, no checkout with
credentials):

1. the branch ``bases/NAME-<first 12 hex of the digest>`` from the default branch's head
   (``GET /git/ref/heads/DEFAULT``, ``POST /git/refs``; 422 "Reference already exists"
   means an earlier run made it: it is reused);
2. the catalog on that branch, with the base pinned (``GET``/``PUT /contents/…``; the
   file is rewritten from the branch's own copy, so the diff is the two lines of that
   base; already pinned: no commit; 409 after a lost response: read again and compare);
3. the pull request (``GET /pulls?head=OWNER:BRANCH``: an open one is reused and its
   title and body brought up to date; else ``POST /pulls``, whose 422 "A pull request
   already exists" is the same race).

Running it again for the same build therefore changes nothing and opens nothing new.
Open pull requests for the same base with another digest are listed in the new one's
body ("supersedes"), and left for a reviewer to close.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from github import GithubException
from github.ContentFile import ContentFile
from github.PullRequest import PullRequest

from scripts.errors import ArtifactNotFoundError, AuthError, ConflictError, RemoteError
from scripts.github.client import GitHubApi, Permission
from scripts.image.base_build import CATALOG_REPO_PATH, BuiltBase, pinned_text
from scripts.log import log

BRANCH_PREFIX = "bases/"
MARKER = "<!-- tf-release-pipeline:base-build {base} -->"
CONTENTS = Permission("contents: write")
PULLS = Permission("pull-requests: write")


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


@dataclass(frozen=True)
class BasePullRequest:
    number: int | None  # None: the default branch already pins it, no pull request needed
    url: str | None
    branch: str
    created: bool  # False: an open pull request from an earlier run was reused
    committed: bool  # False: the branch already held the pinned catalog
    supersedes: tuple[int, ...] = ()
    already_pinned: bool = False  # the default branch holds this digest (merged earlier)

    def to_dict(self) -> dict[str, object]:
        return {
            "already_pinned": self.already_pinned,
            "number": self.number,
            "url": self.url,
            "branch": self.branch,
            "created": self.created,
            "committed": self.committed,
            "supersedes": list(self.supersedes),
        }


def open_pull_request(
    api: GitHubApi, built: BuiltBase, *, run_url: str | None = None
) -> BasePullRequest:
    """Open (or bring up to date) the pull request that pins ``built``; idempotent."""
    branch = branch_for(built)
    with api.calling("read the repository", Permission("contents: read")):
        default = api.repo.default_branch
    on_default = base64.b64decode(_file(api, default).content or "").decode("utf-8")
    if pinned_text(on_default, built) == on_default:
        # A rerun after the merge: nothing to propose (and GitHub would refuse a pull
        # request without commits).
        log.info("%s on %s already pins %s", CATALOG_REPO_PATH, default, built.pinned)
        return BasePullRequest(None, None, branch, False, False, already_pinned=True)
    _ensure_branch(api, branch, default)
    committed = _pin_on_branch(api, built, branch)
    owner = api.full_name.split("/", 1)[0]
    with api.calling("list the open pull requests", Permission("pull-requests: read")):
        open_pulls = list(api.repo.get_pulls(state="open", base=default))
    mine = [p for p in open_pulls if p.head.ref == branch]
    prefix = f"{BRANCH_PREFIX}{built.plan.base}-"
    supersedes = sorted(
        p.number for p in open_pulls if p.head.ref.startswith(prefix) and p.head.ref != branch
    )
    title = title_for(built)
    body = body_for(built, run_url=run_url, supersedes=supersedes)
    created = False
    if mine:
        pull = mine[0]
    else:
        pull, created = _create_pull(
            api, default=default, branch=branch, head=f"{owner}:{branch}", title=title, body=body
        )
    if not created and (pull.title != title or (pull.body or "") != body):
        with api.calling(f"update pull request #{pull.number}", PULLS):
            pull.edit(title=title, body=body)
    log.info(
        "pull request #%d %s: %s",
        pull.number,
        "opened" if created else "reused",
        pull.html_url,
    )
    return BasePullRequest(
        number=pull.number,
        url=pull.html_url,
        branch=branch,
        created=created,
        committed=committed,
        supersedes=tuple(supersedes),
    )


def _message(exc: GithubException) -> str:
    data = exc.data if isinstance(exc.data, dict) else {}
    texts = [str(data.get("message", ""))]
    for error in data.get("errors") or []:
        if isinstance(error, dict):
            texts.append(str(error.get("message", "")))
        else:
            texts.append(str(error))
    return " ".join(t for t in texts if t)


def _ensure_branch(api: GitHubApi, branch: str, default: str) -> None:
    with api.calling(f"read the head of {default}", Permission("contents: read")):
        head = api.repo.get_git_ref(f"heads/{default}").object.sha
    try:
        with api.calling(f"look for the branch {branch}", Permission("contents: read")):
            # Github(lazy=True): reading the object is what sends the GET.
            api.repo.get_git_ref(f"heads/{branch}").object.sha  # noqa: B018
        log.info("branch %s exists (an earlier run): reusing it", branch)
        return
    except ArtifactNotFoundError:
        pass  # 404: not made yet
    with api.calling(f"create the branch {branch}", CONTENTS):
        try:
            api.repo.create_git_ref(f"refs/heads/{branch}", head)
            log.info("branch %s created from %s (%s)", branch, default, head[:12])
        except GithubException as exc:
            if exc.status != 422 or "already exists" not in _message(exc):
                raise
            log.info("branch %s was created meanwhile: reusing it", branch)


def _file(api: GitHubApi, branch: str) -> ContentFile:
    with api.calling(f"read {CATALOG_REPO_PATH} on {branch}", Permission("contents: read")):
        found = api.repo.get_contents(CATALOG_REPO_PATH, ref=branch)
    if isinstance(found, list):
        raise ConflictError(
            f"{CATALOG_REPO_PATH} is a directory on {branch}",
            cause="the branch was changed by hand",
            fix=f"make {CATALOG_REPO_PATH} the serving bases catalog again",
        )
    return found


def _pin_on_branch(api: GitHubApi, built: BuiltBase, branch: str) -> bool:
    """Commit the pinned catalog on ``branch``; False when it is pinned already."""
    message = (
        f"bases: pin {built.plan.base} to {built.digest[:19]} "
        f"(TF Serving {built.plan.tf_serving_version}, -march={built.plan.march})\n\n"
        f"Cloud Build {built.build.id}: {built.pinned}"
    )
    for attempt in (1, 2):
        current = _file(api, branch)
        text = base64.b64decode(current.content or "").decode("utf-8")
        wanted = pinned_text(text, built)
        if wanted == text:
            log.info("%s on %s already pins %s", CATALOG_REPO_PATH, branch, built.digest)
            return attempt > 1  # on a second look: the first PUT did land
        with api.calling(f"commit {CATALOG_REPO_PATH} on {branch}", CONTENTS):
            try:
                api.repo.update_file(CATALOG_REPO_PATH, message, wanted, current.sha, branch=branch)
            except GithubException as exc:
                if exc.status != 409 or attempt > 1:
                    raise
                # The file changed under us, or a retried PUT had already landed: read it
                # again and compare.
                log.info("%s changed on %s meanwhile: reading it again", CATALOG_REPO_PATH, branch)
                continue
        log.info("committed %s on %s", CATALOG_REPO_PATH, branch)
        return True
    raise ConflictError(
        f"{CATALOG_REPO_PATH} keeps changing on {branch}",
        cause="another run or a person is pushing to the branch",
        fix="run the workflow again once the branch is quiet",
    )


def _create_pull(
    api: GitHubApi, *, default: str, branch: str, head: str, title: str, body: str
) -> tuple[PullRequest, bool]:
    """``POST /pulls`` (never retried blindly); a 422 "already exists" is an earlier try's."""
    with api.calling(f"open a pull request from {branch}", PULLS):
        try:
            return api.repo.create_pull(base=default, head=branch, title=title, body=body), True
        except GithubException as exc:
            text = _message(exc)
            if exc.status == 403 and "not permitted to create" in text:
                raise AuthError(
                    f"GitHub refused to open the pull request: {text}",
                    cause="the repository does not let GitHub Actions create pull requests",
                    fix="Settings → Actions → General → Workflow permissions: tick 'Allow "
                    "GitHub Actions to create and approve pull requests' (the branch "
                    f"{branch} holds the change: open the pull request by hand meanwhile)",
                ) from exc
            if exc.status != 422 or "already exists" not in text:
                raise
    with api.calling("list the open pull requests", Permission("pull-requests: read")):
        existing = list(api.repo.get_pulls(state="open", head=head, base=default))
    if not existing:
        raise RemoteError(
            f"GitHub says a pull request from {branch} exists, but lists none",
            cause="an inconsistent answer from GitHub",
            fix="retry the job; see https://www.githubstatus.com",
        )
    return existing[0], False
