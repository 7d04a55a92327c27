"""A change to one file of the repository, proposed by pull request (never pushed).

Used for what a workflow measures or builds and a reviewer should see before it
applies: a serving base's digest (``bases record --open-pr``, scripts/github/base_pr.py)
and a gate calibration (``gate record --open-pr``). Everything goes through the REST API
(no git, no checkout with credentials):

1. the branch from the default branch's head (``GET /git/ref/heads/DEFAULT``,
   ``POST /git/refs``; 422 "Reference already exists" means an earlier run made it: it
   is reused);
2. the file on that branch, rewritten by ``change`` from the branch's own copy (so the
   diff is the change alone; already changed: no commit; 409 after a lost response: read
   again and compare) — ``GET``/``PUT /contents/…``, or a create when the file is new;
3. the pull request (``GET /pulls?head=OWNER:BRANCH``: an open one is reused and its
   title and body brought up to date; else ``POST /pulls``, whose 422 "A pull request
   already exists" is the same race).

Running it again for the same change therefore changes nothing and opens nothing new.
Open pull requests from branches with the same ``supersede_prefix`` are listed in the
new one's body ("supersedes") and left for a reviewer to close.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

from github import GithubException
from github.ContentFile import ContentFile
from github.PullRequest import PullRequest

from scripts.errors import ArtifactNotFoundError, AuthError, ConflictError, RemoteError
from scripts.github.client import GitHubApi, Permission
from scripts.log import log

CONTENTS = Permission("contents: write")
PULLS = Permission("pull-requests: write")


@dataclass(frozen=True)
class FileChange:
    """What to propose: ``change`` maps the file's text ("" when absent) to the new text."""

    path: str  # in the repository
    change: Callable[[str], str]
    branch: str
    title: str
    commit_message: str
    # given the superseded pull requests' numbers and the file on the default branch
    body: Callable[[list[int], str], str]
    supersede_prefix: str  # open pull requests from branches starting so are superseded
    must_exist: bool = True  # the file is expected on the default branch


@dataclass(frozen=True)
class ProposedChange:
    number: int | None  # None: the default branch already has it, no pull request needed
    url: str | None
    branch: str
    created: bool  # False: an open pull request from an earlier run was reused
    committed: bool  # False: the branch already held the change
    supersedes: tuple[int, ...] = ()
    already_applied: bool = False  # the default branch holds it (merged earlier)

    def to_dict(self) -> dict[str, object]:
        return {
            "number": self.number,
            "url": self.url,
            "branch": self.branch,
            "created": self.created,
            "committed": self.committed,
            "supersedes": list(self.supersedes),
            "already_applied": self.already_applied,
        }


def propose(api: GitHubApi, proposal: FileChange) -> ProposedChange:
    """Open (or bring up to date) the pull request that makes ``proposal``; idempotent."""
    branch = proposal.branch
    with api.calling("read the repository", Permission("contents: read")):
        default = api.repo.default_branch
    found = _file(api, proposal, default)
    on_default = _text(found)
    if found is None and proposal.must_exist:
        raise ConflictError(
            f"{proposal.path} is missing on {default}",
            cause="the branch does not hold this project's files",
            fix=f"restore {proposal.path} on {default}",
        )
    if found is not None and proposal.change(on_default) == on_default:
        # A rerun after the merge: nothing to propose (and GitHub would refuse a pull
        # request without commits).
        log.info("%s on %s already has the change", proposal.path, default)
        return ProposedChange(None, None, branch, False, False, already_applied=True)
    _ensure_branch(api, branch, default)
    committed = _commit_on_branch(api, proposal)
    owner = api.full_name.split("/", 1)[0]
    with api.calling("list the open pull requests", Permission("pull-requests: read")):
        open_pulls = list(api.repo.get_pulls(state="open", base=default))
    mine = [p for p in open_pulls if p.head.ref == branch]
    supersedes = sorted(
        p.number
        for p in open_pulls
        if p.head.ref.startswith(proposal.supersede_prefix) and p.head.ref != branch
    )
    title = proposal.title
    body = proposal.body(supersedes, on_default)
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
        "pull request #%d %s: %s", pull.number, "opened" if created else "reused", pull.html_url
    )
    return ProposedChange(
        number=pull.number,
        url=pull.html_url,
        branch=branch,
        created=created,
        committed=committed,
        supersedes=tuple(supersedes),
    )


def message_of(exc: GithubException) -> str:
    data = exc.data if isinstance(exc.data, dict) else {}
    texts = [str(data.get("message", ""))]
    for error in data.get("errors") or []:
        if isinstance(error, dict):
            texts.append(str(error.get("message", "")))
        else:
            texts.append(str(error))
    return " ".join(t for t in texts if t)


def _text(found: ContentFile | None) -> str:
    return base64.b64decode(found.content or "").decode("utf-8") if found is not None else ""


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
            if exc.status != 422 or "already exists" not in message_of(exc):
                raise
            log.info("branch %s was created meanwhile: reusing it", branch)


def _file(api: GitHubApi, proposal: FileChange, branch: str) -> ContentFile | None:
    """The file on ``branch``; None when it does not exist there."""
    try:
        with api.calling(f"read {proposal.path} on {branch}", Permission("contents: read")):
            found = api.repo.get_contents(proposal.path, ref=branch)
    except ArtifactNotFoundError:
        return None
    if isinstance(found, list):
        raise ConflictError(
            f"{proposal.path} is a directory on {branch}",
            cause="the branch was changed by hand",
            fix=f"make {proposal.path} a file again",
        )
    return found


def _commit_on_branch(api: GitHubApi, proposal: FileChange) -> bool:
    """Commit the changed file on the proposal's branch; False when it is there already."""
    path, branch = proposal.path, proposal.branch
    for attempt in (1, 2):
        current = _file(api, proposal, branch)
        if current is None and proposal.must_exist:
            raise ConflictError(
                f"{path} is missing on {branch}",
                cause="the branch was changed by hand",
                fix=f"delete the branch {branch} and run the workflow again",
            )
        text = _text(current)
        wanted = proposal.change(text)
        if current is not None and wanted == text:
            log.info("%s on %s already has the change", path, branch)
            return attempt > 1  # on a second look: the first PUT did land
        with api.calling(f"commit {path} on {branch}", CONTENTS):
            try:
                if current is None:
                    api.repo.create_file(path, proposal.commit_message, wanted, branch=branch)
                else:
                    api.repo.update_file(
                        path, proposal.commit_message, wanted, current.sha, branch=branch
                    )
            except GithubException as exc:
                # 409: the file changed under us, or a retried PUT had already landed;
                # 422 on a create: it exists now. Read it again and compare.
                if exc.status not in (409, 422) or attempt > 1:
                    raise
                log.info("%s changed on %s meanwhile: reading it again", path, branch)
                continue
        log.info("committed %s on %s", path, branch)
        return True
    raise ConflictError(
        f"{path} keeps changing on {branch}",
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
            text = message_of(exc)
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
