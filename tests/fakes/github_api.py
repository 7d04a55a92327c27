"""A fake GitHub REST API on loopback, speaking the real response shapes.

GitHub cannot run here, so this stands in for it (README: "What the tests
fake"). It serves what the pipeline calls, as GitHub documents it:

* ``GET /repos/{o}/{r}/releases/{id}`` and ``/releases/tags/{tag}`` → release JSON
* ``GET /repos/{o}/{r}/releases/{id}/assets`` → asset list
* ``GET /repos/{o}/{r}/releases/assets/{id}`` with ``Accept: application/octet-stream``
  → ``302`` to a *second* server (another host:port, like GitHub's CDN) that
  serves the bytes and records whether it received an ``Authorization`` header
* failures: 404 ``{"message": "Not Found", ...}``, 401 ``Bad credentials``,
  403 primary rate limit with ``x-ratelimit-remaining: 0`` and ``x-ratelimit-reset``,
  and assets that appear only after a delay (uploaded after the release event).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

DOCS = "https://docs.github.com/rest/releases"


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


def _user() -> dict[str, Any]:
    return {
        "login": "octocat",
        "id": 1,
        "node_id": "MDQ6VXNlcjE=",
        "type": "User",
        "site_admin": False,
        "url": "https://api.github.com/users/octocat",
    }


class FakeGitHub:
    """Two loopback servers: the API and the asset CDN it redirects to."""

    def __init__(self, owner: str = "acme", repo: str = "models") -> None:
        self.owner = owner
        self.repo = repo
        self.api = HTTPServer(host="127.0.0.1", port=0)
        self.cdn = HTTPServer(host="localhost", port=0)  # another host, as on github.com
        self.releases: dict[int, FakeRelease] = {}
        self.token: str | None = None  # when set, requests must carry it
        self.rate_limited_until: float | None = None  # epoch seconds
        self.cdn_auth_headers: list[str | None] = []
        self.api_requests: list[str] = []
        self.cdn_failures_remaining = 0  # 503s before the CDN serves
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

    # -- fixtures ------------------------------------------------------------
    def add_release(self, release_id: int, tag: str) -> FakeRelease:
        release = FakeRelease(release_id, tag)
        self.releases[release_id] = release
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
            "body": "",
            "draft": False,
            "prerelease": False,
            "immutable": False,
            "created_at": "2026-11-01T00:00:00Z",
            "published_at": "2026-11-01T00:00:00Z",
            "author": _user(),
            "tarball_url": f"{self._repo_url()}/tarball/{release.tag}",
            "zipball_url": f"{self._repo_url()}/zipball/{release.tag}",
            "assets": [self._asset_json(a) for a in self._visible_assets(release)],
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

    # -- handlers ------------------------------------------------------------
    def _api(self, request: Request) -> Response:
        with self._lock:
            self.api_requests.append(f"{request.method} {request.path}")
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
                    {
                        "message": "Bad credentials",
                        "documentation_url": "https://docs.github.com/rest",
                        "status": "401",
                    },
                    401,
                )
        prefix = f"/repos/{self.owner}/{self.repo}/releases/"
        if not request.path.startswith(prefix):
            return self._not_found()
        rest = request.path[len(prefix) :]
        if match := re.fullmatch(r"tags/(.+)", rest):
            for release in self.releases.values():
                if release.tag == match[1]:
                    return self._json(self._release_json(release))
            return self._not_found()
        if match := re.fullmatch(r"(\d+)", rest):
            release = self.releases.get(int(match[1]))
            return self._json(self._release_json(release)) if release else self._not_found()
        if match := re.fullmatch(r"(\d+)/assets", rest):
            release = self.releases.get(int(match[1]))
            if not release:
                return self._not_found()
            return self._json([self._asset_json(a) for a in self._visible_assets(release)])
        if match := re.fullmatch(r"assets/(\d+)", rest):
            asset = self._find_asset(int(match[1]))
            if asset is None:
                return self._not_found()
            if request.headers.get("Accept") != "application/octet-stream":
                return self._json(self._asset_json(asset))
            location = f"http://localhost:{self.cdn.port}/download/{asset.id}?sig=abc"
            return Response("", status=302, headers={"Location": location})
        return self._not_found()

    def _find_asset(self, asset_id: int) -> FakeAsset | None:
        for release in self.releases.values():
            for asset in self._visible_assets(release):
                if asset.id == asset_id:
                    return asset
        return None

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
