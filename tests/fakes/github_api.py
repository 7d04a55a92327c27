"""A fake GitHub REST API on loopback, speaking the real response shapes.

GitHub cannot run here, so this stands in for it (README: "What the tests
fake"). It serves what the pipeline calls, as GitHub documents it:

* releases: ``GET /repos/{o}/{r}/releases/{id}``, ``/releases/tags/{tag}``,
  ``/releases/{id}/assets``; ``PATCH /releases/{id}`` (the body);
  ``GET /releases/assets/{id}`` with ``Accept: application/octet-stream`` → ``302``
  to a *second* server (another host:port, like GitHub's CDN) that serves the bytes
  and records whether it received an ``Authorization`` header;
* deployments: ``POST``/``GET /deployments`` (filters ``environment``, ``task``,
  ``ref``, ``sha``; newest first), ``GET /deployments/{id}``, ``POST``/``GET
  /deployments/{id}/statuses`` (states and the 140-character description checked);
  a deployment of an unknown ref is ``422 No ref found``;
* issues: ``GET /issues/{n}``, ``GET``/``POST /issues/{n}/comments``,
  ``GET``/``PATCH /issues/comments/{id}``, ``POST /issues/comments/{id}/reactions``
  (201 new, 200 when the same reaction exists; content checked against GitHub's
  eight), and ``GET /collaborators/{user}/permission`` (404 for a non-collaborator);
* pull requests: ``GET /pulls/{n}`` (``head.sha``, ``head.repo`` — ``null`` for a
  deleted fork —, ``base.repo``, ``state``) and ``GET /pulls/{n}/files`` (paged);
* trees: ``GET /contents/{path}?ref=`` from a directory registered for that ref
  (``add_tree``): a directory lists its entries, a file comes base64-encoded; an
  unknown ref or path is 404;
* releases: ``GET /releases`` (newest first);
* check runs: ``POST /check-runs`` (name, a known ``head_sha``, status, a conclusion
  when completed, ``output`` with title and a summary of at most 65,535 bytes),
  ``PATCH``/``GET /check-runs/{id}``; 403 without ``checks: write``;
* git data and file commits, on a small in-memory git (``add_branch``): ``GET /`` (the
  repository, ``default_branch``), ``GET /git/ref/heads/{branch}``, ``POST /git/refs``
  (422 ``Reference already exists``, 422 ``Object does not exist``), ``GET
  /contents/{path}?ref=`` from a branch or commit, ``PUT /contents/{path}`` (a commit on
  the branch: 200 update, 201 create; 422 ``"sha" wasn't supplied`` for an existing file
  without ``sha``, 409 ``PATH does not match SHA`` for a stale one, 404 for an unknown
  branch, checked first; blob shas are git's);
* pull requests, created: ``GET /pulls`` (``state``, ``head=OWNER:BRANCH``, ``base``),
  ``POST /pulls`` (422 ``A pull request already exists for OWNER:BRANCH.``, 422 ``No
  commits between BASE and HEAD``, 403 ``GitHub Actions is not permitted to create or
  approve pull requests.`` when ``actions_may_create_pulls`` is off), ``PATCH
  /pulls/{n}`` (title, body, state);
* failures: 404 ``{"message": "Not Found", ...}``, 401 ``Bad credentials``, 403
  ``Resource not accessible by integration`` when the token lacks the permission
  (``token_permissions``), the 403 primary rate limit with ``x-ratelimit-reset``,
  assets that appear only after a delay, and any status injected for a route
  (``fail()``: 403, 404, 422, 500, 502, 503...).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

DOCS = "https://docs.github.com/rest"
STATUS_STATES = {"error", "failure", "inactive", "in_progress", "queued", "pending", "success"}
SHA = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
WRITE_SCOPES = {"deployments", "contents", "issues", "pull_requests", "checks"}
REACTIONS = {"+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"}
CHECK_STATUSES = {"queued", "in_progress", "completed", "waiting", "requested", "pending"}
CHECK_CONCLUSIONS = {
    "action_required",
    "cancelled",
    "failure",
    "neutral",
    "success",
    "skipped",
    "stale",
    "timed_out",
}
CHECK_TEXT_LIMIT = 65_535


@dataclass
class FakeAsset:
    id: int
    name: str
    data: bytes
    visible_after: float = 0.0  # monotonic time before which the asset is not listed
    state_until_uploaded: str = "uploaded"
    advertise_digest: bool = True
    digest_override: str | None = None


@dataclass
class FakeRelease:
    id: int
    tag: str
    assets: list[FakeAsset] = field(default_factory=list)
    prerelease: bool = False
    draft: bool = False
    body: str = ""


@dataclass
class FakeStatus:
    id: int
    state: str
    description: str
    log_url: str
    environment_url: str
    created_at: str


@dataclass
class FakeDeployment:
    id: int
    ref: str
    sha: str
    task: str
    payload: dict[str, Any]
    environment: str
    description: str
    transient: bool
    production: bool
    statuses: list[FakeStatus] = field(default_factory=list)  # oldest first


@dataclass
class FakeComment:
    id: int
    issue: int
    body: str
    user: str
    reactions: list[str] = field(default_factory=list)


@dataclass
class FakePull:
    number: int
    head_sha: str
    head_repo: str | None  # OWNER/REPO; None: the fork was deleted
    state: str = "open"
    files: list[str] = field(default_factory=list)
    head_ref: str = "feature"
    title: str = ""
    body: str = ""
    base_ref: str = "main"


@dataclass
class FakeCommit:
    sha: str
    files: dict[str, bytes]  # path → contents: the whole tree at this commit
    parents: list[str]
    message: str


@dataclass
class FakeCheckRun:
    id: int
    name: str
    head_sha: str
    status: str
    conclusion: str | None
    output: dict[str, Any]
    details_url: str
    external_id: str
    started_at: str
    completed_at: str | None = None
    history: list[tuple[str, str | None, str]] = field(
        default_factory=list
    )  # status, concl., title


@dataclass
class Failure:
    method: str
    path: re.Pattern[str]
    status: int
    times: int
    body: Any
    after: bool = False  # do the work, then answer with the failure (a lost response)


def _user(login: str = "octocat") -> dict[str, Any]:
    return {
        "login": login,
        "id": 1,
        "node_id": "MDQ6VXNlcjE=",
        "type": "User",
        "site_admin": False,
        "url": f"https://api.github.com/users/{login}",
    }


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def blob_sha(data: bytes) -> str:
    """git's blob id (what the contents API calls a file's ``sha``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's id


