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
  ``PATCH /issues/comments/{id}``, ``POST /issues/comments/{id}/reactions``
  (201 new, 200 when the same reaction exists), and
  ``GET /collaborators/{user}/permission`` (404 for a non-collaborator);
* failures: 404 ``{"message": "Not Found", ...}``, 401 ``Bad credentials``, 403
  ``Resource not accessible by integration`` when the token lacks the permission
  (``token_permissions``), the 403 primary rate limit with ``x-ratelimit-reset``,
  assets that appear only after a delay, and any status injected for a route
  (``fail()``: 403, 404, 422, 500, 502, 503...).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

DOCS = "https://docs.github.com/rest"
STATUS_STATES = {"error", "failure", "inactive", "in_progress", "queued", "pending", "success"}
SHA = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
WRITE_SCOPES = {"deployments", "contents", "issues", "pull_requests"}


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
        self.refs: set[str] = {"main", SHA}
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

    def add_pull_request(self, number: int) -> None:
        self.issues[number] = True

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

    def _forbidden(self) -> Response:
        return self._json(
            {
                "message": "Resource not accessible by integration",
                "documentation_url": DOCS,
                "status": "403",
            },
            403,
            {"x-accepted-github-permissions": "deployments=write"},
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
            ("GET", r"/", lambda r: self._json({"full_name": self.full_name, "id": 1})),
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
            ("PATCH", r"/issues/comments/(\d+)", self._edit_comment),
            ("POST", r"/issues/comments/(\d+)/reactions", self._react),
            ("GET", r"/collaborators/([^/]+)/permission", self._permission),
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
        if content not in {"+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"}:
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
