"""GitHub release-asset source, through PyGithub.

``github://OWNER/REPO/releases/TAG_OR_ID/ASSET``. A purely numeric
``TAG_OR_ID`` is tried as a release id first, then as a tag.

The release event can fire before the asset is uploaded, so a missing (or
still uploading) asset is polled for up to ``asset_wait_s``. The download goes
through the API asset URL with ``Accept: application/octet-stream`` so private
repositories work; GitHub redirects it to another host, which never receives
our token (see :mod:`scripts.transfer`). GitHub's ``digest`` of the asset is
verified when present.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote

from github import Auth, Github, GithubException, GithubRetry
from github.GithubException import (
    BadCredentialsException,
    RateLimitExceededException,
    UnknownObjectException,
)

from scripts.artifact.sources import Downloaded, FetchContext
from scripts.errors import (
    ArtifactNotFoundError,
    AuthError,
    PipelineError,
    RemoteError,
    UsageError,
)
from scripts.log import log
from scripts.transfer import download, new_session


@dataclass(frozen=True)
class GitHubReleaseSource:
    owner: str
    repo: str
    release: str
    asset: str

    @classmethod
    def from_uri(cls, uri: SplitResult, raw: str) -> GitHubReleaseSource:
        parts = [unquote(p) for p in uri.path.strip("/").split("/")]
        if not uri.netloc or len(parts) != 4 or parts[1] != "releases" or not all(parts):
            raise UsageError(
                f"malformed GitHub source {raw!r}",
                cause="expected github://OWNER/REPO/releases/TAG_OR_ID/ASSET",
                fix="e.g. github://acme/models/releases/v1.2.0/digits-1.tar.gz",
            )
        return cls(owner=uri.netloc, repo=parts[0], release=parts[2], asset=parts[3])

    def describe(self) -> str:
        return f"github://{self.owner}/{self.repo}/releases/{self.release}/{self.asset}"

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    def _client(self, ctx: FetchContext) -> Github:
        token = ctx.settings.github_token
        retry = GithubRetry(
            total=ctx.retry.attempts,
            backoff_factor=ctx.retry.initial_backoff_s,
            max_rate_limit_wait=ctx.rate_limit_max_wait_s,
        )
        return Github(
            auth=Auth.Token(token) if token else None,
            base_url=ctx.settings.github_api_url,
            retry=retry,
            timeout=int(ctx.retry.timeout_s),
            lazy=True,
        )

    def _get_release(self, gh: Github) -> Any:
        repo = gh.get_repo(self.full_name)
        if self.release.isdigit():
            try:
                release = repo.get_release(int(self.release))
                release.complete()
                return release
            except UnknownObjectException:
                log.debug("no release with id %s; trying it as a tag", self.release)
        return repo.get_release(self.release)

    def _wait_for_asset(self, release: Any, ctx: FetchContext) -> Any:
        deadline = time.monotonic() + ctx.asset_wait_s
        delay = 2.0
        while True:
            names = []
            for asset in release.get_assets():
                names.append(asset.name)
                if asset.name == self.asset and asset.state == "uploaded":
                    return asset
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                listed = ", ".join(names) or "none"
                raise ArtifactNotFoundError(
                    f"release {release.tag_name} of {self.full_name} has no uploaded asset "
                    f"{self.asset!r} after waiting {ctx.asset_wait_s:.0f} s (assets: {listed})",
                    cause="the asset name is wrong, or its upload has not finished",
                    fix="check the asset name on the release page, or raise --asset-wait",
                )
            log.info(
                "asset %s not on release %s yet; checking again in %.0f s (%.0f s left)",
                self.asset,
                release.tag_name,
                min(delay, remaining),
                remaining,
            )
            time.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 30.0)

    def fetch(self, workdir: Path, ctx: FetchContext) -> Downloaded:
        gh = self._client(ctx)
        try:
            release = self._get_release(gh)
            asset = self._wait_for_asset(release, ctx)
            asset_url: str = asset.url
            claimed = asset.digest
        except PipelineError:
            raise
        except BadCredentialsException as exc:
            raise AuthError(
                f"GitHub rejected the token while reading {self.describe()} (HTTP 401)",
                cause="GITHUB_TOKEN is invalid or expired",
                fix="refresh the token, or unset it for public repositories",
            ) from exc
        except RateLimitExceededException as exc:
            reset = (exc.headers or {}).get("x-ratelimit-reset", "unknown")
            raise RemoteError(
                f"GitHub API rate limit exhausted while reading {self.describe()} "
                f"(resets at epoch {reset})",
                cause="too many unauthenticated or heavy API calls",
                fix="set GITHUB_TOKEN (5,000 requests/hour instead of 60) or wait for the reset",
            ) from exc
        except UnknownObjectException as exc:
            raise ArtifactNotFoundError(
                f"GitHub has no release {self.release!r} in {self.full_name} (HTTP 404)",
                cause="a wrong owner, repository or tag, or a private repository without a "
                "token that can read it",
                fix="check the tag on the releases page; set GITHUB_TOKEN with contents:read",
            ) from exc
        except GithubException as exc:
            if exc.status == 403:
                raise AuthError(
                    f"GitHub refused access to {self.describe()} (HTTP 403): {exc.message}",
                    cause="the token lacks permission for this repository",
                    fix="grant the token contents:read on the repository",
                ) from exc
            raise RemoteError(
                f"GitHub API failed for {self.describe()}: HTTP {exc.status} {exc.message}",
                cause="a GitHub outage or an unexpected response",
                fix="retry later; see https://www.githubstatus.com",
            ) from exc

        headers = {"Accept": "application/octet-stream"}
        if ctx.settings.github_token:
            headers["Authorization"] = f"Bearer {ctx.settings.github_token}"
        with new_session() as session:
            result = download(
                session,
                asset_url,
                workdir / self.asset,
                what=self.describe(),
                headers=headers,
                policy=ctx.retry,
                progress=ctx.progress,
            )
        remote_sha = None
        if claimed and isinstance(claimed, str) and claimed.startswith("sha256:"):
            remote_sha = claimed.removeprefix("sha256:").lower()
        return Downloaded(
            path=result.path,
            sha256=result.sha256,
            size=result.size,
            filename=self.asset,
            remote_sha256=remote_sha,
        )
