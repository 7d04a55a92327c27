"""The GitHub REST API, through PyGithub, with GitHub's failures turned into ours.

One :class:`GitHubApi` per repository. Reads (and other idempotent requests) are
retried by PyGithub's ``GithubRetry`` (5xx, and 403s that are rate limits); POSTs
are *not* retried blindly, because a retried create can create twice: the callers
that create (deployments, comments) look for what an earlier attempt made first.

Errors: 401 → AuthError; 403 → AuthError naming the permission the job must grant;
404 → ArtifactNotFoundError; 422 → ConfigError with GitHub's message; 5xx after
the retries, and connection failures → RemoteError.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import requests
from github import Auth, Github, GithubException, GithubRetry
from github.Deployment import Deployment
from github.GitRelease import GitRelease
from github.GitReleaseAsset import GitReleaseAsset
from github.IssueComment import IssueComment
from github.Repository import Repository

from scripts.config import Settings
from scripts.errors import (
    ArtifactNotFoundError,
    AuthError,
    ConfigError,
    PipelineError,
    RemoteError,
    UsageError,
)
from scripts.log import log
from scripts.transfer import (
    RetryPolicy,
    TransientError,
    call_with_retries,
    download,
    new_session,
)

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"})
DESCRIPTION_LIMIT = 140  # GitHub's limit on a deployment status description
PULL_FILES_LIMIT = 3000  # GitHub lists at most 3,000 files of a pull request
T = TypeVar("T")


@dataclass(frozen=True)
class PullRequestInfo:
    """What a comment-triggered run needs to know about a pull request."""

    number: int
    state: str  # open | closed
    head_sha: str  # the exact commit to check out (never the branch: it can move)
    head_ref: str
    head_repo: str | None  # OWNER/REPO the head lives in; None when that fork was deleted
    base_repo: str
    base_ref: str
    html_url: str = ""

    @property
    def from_fork(self) -> bool:
        """Whether the head lives in another repository (a deleted fork counts)."""
        return self.head_repo is None or self.head_repo.lower() != self.base_repo.lower()

    @classmethod
    def from_api(cls, data: Any) -> PullRequestInfo:
        head, base = data["head"], data["base"]
        head_repo = head.get("repo")
        return cls(
            number=int(data["number"]),
            state=str(data["state"]),
            head_sha=str(head["sha"]),
            head_ref=str(head.get("ref", "")),
            head_repo=str(head_repo["full_name"]) if head_repo else None,
            base_repo=str(base["repo"]["full_name"]),
            base_ref=str(base["ref"]),
            html_url=str(data.get("html_url", "")),
        )


@dataclass(frozen=True)
class Permission:
    """What the job must grant for a call, and the words to say so."""

    scope: str  # e.g. "deployments: write"

    def fix(self) -> str:
        return (
            f"add `permissions: {{{self.scope}}}` to the job (GITHUB_TOKEN), or use a token with it"
        )


def short(text: str, limit: int = DESCRIPTION_LIMIT) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis (GitHub refuses longer)."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class GitHubApi:
    """One repository's API: releases, deployments, comments, reactions, permissions,
    pull requests and their trees, check runs."""

    def __init__(self, settings: Settings, repository: str, *, attempts: int = 5) -> None:
        if "/" not in repository:
            raise UsageError(
                f"{repository!r} is not OWNER/REPO",
                fix="run inside GitHub Actions (GITHUB_REPOSITORY), or pass --repository",
            )
        self.settings = settings
        self.full_name = repository
        self.token = settings.github_token
        retry = GithubRetry(total=attempts, backoff_factor=0.5, allowed_methods=IDEMPOTENT)
        self.gh = Github(
            auth=Auth.Token(self.token) if self.token else None,
            base_url=settings.github_api_url,
            retry=retry,
            timeout=30,
            lazy=True,
            seconds_between_requests=0.25 * settings.github_pacing,
            seconds_between_writes=1.0 * settings.github_pacing,
        )
        self.repo: Repository = self.gh.get_repo(repository)  # lazy: Github(lazy=True)

    def close(self) -> None:
        self.gh.close()

    def __enter__(self) -> GitHubApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- errors ------------------------------------------------------------------------
    @contextlib.contextmanager
    def calling(self, what: str, needs: Permission | None = None) -> Iterator[None]:
        """Turn GitHub's failures during ``what`` into the pipeline's errors."""
        try:
            yield
        except PipelineError:
            raise
        except GithubException as exc:
            raise self._error(what, exc, needs) from exc
        except requests.RequestException as exc:
            raise RemoteError(
                f"GitHub API unreachable while trying to {what}: {exc}",
                cause="a network failure or a GitHub outage",
                fix="retry the job; see https://www.githubstatus.com",
            ) from exc

    def _error(self, what: str, exc: GithubException, needs: Permission | None) -> PipelineError:
        data = exc.data if isinstance(exc.data, dict) else {}
        message = exc.message or str(data.get("message", ""))
        detail = f"GitHub answered {exc.status} while trying to {what}: {message or exc}"
        if exc.status == 401:
            return AuthError(
                detail,
                cause="the token is missing, invalid or expired",
                fix="pass GITHUB_TOKEN (in Actions: env GITHUB_TOKEN: ${{ github.token }})",
            )
        if exc.status == 403:
            return AuthError(
                detail,
                cause=f"the token lacks {needs.scope}" if needs else "the token lacks a permission",
                fix=needs.fix() if needs else "grant the token the permission the call needs",
            )
        if exc.status == 404:
            return ArtifactNotFoundError(
                detail,
                cause=f"it does not exist in {self.full_name}, or the token cannot see it",
                fix="check the name or id; private repositories need a token that can read them",
            )
        if exc.status == 422:
            return ConfigError(
                detail,
                cause="GitHub refused the request as invalid (a ref, a state or a field)",
                fix="see the message above",
            )
        return RemoteError(
            detail,
            cause="a GitHub outage or an unexpected answer, still failing after retries",
            fix="retry the job; see https://www.githubstatus.com",
        )

    def _post(self, what: str, needs: Permission, call: Callable[[], T], *, retry: bool) -> T:
        """A POST. ``retry`` only when doing it twice is harmless (a status, a reaction);
        a create is never retried here: its caller looks for what a failed attempt made."""

        def once() -> T:
            try:
                return call()
            except GithubException as exc:
                if retry and (exc.status >= 500 or exc.status == 429):
                    raise TransientError(f"GitHub answered {exc.status}") from exc
                raise self._error(what, exc, needs) from exc
            except requests.RequestException as exc:
                if retry:
                    raise TransientError(str(exc)) from exc
                raise RemoteError(
                    f"GitHub unreachable while trying to {what}: {exc}",
                    cause="a network failure or a GitHub outage",
                    fix="retry the job; see https://www.githubstatus.com",
                ) from exc

        return call_with_retries(
            RetryPolicy(attempts=4, initial_backoff_s=1.0),
            once,
            lambda exc: RemoteError(
                f"GitHub kept failing to {what}: {exc}",
                cause="a GitHub outage",
                fix="retry the job; see https://www.githubstatus.com",
            ),
        )

    def raw(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """A call PyGithub has no method (or no field) for; ``path`` under the repo."""
        _, data = self.gh.requester.requestJsonAndCheck(
            method, f"/repos/{self.full_name}{path}", input=body
        )
        return data

    # -- releases ----------------------------------------------------------------------
    def release(self, id_or_tag: int | str) -> GitRelease:
        with self.calling(f"read release {id_or_tag}", Permission("contents: read")):
            release = self.repo.get_release(id_or_tag)
            release.complete()
            return release

    def assets(self, release: GitRelease) -> list[GitReleaseAsset]:
        with self.calling(f"list the assets of {release.tag_name}", Permission("contents: read")):
            return list(release.get_assets())

    def asset_text(self, asset: GitReleaseAsset, limit: int = 64 * 1024) -> str:
        """A small asset's text (a .sha256 file), through the API URL; no token on redirect."""
        if asset.size > limit:
            raise ConfigError(f"release asset {asset.name} is {asset.size} bytes; expected text")
        headers = {"Accept": "application/octet-stream"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        with tempfile.TemporaryDirectory() as tmp, new_session() as session:
            result = download(
                session,
                asset.url,
                Path(tmp) / asset.name,
                what=f"release asset {asset.name}",
                headers=headers,
                policy=RetryPolicy(attempts=4),
                progress=False,
            )
            return result.path.read_text(encoding="utf-8", errors="replace")

    def update_release_body(self, release_id: int, body: str) -> None:
        # PATCH with the body only: PyGithub's update_release also resets draft/prerelease.
        with self.calling(
            f"update the notes of release {release_id}", Permission("contents: write")
        ):
            self.raw("PATCH", f"/releases/{release_id}", {"body": body})

    # -- deployments -------------------------------------------------------------------
    def deployments(self, environment: str, task: str | None = None) -> list[Deployment]:
        """The environment's deployments, newest first (optionally one task's)."""
        with self.calling(
            f"list the deployments to {environment}", Permission("deployments: read")
        ):
            found = self.repo.get_deployments(environment=environment)
            return [d for d in found if task is None or d.task == task]

    def deployment(self, deployment_id: int) -> Deployment:
        with self.calling(f"read deployment {deployment_id}", Permission("deployments: read")):
            return self.repo.get_deployment(deployment_id)

    def create_deployment(
        self,
        *,
        ref: str,
        environment: str,
        task: str,
        payload: dict[str, Any],
        description: str,
        transient: bool,
        production: bool | None,
    ) -> Deployment:
        body: dict[str, Any] = {
            "ref": ref,
            "task": task,
            "auto_merge": False,  # deploy exactly this ref, never merge the default branch in
            "required_contexts": [],  # the workflow already ran the checks it needs
            "payload": payload,
            "environment": environment,
            "description": short(description),
            "transient_environment": transient,
        }
        if production is not None:
            body["production_environment"] = production

        data = self._post(
            f"create a deployment to {environment}",
            Permission("deployments: write"),
            lambda: self.raw("POST", "/deployments", body),
            retry=False,
        )
        return self.deployment(int(data["id"]))

    def states(self, deployment: Deployment) -> list[str]:
        """The deployment's status states, newest first."""
        with self.calling(
            f"read the statuses of deployment {deployment.id}", Permission("deployments: read")
        ):
            return [str(status.state) for status in deployment.get_statuses()]

    def create_status(
        self,
        deployment_id: int,
        state: str,
        description: str,
        *,
        log_url: str | None = None,
        environment_url: str | None = None,
        auto_inactive: bool = False,
    ) -> None:
        body: dict[str, Any] = {
            "state": state,
            "description": short(description),
            "auto_inactive": auto_inactive,
        }
        if log_url:
            body["log_url"] = log_url  # PyGithub's create_status has no log_url
        if environment_url:
            body["environment_url"] = environment_url
        # A status posted twice is harmless (the latest wins): plain retries are fine.
        self._post(
            f"set deployment {deployment_id} to {state}",
            Permission("deployments: write"),
            lambda: self.raw("POST", f"/deployments/{deployment_id}/statuses", body),
            retry=True,
        )

    def can_create_deployments(self, ref: str) -> bool:
        """Whether the token may create deployments, without creating one.

        GitHub authorises before it validates: a deployment of a ref that cannot exist
        is refused with 422 when the token may create deployments, 403 when it may not.
        """
        body = {"ref": f"refs/heads/tf-release-pipeline-preflight/{ref}", "required_contexts": []}
        try:
            self.raw("POST", "/deployments", body)
        except GithubException as exc:
            if exc.status == 422:
                return True
            if exc.status in (401, 403, 404):
                return False
            raise self._error("check the deployment permission", exc, None) from exc
        log.warning("GitHub accepted a deployment of a nonexistent ref during the preflight")
        return True

    # -- issues, comments, reactions, permissions ----------------------------------------
    def comments(self, issue_number: int) -> list[IssueComment]:
        with self.calling(f"list the comments of #{issue_number}", Permission("issues: read")):
            return list(self.repo.get_issue(issue_number).get_comments())

    def create_comment(self, issue_number: int, body: str) -> int:
        data = self._post(
            f"comment on #{issue_number}",
            Permission("pull-requests: write"),
            lambda: self.raw("POST", f"/issues/{issue_number}/comments", {"body": body}),
            retry=False,
        )
        return int(data["id"])

    def edit_comment(self, comment_id: int, body: str) -> None:
        with self.calling(f"edit comment {comment_id}", Permission("pull-requests: write")):
            self.raw("PATCH", f"/issues/comments/{comment_id}", {"body": body})

    def react(self, comment_id: int, content: str) -> None:
        # Reacting twice with the same content answers 200 with the existing reaction.
        self._post(
            f"react {content} to comment {comment_id}",
            Permission("pull-requests: write"),
            lambda: self.raw(
                "POST", f"/issues/comments/{comment_id}/reactions", {"content": content}
            ),
            retry=True,
        )

    # -- pull requests, trees, check runs ------------------------------------------------
    def pull_request(self, number: int) -> PullRequestInfo:
        with self.calling(f"read pull request #{number}", Permission("pull-requests: read")):
            data = self.raw("GET", f"/pulls/{number}")
        try:
            return PullRequestInfo.from_api(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise RemoteError(
                f"GitHub's answer for pull request #{number} lacks {exc}",
                cause="an unexpected API answer",
                fix="retry the job; see https://www.githubstatus.com",
            ) from exc

    def pull_request_files(self, number: int) -> list[str]:
        """The paths a pull request adds, changes, renames (both names) or removes."""
        paths: list[str] = []
        with self.calling(
            f"list the files of pull request #{number}", Permission("pull-requests: read")
        ):
            for page in range(1, PULL_FILES_LIMIT // 100 + 1):
                batch = self.raw("GET", f"/pulls/{number}/files?per_page=100&page={page}")
                for entry in batch:
                    paths.append(str(entry["filename"]))
                    if entry.get("previous_filename"):
                        paths.append(str(entry["previous_filename"]))
                if len(batch) < 100:
                    break
        return paths

    def directory(self, path: str, ref: str) -> dict[str, str]:
        """The entries of a directory at ``ref``: name → ``dir`` / ``file`` / ``symlink`` /
        ``submodule``; empty when the directory does not exist there."""
        try:
            with self.calling(f"list {path} at {ref}", Permission("contents: read")):
                data = self.raw("GET", f"/contents/{path}?ref={ref}")
        except ArtifactNotFoundError:
            return {}
        if not isinstance(data, list):  # a file, not a directory
            return {}
        return {str(entry["name"]): str(entry["type"]) for entry in data}

    def releases(self) -> list[GitRelease]:
        """The repository's releases, newest first (drafts included: callers skip them)."""
        with self.calling("list the releases", Permission("contents: read")):
            return list(self.repo.get_releases())

    def create_check_run(self, body: dict[str, Any]) -> dict[str, Any]:
        # Not retried: a create done twice is two check runs on the commit.
        data: dict[str, Any] = self._post(
            f"create the check run {body.get('name')!r}",
            Permission("checks: write"),
            lambda: self.raw("POST", "/check-runs", body),
            retry=False,
        )
        return data

    def update_check_run(self, check_run_id: int, body: dict[str, Any]) -> dict[str, Any]:
        with self.calling(f"update check run {check_run_id}", Permission("checks: write")):
            data: dict[str, Any] = self.raw("PATCH", f"/check-runs/{check_run_id}", body)
            return data

    def check_run(self, check_run_id: int) -> dict[str, Any]:
        with self.calling(f"read check run {check_run_id}", Permission("checks: read")):
            data: dict[str, Any] = self.raw("GET", f"/check-runs/{check_run_id}")
            return data

    def comment_body(self, comment_id: int) -> str:
        with self.calling(f"read comment {comment_id}", Permission("issues: read")):
            data = self.raw("GET", f"/issues/comments/{comment_id}")
            return str(data.get("body") or "")

    def permission(self, user: str) -> str:
        """``admin``, ``write``, ``read`` or ``none`` (maintain counts as write)."""
        try:
            with self.calling(f"read {user}'s permission", Permission("metadata: read")):
                return str(self.repo.get_collaborator_permission(user))
        except ArtifactNotFoundError:
            return "none"  # not a collaborator (GitHub answers 404)