class FakeGitHub:
    """Two loopback servers: the API and the asset CDN it redirects to."""

    def __init__(self, owner: str = "acme", repo: str = "models") -> None:
        self.owner = owner
        self.repo = repo
        self.api = HTTPServer(host="127.0.0.1", port=0)
        self.cdn = HTTPServer(host="localhost", port=0)  # another host, as on github.com
        self.releases: dict[int, FakeRelease] = {}
        self.deployments: dict[int, FakeDeployment] = {}
        self.comments: dict[int, FakeComment] = {}
        self.issues: dict[int, bool] = {}  # number → is a pull request
        self.collaborators: dict[str, str] = {"octocat": "admin"}
        self.pulls: dict[int, FakePull] = {}
        self.trees: dict[str, Path] = {}  # ref (branch or sha) → the directory it holds
        self.check_runs: dict[int, FakeCheckRun] = {}
        self.refs: set[str] = {"main", SHA}
        self.default_branch = "main"
        # The in-memory git behind refs, contents and created pull requests (add_branch).
        self.branches: dict[str, str] = {}  # branch → commit sha
        self.commits: dict[str, FakeCommit] = {}
        # The repository setting "Allow GitHub Actions to create and approve pull requests".
        self.actions_may_create_pulls = True
        self.token: str | None = None  # when set, requests must carry it
        # What GITHUB_TOKEN was granted (a job's `permissions:`): scope → read | write.
        self.token_permissions: dict[str, str] = dict.fromkeys(WRITE_SCOPES, "write")
        self.rate_limited_until: float | None = None  # epoch seconds
        self.cdn_auth_headers: list[str | None] = []
        self.api_requests: list[str] = []
        self.cdn_failures_remaining = 0  # 503s before the CDN serves
        self.failures: list[Failure] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> FakeGitHub:
        self.api.expect_request(re.compile(".*")).respond_with_handler(self._api)
        self.cdn.expect_request(re.compile(".*")).respond_with_handler(self._cdn)
        self.api.start()
        self.cdn.start()
        return self

    def stop(self) -> None:
        for server in (self.api, self.cdn):
            if server.is_running():
                server.clear()
                server.stop()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api.port}"

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    # -- fixtures ------------------------------------------------------------
    def add_release(
        self, release_id: int, tag: str, *, prerelease: bool = False, body: str = ""
    ) -> FakeRelease:
        release = FakeRelease(release_id, tag, prerelease=prerelease, body=body)
        self.releases[release_id] = release
        self.refs.add(tag)
        return release

    def add_asset(
        self, release: FakeRelease, name: str, data: bytes, *, delay_s: float = 0.0, **kw: Any
    ) -> FakeAsset:
        asset = FakeAsset(
            id=1000 + sum(len(r.assets) for r in self.releases.values()),
            name=name,
            data=data,
            visible_after=time.monotonic() + delay_s,
            **kw,
        )
        release.assets.append(asset)
        return asset

    def add_pull_request(
        self,
        number: int,
        *,
        head_sha: str = SHA,
        head_repo: str | None = "",
        state: str = "open",
        files: Iterable[str] = (),
    ) -> FakePull:
        """A pull request (also an issue); ``head_repo`` "" means this repository, None a
        deleted fork."""
        self.issues[number] = True
        pull = FakePull(
            number,
            head_sha,
            self.full_name if head_repo == "" else head_repo,
            state,
            list(files),
        )
        self.pulls[number] = pull
        self.refs.add(head_sha)
        return pull

    def add_tree(self, ref: str, directory: Path) -> None:
        """Serve ``directory`` as the repository's tree at ``ref`` (contents API)."""
        self.trees[ref] = directory
        self.refs.add(ref)

    def add_branch(self, name: str, files: dict[str, bytes | str]) -> str:
        """A branch whose head commit holds ``files``; returns the commit sha."""
        commit = self._commit(
            {k: v.encode() if isinstance(v, str) else v for k, v in files.items()},
            [],
            f"the tree of {name}",
        )
        self.branches[name] = commit.sha
        self.refs.add(name)
        return commit.sha

    def file_at(self, branch: str, path: str) -> bytes | None:
        return self.commits[self.branches[branch]].files.get(path)

    def log(self, branch: str) -> list[FakeCommit]:
        """The branch's commits, newest first (first parents)."""
        found, sha = [], self.branches.get(branch)
        while sha:
            commit = self.commits[sha]
            found.append(commit)
            sha = commit.parents[0] if commit.parents else None
        return found

    def _commit(self, files: dict[str, bytes], parents: list[str], message: str) -> FakeCommit:
        seed = f"{next(self._ids)}:{parents}:{message}".encode()
        commit = FakeCommit(hashlib.sha1(seed).hexdigest(), files, parents, message)  # noqa: S324
        self.commits[commit.sha] = commit
        self.refs.add(commit.sha)
        return commit

    def reactions(self, comment_id: int) -> list[str]:
        return list(self.comments[comment_id].reactions)

    def fail(
        self,
        method: str,
        path: str,
        status: int,
        *,
        times: int = 1,
        body: Any = None,
        after: bool = False,
    ) -> None:
        """Answer the next ``times`` requests matching ``method`` and the ``path`` regex
        (under /repos/OWNER/REPO) with ``status`` and GitHub's error body for it.
        ``after``: carry the request out first (the response is lost, not the work)."""
        self.failures.append(Failure(method, re.compile(path), status, times, body, after))

    def deployments_to(self, environment: str) -> list[FakeDeployment]:
        return [d for d in self.deployments.values() if d.environment == environment]

    def states(self, deployment: FakeDeployment) -> list[str]:
        return [s.state for s in deployment.statuses]

    # -- shapes --------------------------------------------------------------
    def _repo_url(self) -> str:
        return f"{self.api_url}/repos/{self.owner}/{self.repo}"

    def _asset_json(self, asset: FakeAsset) -> dict[str, Any]:
        digest = asset.digest_override or f"sha256:{hashlib.sha256(asset.data).hexdigest()}"
        return {
            "url": f"{self._repo_url()}/releases/assets/{asset.id}",
            "browser_download_url": f"https://github.com/{self.owner}/{self.repo}/releases/"
            f"download/v/{asset.name}",
            "id": asset.id,
            "node_id": f"RA_{asset.id}",
            "name": asset.name,
            "label": "",
            "state": asset.state_until_uploaded,
            "content_type": "application/gzip",
            "size": len(asset.data),
            "digest": digest if asset.advertise_digest else None,
            "download_count": 0,
            "created_at": "2026-11-01T00:00:00Z",
            "updated_at": "2026-11-01T00:00:00Z",
            "uploader": _user(),
        }

    def _visible_assets(self, release: FakeRelease) -> list[FakeAsset]:
        now = time.monotonic()
        return [a for a in release.assets if a.visible_after <= now]

    def _release_json(self, release: FakeRelease) -> dict[str, Any]:
        url = f"{self._repo_url()}/releases/{release.id}"
        return {
            "url": url,
            "assets_url": f"{url}/assets",
            "upload_url": f"https://uploads.github.com/repos/{self.owner}/{self.repo}/releases/"
            f"{release.id}/assets{{?name,label}}",
            "html_url": f"https://github.com/{self.owner}/{self.repo}/releases/tag/{release.tag}",
            "id": release.id,
            "node_id": f"RE_{release.id}",
            "tag_name": release.tag,
            "target_commitish": "main",
            "name": release.tag,
            "body": release.body,
            "draft": release.draft,
            "prerelease": release.prerelease,
            "immutable": False,
            "created_at": "2026-11-01T00:00:00Z",
            "published_at": "2026-11-01T00:00:00Z",
            "author": _user(),
            "tarball_url": f"{self._repo_url()}/tarball/{release.tag}",
            "zipball_url": f"{self._repo_url()}/zipball/{release.tag}",
            "assets": [self._asset_json(a) for a in self._visible_assets(release)],
        }

    def _deployment_json(self, d: FakeDeployment) -> dict[str, Any]:
        url = f"{self._repo_url()}/deployments/{d.id}"
        return {
            "url": url,
            "id": d.id,
            "node_id": f"DE_{d.id}",
            "sha": d.sha,
            "ref": d.ref,
            "task": d.task,
            "payload": d.payload,
            "original_environment": d.environment,
            "environment": d.environment,
            "description": d.description,
            "creator": _user("github-actions[bot]"),
            "created_at": "2026-11-01T00:00:00Z",
            "updated_at": "2026-11-01T00:00:00Z",
            "statuses_url": f"{url}/statuses",
            "repository_url": self._repo_url(),
            "transient_environment": d.transient,
            "production_environment": d.production,
        }

    def _status_json(self, d: FakeDeployment, s: FakeStatus) -> dict[str, Any]:
        return {
            "url": f"{self._repo_url()}/deployments/{d.id}/statuses/{s.id}",
            "id": s.id,
            "node_id": f"DES_{s.id}",
            "state": s.state,
            "creator": _user("github-actions[bot]"),
            "description": s.description,
            "environment": d.environment,
            "target_url": s.log_url,
            "log_url": s.log_url,
            "environment_url": s.environment_url,
            "created_at": s.created_at,
            "updated_at": s.created_at,
            "deployment_url": f"{self._repo_url()}/deployments/{d.id}",
            "repository_url": self._repo_url(),
        }

    def _comment_json(self, c: FakeComment) -> dict[str, Any]:
        return {
            "id": c.id,
            "node_id": f"IC_{c.id}",
            "url": f"{self._repo_url()}/issues/comments/{c.id}",
            "html_url": f"https://github.com/{self.full_name}/pull/{c.issue}#issuecomment-{c.id}",
            "body": c.body,
            "user": _user(c.user),
            "created_at": "2026-11-01T00:00:00Z",
            "updated_at": "2026-11-01T00:00:00Z",
            "issue_url": f"{self._repo_url()}/issues/{c.issue}",
            "author_association": "MEMBER",
        }

    @staticmethod
    def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(
            json.dumps(body),
            status=status,
            headers=headers or {},
            content_type="application/json; charset=utf-8",
        )

    def _not_found(self) -> Response:
        return self._json({"message": "Not Found", "documentation_url": DOCS, "status": "404"}, 404)

    def _forbidden(self, accepted: str = "deployments=write") -> Response:
        return self._json(
            {
                "message": "Resource not accessible by integration",
                "documentation_url": DOCS,
                "status": "403",
            },
            403,
            {"x-accepted-github-permissions": accepted},
        )

    def _invalid(self, message: str, field_name: str = "") -> Response:
        return self._json(
            {
                "message": message,
                "errors": [{"resource": "Deployment", "code": "custom", "field": field_name}]
                if field_name
                else [],
                "documentation_url": DOCS,
                "status": "422",
            },
            422,
        )

    def _error_body(self, status: int) -> Any:
        return {
            403: {"message": "Resource not accessible by integration", "status": "403"},
            404: {"message": "Not Found", "status": "404"},
            422: {"message": "Validation Failed", "errors": [], "status": "422"},
        }.get(status, {"message": "Server Error"})

    # -- handlers ------------------------------------------------------------
    def _api(self, request: Request) -> Response:
        with self._lock:
            self.api_requests.append(f"{request.method} {request.full_path.rstrip('?')}")
            return self._dispatch(request)

    def _dispatch(self, request: Request) -> Response:
        if self.rate_limited_until is not None and time.time() < self.rate_limited_until:
            return self._json(
                {
                    "message": "API rate limit exceeded for 127.0.0.1. (But here's the good news: "
                    "Authenticated requests get a higher rate limit.)",
                    "documentation_url": "https://docs.github.com/rest/overview/rate-limits",
                },
                403,
                {
                    "x-ratelimit-limit": "60",
                    "x-ratelimit-remaining": "0",
                    "x-ratelimit-used": "60",
                    "x-ratelimit-resource": "core",
                    "x-ratelimit-reset": str(int(self.rate_limited_until)),
                },
            )
        if self.token is not None:
            auth = request.headers.get("Authorization", "")
            if auth not in (f"token {self.token}", f"Bearer {self.token}"):
                return self._json(
                    {"message": "Bad credentials", "documentation_url": DOCS, "status": "401"},
                    401,
                )
        prefix = f"/repos/{self.owner}/{self.repo}"
        if not request.path.startswith(prefix):
            return self._not_found()
        rest = request.path[len(prefix) :] or "/"
        failure = next(
            (
                f
                for f in self.failures
                if f.times > 0 and f.method == request.method and f.path.fullmatch(rest)
            ),
            None,
        )
        if failure is not None:
            failure.times -= 1
            if failure.after:
                self._route(request, rest)
            body = failure.body if failure.body is not None else self._error_body(failure.status)
            return self._json(body, failure.status)
        return self._route(request, rest)

    def _route(self, request: Request, rest: str) -> Response:
        for method, pattern, handler in self._routes():
            if method == request.method and (match := re.fullmatch(pattern, rest)):
                response: Response = handler(request, *match.groups())
                return response
        return self._not_found()

    def _routes(self) -> list[tuple[str, str, Callable[..., Response]]]:
        return [
            ("GET", r"/", lambda r: self._json(self._repo_json(self.full_name))),
            ("GET", r"/git/ref/heads/(.+)", self._get_branch_ref),
            ("POST", r"/git/refs", self._create_ref),
            ("PUT", r"/contents/(.+)", self._put_contents),
            ("GET", r"/pulls", self._list_pulls),
            ("POST", r"/pulls", self._create_pull),
            ("PATCH", r"/pulls/(\d+)", self._edit_pull),
            ("GET", r"/releases/tags/(.+)", self._release_by_tag),
            ("GET", r"/releases/(\d+)", self._release_by_id),
            ("PATCH", r"/releases/(\d+)", self._update_release),
            ("GET", r"/releases/(\d+)/assets", self._assets),
            ("GET", r"/releases/assets/(\d+)", self._asset),
            ("POST", r"/deployments", self._create_deployment),
            ("GET", r"/deployments", self._list_deployments),
            ("GET", r"/deployments/(\d+)", self._get_deployment),
            ("POST", r"/deployments/(\d+)/statuses", self._create_status),
            ("GET", r"/deployments/(\d+)/statuses", self._list_statuses),
            ("GET", r"/issues/(\d+)", self._issue),
            ("GET", r"/issues/(\d+)/comments", self._list_comments),
            ("POST", r"/issues/(\d+)/comments", self._create_comment),
            ("GET", r"/issues/comments/(\d+)", self._get_comment),
            ("PATCH", r"/issues/comments/(\d+)", self._edit_comment),
            ("POST", r"/issues/comments/(\d+)/reactions", self._react),
            ("GET", r"/collaborators/([^/]+)/permission", self._permission),
            ("GET", r"/pulls/(\d+)", self._pull),
            ("GET", r"/pulls/(\d+)/files", self._pull_files),
            ("GET", r"/contents/(.*)", self._contents),
            ("GET", r"/releases", self._list_releases),
            ("POST", r"/check-runs", self._create_check_run),
            ("PATCH", r"/check-runs/(\d+)", self._update_check_run),
            ("GET", r"/check-runs/(\d+)", self._get_check_run),
        ]

    def _may(self, scope: str, level: str) -> bool:
        granted = self.token_permissions.get(scope, "none")
        return granted == "write" or (level == "read" and granted == "read")

    # releases
    def _release_by_tag(self, request: Request, tag: str) -> Response:
        for release in self.releases.values():
            if release.tag == tag:
                return self._json(self._release_json(release))
        return self._not_found()

    def _release_by_id(self, request: Request, release_id: str) -> Response:
        release = self.releases.get(int(release_id))
        return self._json(self._release_json(release)) if release else self._not_found()

    def _update_release(self, request: Request, release_id: str) -> Response:
        release = self.releases.get(int(release_id))
        if release is None:
            return self._not_found()
        if not self._may("contents", "write"):
            return self._forbidden()
        data = request.get_json()
        if "body" in data:
            release.body = str(data["body"])
        if "prerelease" in data:
            release.prerelease = bool(data["prerelease"])
        return self._json(self._release_json(release))

    def _assets(self, request: Request, release_id: str) -> Response:
        release = self.releases.get(int(release_id))
        if not release:
            return self._not_found()
        return self._json([self._asset_json(a) for a in self._visible_assets(release)])

    def _asset(self, request: Request, asset_id: str) -> Response:
        asset = self._find_asset(int(asset_id))
        if asset is None:
            return self._not_found()
        if request.headers.get("Accept") != "application/octet-stream":
            return self._json(self._asset_json(asset))
        location = f"http://localhost:{self.cdn.port}/download/{asset.id}?sig=abc"
        return Response("", status=302, headers={"Location": location})

    # deployments
    def _create_deployment(self, request: Request) -> Response:
        if not self._may("deployments", "write"):
            return self._forbidden()
        data = request.get_json()
        ref = str(data.get("ref", ""))
        if ref not in self.refs and not ref.startswith(SHA):
            return self._invalid(f"No ref found for: {ref}", "ref")
        if data.get("auto_merge", True) is not False:
            # GitHub would try to merge the default branch in (409 when it conflicts):
            # the pipeline must always send auto_merge: false.
            return self._json({"message": "auto_merge must be false in this fake"}, 409)
        description = str(data.get("description") or "")
        if len(description) > 140:
            return self._invalid("description is too long (maximum is 140 characters)")
        environment = str(data.get("environment") or "production")
        deployment = FakeDeployment(
            id=next(self._ids),
            ref=ref,
            sha=SHA,
            task=str(data.get("task") or "deploy"),
            payload=data.get("payload") or {},
            environment=environment,
            description=description,
            transient=bool(data.get("transient_environment", False)),
            production=bool(data.get("production_environment", environment == "production")),
        )
        self.deployments[deployment.id] = deployment
        return self._json(self._deployment_json(deployment), 201)

    def _list_deployments(self, request: Request) -> Response:
        if not self._may("deployments", "read"):
            return self._forbidden()
        args = request.args
        found = [
            d
            for d in sorted(self.deployments.values(), key=lambda d: -d.id)
            if all(
                not args.get(key) or getattr(d, key) == args.get(key)
                for key in ("environment", "task", "ref", "sha")
            )
        ]
        return self._json([self._deployment_json(d) for d in found])

    def _get_deployment(self, request: Request, deployment_id: str) -> Response:
        deployment = self.deployments.get(int(deployment_id))
        return self._json(self._deployment_json(deployment)) if deployment else self._not_found()

    def _create_status(self, request: Request, deployment_id: str) -> Response:
        deployment = self.deployments.get(int(deployment_id))
        if deployment is None:
            return self._not_found()
        if not self._may("deployments", "write"):
            return self._forbidden()
        data = request.get_json()
        state = str(data.get("state"))
        if state not in STATUS_STATES:
            return self._invalid(f"state is not included in the list: {state}", "state")
        description = str(data.get("description") or "")
        if len(description) > 140:
            return self._invalid("description is too long (maximum is 140 characters)")
        log_url = str(data.get("log_url") or data.get("target_url") or "")
        status = FakeStatus(
            id=next(self._ids),
            state=state,
            description=description,
            log_url=log_url,
            environment_url=str(data.get("environment_url") or ""),
            created_at=_now(),
        )
        deployment.statuses.append(status)
        if state == "success" and data.get("auto_inactive", True):
            for other in self.deployments.values():
                if (
                    other.id != deployment.id
                    and other.environment == deployment.environment
                    and not other.transient
                    and not other.production
                    and other.statuses
                    and other.statuses[-1].state == "success"
                ):
                    other.statuses.append(
                        FakeStatus(next(self._ids), "inactive", "", "", "", _now())
                    )
        return self._json(self._status_json(deployment, status), 201)

    def _list_statuses(self, request: Request, deployment_id: str) -> Response:
        deployment = self.deployments.get(int(deployment_id))
        if deployment is None:
            return self._not_found()
        return self._json([self._status_json(deployment, s) for s in reversed(deployment.statuses)])

    # issues and comments
    def _issue(self, request: Request, number: str) -> Response:
        if int(number) not in self.issues:
            return self._not_found()
        data: dict[str, Any] = {
            "id": int(number),
            "number": int(number),
            "title": f"#{number}",
            "state": "open",
            "user": _user(),
            "comments_url": f"{self._repo_url()}/issues/{number}/comments",
            "url": f"{self._repo_url()}/issues/{number}",
        }
        if self.issues[int(number)]:
            data["pull_request"] = {"url": f"{self._repo_url()}/pulls/{number}"}
        return self._json(data)

    def _list_comments(self, request: Request, number: str) -> Response:
        return self._json(
            [self._comment_json(c) for c in self.comments.values() if c.issue == int(number)]
        )

    def _create_comment(self, request: Request, number: str) -> Response:
        if int(number) not in self.issues:
            return self._not_found()
        if not (self._may("issues", "write") or self._may("pull_requests", "write")):
            return self._forbidden()
        body = str(request.get_json().get("body", ""))
        if len(body) > 65536:
            return self._invalid("Body is too long (maximum is 65536 characters)", "body")
        comment = FakeComment(next(self._ids), int(number), body, "github-actions[bot]")
        self.comments[comment.id] = comment
        return self._json(self._comment_json(comment), 201)

    def _edit_comment(self, request: Request, comment_id: str) -> Response:
        comment = self.comments.get(int(comment_id))
        if comment is None:
            return self._not_found()
        body = str(request.get_json().get("body", ""))
        if len(body) > 65536:
            return self._invalid("Body is too long (maximum is 65536 characters)", "body")
        comment.body = body
        return self._json(self._comment_json(comment))

    def _react(self, request: Request, comment_id: str) -> Response:
        comment = self.comments.get(int(comment_id))
        if comment is None:
            return self._not_found()
        content = str(request.get_json().get("content"))
        if content not in REACTIONS:
            return self._invalid(f"content is not included in the list: {content}", "content")
        existed = content in comment.reactions
        if not existed:
            comment.reactions.append(content)
        body = {"id": next(self._ids), "content": content, "user": _user("github-actions[bot]")}
        return self._json(body, 200 if existed else 201)

    def _permission(self, request: Request, user: str) -> Response:
        if user not in self.collaborators:
            return self._json({"message": f"{user} is not a user", "status": "404"}, 404)
        permission = self.collaborators[user]
        legacy = {"maintain": "write", "triage": "read"}.get(permission, permission)
        return self._json({"permission": legacy, "role_name": permission, "user": _user(user)})

    def _get_comment(self, request: Request, comment_id: str) -> Response:
        comment = self.comments.get(int(comment_id))
        return self._json(self._comment_json(comment)) if comment else self._not_found()

    # pull requests
    def _repo_json(self, full_name: str) -> dict[str, Any]:
        owner, name = full_name.split("/", 1)
        return {
            "id": abs(hash(full_name)) % 10**9,
            "node_id": "R_kgDOMGp7Tg",
            "name": name,
            "full_name": full_name,
            "private": False,
            "owner": _user(owner) | {"type": "Organization" if owner == self.owner else "User"},
            "html_url": f"https://github.com/{full_name}",
            "fork": full_name != self.full_name,
            "url": f"{self.api_url}/repos/{full_name}",
            "default_branch": self.default_branch,
            "permissions": {"admin": False, "maintain": False, "push": True, "pull": True},
        }

    def _pull_json(self, pull: FakePull) -> dict[str, Any]:
        url = f"{self._repo_url()}/pulls/{pull.number}"
        head_owner = (pull.head_repo or "ghost/deleted").split("/")[0]
        return {
            "url": url,
            "id": 1_900_000_000 + pull.number,
            "node_id": f"PR_{pull.number}",
            "html_url": f"https://github.com/{self.full_name}/pull/{pull.number}",
            "diff_url": f"https://github.com/{self.full_name}/pull/{pull.number}.diff",
            "issue_url": f"{self._repo_url()}/issues/{pull.number}",
            "number": pull.number,
            "state": pull.state,
            "locked": False,
            "title": pull.title or f"#{pull.number}",
            "user": _user(head_owner),
            "body": pull.body,
            "created_at": "2026-11-30T10:00:00Z",
            "updated_at": "2026-12-01T09:00:00Z",
            "closed_at": None if pull.state == "open" else "2026-12-01T09:00:00Z",
            "merged_at": None,
            "merge_commit_sha": None,
            "draft": False,
            "head": {
                "label": f"{head_owner}:{pull.head_ref}",
                "ref": pull.head_ref,
                "sha": self.branches.get(pull.head_ref, pull.head_sha)
                if pull.head_repo == self.full_name
                else pull.head_sha,
                "user": _user(head_owner),
                "repo": self._repo_json(pull.head_repo) if pull.head_repo else None,
            },
            "base": {
                "label": f"{self.owner}:{pull.base_ref}",
                "ref": pull.base_ref,
                "sha": self.branches.get(pull.base_ref, SHA),
                "user": _user(self.owner),
                "repo": self._repo_json(self.full_name),
            },
            "author_association": "CONTRIBUTOR",
            "commits_url": f"{url}/commits",
            "statuses_url": f"{self._repo_url()}/statuses/{pull.head_sha}",
        }

    def _pull(self, request: Request, number: str) -> Response:
        if not self._may("pull_requests", "read"):
            return self._forbidden("pull_requests=read")
        pull = self.pulls.get(int(number))
        return self._json(self._pull_json(pull)) if pull else self._not_found()

    def _pull_files(self, request: Request, number: str) -> Response:
        pull = self.pulls.get(int(number))
        if pull is None:
            return self._not_found()
        per_page = min(int(request.args.get("per_page", 30)), 100)
        page = int(request.args.get("page", 1))
        chosen = pull.files[(page - 1) * per_page : page * per_page]
        return self._json(
            [
                {
                    "sha": hashlib.sha1(name.encode()).hexdigest(),  # noqa: S324 - a fake blob id
                    "filename": name,
                    "status": "modified",
                    "additions": 1,
                    "deletions": 0,
                    "changes": 1,
                    "blob_url": f"https://github.com/{self.full_name}/blob/{pull.head_sha}/{name}",
                    "raw_url": f"https://github.com/{self.full_name}/raw/{pull.head_sha}/{name}",
                    "contents_url": f"{self._repo_url()}/contents/{name}?ref={pull.head_sha}",
                    "patch": "@@ -1 +1 @@",
                }
                for name in chosen
            ]
        )

    # trees
    def _content_entry(self, ref: str, path: str, item: Path) -> dict[str, Any]:
        kind = "dir" if item.is_dir() else "file"
        url = f"{self._repo_url()}/contents/{path}?ref={ref}"
        return {
            "type": kind,
            "name": item.name,
            "path": path,
            "sha": hashlib.sha1(path.encode()).hexdigest(),  # noqa: S324 - a fake blob id
            "size": 0 if kind == "dir" else item.stat().st_size,
            "url": url,
            "html_url": f"https://github.com/{self.full_name}/tree/{ref}/{path}",
            "git_url": f"{self._repo_url()}/git/trees/{ref}",
            "download_url": None
            if kind == "dir"
            else f"https://raw.githubusercontent.com/{self.full_name}/{ref}/{path}",
            "_links": {"self": url, "git": f"{self._repo_url()}/git/trees/{ref}", "html": ""},
        }

    def _contents(self, request: Request, path: str) -> Response:
        if not self._may("contents", "read"):
            return self._forbidden("contents=read")
        ref = request.args.get("ref") or self.default_branch
        root = self.trees.get(ref)
        if root is None and (ref in self.branches or ref in self.commits):
            return self._git_contents(ref, path.strip("/"))
        if root is None:
            return self._json(
                {"message": f"No commit found for the ref {ref}", "status": "404"}, 404
            )
        path = path.strip("/")
        target = (root / path).resolve() if path else root.resolve()
        if root.resolve() not in (target, *target.parents) or not target.exists():
            return self._not_found()
        if target.is_dir():
            return self._json(
                [
                    self._content_entry(ref, f"{path}/{item.name}".lstrip("/"), item)
                    for item in sorted(target.iterdir())
                ]
            )
        entry = self._content_entry(ref, path, target)
        entry["encoding"] = "base64"
        entry["content"] = base64.b64encode(target.read_bytes()).decode()
        return self._json(entry)

    # git data and file commits (the in-memory git)
    def _ref_json(self, branch: str) -> dict[str, Any]:
        sha = self.branches[branch]
        return {
            "ref": f"refs/heads/{branch}",
            "node_id": f"REF_{branch}",
            "url": f"{self._repo_url()}/git/refs/heads/{branch}",
            "object": {
                "type": "commit",
                "sha": sha,
                "url": f"{self._repo_url()}/git/commits/{sha}",
            },
        }

    def _get_branch_ref(self, request: Request, branch: str) -> Response:
        if not self._may("contents", "read"):
            return self._forbidden("contents=read")
        if branch not in self.branches:
            return self._json(
                {"message": "Not Found", "documentation_url": DOCS, "status": "404"}, 404
            )
        return self._json(self._ref_json(branch))

    def _create_ref(self, request: Request) -> Response:
        if not self._may("contents", "write"):
            return self._forbidden("contents=write")
        data = request.get_json()
        ref, sha = str(data.get("ref", "")), str(data.get("sha", ""))
        if not ref.startswith("refs/") or ref.count("/") < 2:
            return self._json({"message": f"{ref} is not a valid ref name.", "status": "422"}, 422)
        if sha not in self.commits:
            return self._json({"message": "Object does not exist", "status": "422"}, 422)
        branch = ref.removeprefix("refs/heads/")
        if branch in self.branches:
            return self._json(
                {"message": "Reference already exists", "documentation_url": DOCS, "status": "422"},
                422,
            )
        self.branches[branch] = sha
        self.refs.add(branch)
        return self._json(self._ref_json(branch), 201)

    def _file_json(self, ref: str, path: str, data: bytes) -> dict[str, Any]:
        url = f"{self._repo_url()}/contents/{path}?ref={ref}"
        sha = blob_sha(data)
        return {
            "type": "file",
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "sha": sha,
            "size": len(data),
            "url": url,
            "html_url": f"https://github.com/{self.full_name}/blob/{ref}/{path}",
            "git_url": f"{self._repo_url()}/git/blobs/{sha}",
            "download_url": f"https://raw.githubusercontent.com/{self.full_name}/{ref}/{path}",
            "_links": {"self": url, "git": f"{self._repo_url()}/git/blobs/{sha}", "html": ""},
        }

    def _git_contents(self, ref: str, path: str) -> Response:
        commit = self.commits[self.branches.get(ref, ref)]
        if path in commit.files:
            entry = self._file_json(ref, path, commit.files[path])
            entry["encoding"] = "base64"
            entry["content"] = base64.encodebytes(commit.files[path]).decode()  # GitHub wraps
            return self._json(entry)
        return self._not_found()  # directories: served from add_tree() trees only

    def _put_contents(self, request: Request, path: str) -> Response:
        if not self._may("contents", "write"):
            return self._forbidden("contents=write")
        data = request.get_json()
        branch = str(data.get("branch") or self.default_branch)
        if branch not in self.branches:  # GitHub checks the branch first
            return self._json(
                {
                    "message": f"Branch {branch} not found",
                    "documentation_url": DOCS,
                    "status": "404",
                },
                404,
            )
        head = self.commits[self.branches[branch]]
        existing = head.files.get(path)
        if existing is not None:
            if not data.get("sha"):
                return self._json(
                    {"message": 'Invalid request.\n\n"sha" wasn\'t supplied.', "status": "422"},
                    422,
                )
            if data["sha"] != blob_sha(existing):
                return self._json(
                    {"message": f"{path} does not match {data['sha']}", "status": "409"}, 409
                )
        content = base64.b64decode(str(data.get("content", "")))
        commit = self._commit(
            {**head.files, path: content}, [head.sha], str(data.get("message") or "")
        )
        self.branches[branch] = commit.sha
        sha = commit.sha
        body = {
            "content": self._file_json(branch, path, content),
            "commit": {
                "sha": sha,
                "node_id": f"C_{sha[:12]}",
                "url": f"{self._repo_url()}/git/commits/{sha}",
                "html_url": f"https://github.com/{self.full_name}/commit/{sha}",
                "author": {
                    "name": "github-actions[bot]",
                    "email": "41898282+github-actions[bot]@users.noreply.github.com",
                    "date": _now(),
                },
                "committer": {
                    "name": "github-actions[bot]",
                    "email": "41898282+github-actions[bot]@users.noreply.github.com",
                    "date": _now(),
                },
                "message": commit.message,
                "tree": {"url": f"{self._repo_url()}/git/trees/{sha}", "sha": sha},
                "parents": [
                    {
                        "url": f"{self._repo_url()}/git/commits/{head.sha}",
                        "html_url": f"https://github.com/{self.full_name}/commit/{head.sha}",
                        "sha": head.sha,
                    }
                ],
                "verification": {
                    "verified": False,
                    "reason": "unsigned",
                    "signature": None,
                    "payload": None,
                    "verified_at": None,
                },
            },
        }
        return self._json(body, 200 if existing is not None else 201)

    # pull requests, created
    def _list_pulls(self, request: Request) -> Response:
        if not self._may("pull_requests", "read"):
            return self._forbidden("pull_requests=read")
        state = request.args.get("state", "open")
        head, base = request.args.get("head"), request.args.get("base")
        found = [
            pull
            for pull in sorted(self.pulls.values(), key=lambda p: -p.number)
            if state in ("all", pull.state)
            and (not base or pull.base_ref == base)
            and (not head or self._head_label(pull) == head)
        ]
        return self._json([self._pull_json(pull) for pull in found])

    @staticmethod
    def _head_label(pull: FakePull) -> str:
        owner = (pull.head_repo or "ghost/deleted").split("/")[0]
        return f"{owner}:{pull.head_ref}"

    def _invalid_pull(self, message: str) -> Response:
        return self._json(
            {
                "message": "Validation Failed",
                "errors": [{"resource": "PullRequest", "code": "custom", "message": message}],
                "documentation_url": DOCS,
                "status": "422",
            },
            422,
        )

    def _create_pull(self, request: Request) -> Response:
        if not self._may("pull_requests", "write"):
            return self._forbidden("pull_requests=write")
        if not self.actions_may_create_pulls:
            return self._json(
                {
                    "message": "GitHub Actions is not permitted to create or approve pull "
                    "requests.",
                    "documentation_url": DOCS,
                    "status": "403",
                },
                403,
            )
        data = request.get_json()
        head, base = str(data.get("head", "")), str(data.get("base", ""))
        branch = head.split(":", 1)[-1]
        if branch not in self.branches or base not in self.branches:
            return self._json(
                {
                    "message": "Validation Failed",
                    "errors": [
                        {
                            "resource": "PullRequest",
                            "field": "head" if branch not in self.branches else "base",
                            "code": "invalid",
                        }
                    ],
                    "status": "422",
                },
                422,
            )
        label = f"{self.owner}:{branch}"
        if any(
            p.state == "open" and p.head_ref == branch and p.base_ref == base
            for p in self.pulls.values()
        ):
            return self._invalid_pull(f"A pull request already exists for {label}.")
        if self.branches[branch] == self.branches[base]:
            return self._invalid_pull(f"No commits between {base} and {branch}")
        number = max([*self.pulls, *self.issues, 0]) + 1
        pull = FakePull(
            number,
            self.branches[branch],
            self.full_name,
            head_ref=branch,
            title=str(data.get("title") or ""),
            body=str(data.get("body") or ""),
            base_ref=base,
        )
        self.pulls[number] = pull
        self.issues[number] = True
        return self._json(self._pull_json(pull), 201)

    def _edit_pull(self, request: Request, number: str) -> Response:
        pull = self.pulls.get(int(number))
        if pull is None:
            return self._not_found()
        if not self._may("pull_requests", "write"):
            return self._forbidden("pull_requests=write")
        data = request.get_json()
        if "title" in data:
            pull.title = str(data["title"])
        if "body" in data:
            pull.body = str(data["body"] or "")
        if data.get("state") in ("open", "closed"):
            pull.state = str(data["state"])
        return self._json(self._pull_json(pull))

    def _list_releases(self, request: Request) -> Response:
        if not self._may("contents", "read"):
            return self._forbidden("contents=read")
        newest = sorted(self.releases.values(), key=lambda r: -r.id)
        return self._json([self._release_json(r) for r in newest])

    # check runs
    def _check_run_json(self, run: FakeCheckRun) -> dict[str, Any]:
        url = f"{self._repo_url()}/check-runs/{run.id}"
        return {
            "id": run.id,
            "node_id": f"CR_{run.id}",
            "head_sha": run.head_sha,
            "external_id": run.external_id,
            "url": url,
            "html_url": f"https://github.com/{self.full_name}/runs/{run.id}",
            "details_url": run.details_url or f"https://github.com/{self.full_name}/runs/{run.id}",
            "status": run.status,
            "conclusion": run.conclusion,
            "started_at": run.started_at,
            "completed_at": run.completed_at,
            "output": {
                "title": run.output.get("title"),
                "summary": run.output.get("summary"),
                "text": run.output.get("text"),
                "annotations_count": 0,
                "annotations_url": f"{url}/annotations",
            },
            "name": run.name,
            "check_suite": {"id": 5_000_000 + run.id},
            "app": {"id": 15368, "slug": "github-actions", "name": "GitHub Actions"},
            "pull_requests": [],
        }

    def _check_problem(self, data: dict[str, Any], status: str, conclusion: Any) -> str | None:
        if status not in CHECK_STATUSES:
            return f"status is not included in the list: {status}"
        if conclusion is not None and conclusion not in CHECK_CONCLUSIONS:
            return f"conclusion is not included in the list: {conclusion}"
        if status == "completed" and conclusion is None:
            return "conclusion can't be blank when status is completed"
        output = data.get("output")
        if output is not None:
            if not output.get("title") or output.get("summary") is None:
                return "output must have a title and a summary"
            for key in ("summary", "text"):
                size = len(str(output.get(key) or "").encode("utf-8"))
                if size > CHECK_TEXT_LIMIT:
                    return (
                        f"Invalid request.\n\nOnly {CHECK_TEXT_LIMIT} characters are allowed; "
                        f"{size} were supplied ({key})."
                    )
        return None

    def _create_check_run(self, request: Request) -> Response:
        if not self._may("checks", "write"):
            return self._forbidden("checks=write")
        data = request.get_json()
        name, head_sha = data.get("name"), str(data.get("head_sha") or "")
        if not name:
            return self._invalid("name wasn't supplied.", "name")
        if head_sha not in self.refs:
            return self._invalid(f"No commit found for SHA: {head_sha}", "head_sha")
        conclusion = data.get("conclusion")
        status = str(data.get("status") or ("completed" if conclusion else "queued"))
        problem = self._check_problem(data, status, conclusion)
        if problem:
            return self._invalid(problem)
        run = FakeCheckRun(
            id=next(self._ids),
            name=str(name),
            head_sha=head_sha,
            status=status,
            conclusion=conclusion,
            output=dict(data.get("output") or {}),
            details_url=str(data.get("details_url") or ""),
            external_id=str(data.get("external_id") or ""),
            started_at=str(data.get("started_at") or _now()),
            completed_at=_now() if status == "completed" else None,
        )
        run.history.append((run.status, run.conclusion, str(run.output.get("title", ""))))
        self.check_runs[run.id] = run
        return self._json(self._check_run_json(run), 201)

    def _update_check_run(self, request: Request, run_id: str) -> Response:
        run = self.check_runs.get(int(run_id))
        if run is None:
            return self._not_found()
        if not self._may("checks", "write"):
            return self._forbidden("checks=write")
        data = request.get_json()
        conclusion = data.get("conclusion", run.conclusion)
        status = "completed" if "conclusion" in data else str(data.get("status", run.status))
        problem = self._check_problem(data, status, conclusion)
        if problem:
            return self._invalid(problem)
        run.status, run.conclusion = status, conclusion
        if "output" in data:
            run.output = dict(data["output"])
        if status == "completed":
            run.completed_at = str(data.get("completed_at") or _now())
        run.history.append((run.status, run.conclusion, str(run.output.get("title", ""))))
        return self._json(self._check_run_json(run))

    def _get_check_run(self, request: Request, run_id: str) -> Response:
        run = self.check_runs.get(int(run_id))
        return self._json(self._check_run_json(run)) if run else self._not_found()

    def _find_asset(self, asset_id: int) -> FakeAsset | None:
        for release in self.releases.values():
            for asset in self._visible_assets(release):
                if asset.id == asset_id:
                    return asset
        return None

    def add_comment(self, issue: int, body: str, user: str) -> FakeComment:
        comment = FakeComment(next(self._ids), issue, body, user)
        self.comments[comment.id] = comment
        return comment

    def _cdn(self, request: Request) -> Response:
        with self._lock:
            self.cdn_auth_headers.append(request.headers.get("Authorization"))
            if self.cdn_failures_remaining > 0:
                self.cdn_failures_remaining -= 1
                return Response("busy", status=503, headers={"Retry-After": "0"})
        match = re.fullmatch(r"/download/(\d+)", request.path)
        asset = self._find_asset(int(match[1])) if match else None
        if asset is None:
            return Response("<Error><Code>NoSuchKey</Code></Error>", status=404)
        return Response(asset.data, status=200, content_type="application/octet-stream")
