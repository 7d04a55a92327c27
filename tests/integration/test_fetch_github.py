"""Fetching release assets from a fake GitHub API on loopback (GitHub cannot run here)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scripts import errors
from tests.conftest import CLIResult
from tests.fakes.github_api import FakeGitHub

pytestmark = pytest.mark.integration


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    fake = FakeGitHub().start()
    monkeypatch.setenv("GITHUB_API_URL", fake.api_url)
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.delenv("GH_TOKEN", raising=False)
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def archive(packaged: dict[str, object]) -> bytes:
    return Path(str(packaged["path"])).read_bytes()


def _fetch(cli: Callable[..., CLIResult], uri: str, dest: Path, *extra: str) -> CLIResult:
    return cli("fetch", uri, "--dest", dest, "--json", "--retries", "3", *extra)


def test_release_by_tag_with_token_never_forwarded_to_the_cdn(
    cli: Callable[..., CLIResult],
    github: FakeGitHub,
    archive: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    github.token = "s3cr3t-token"
    monkeypatch.setenv("GITHUB_TOKEN", "s3cr3t-token")
    release = github.add_release(42, "v1.0.0")
    github.add_asset(release, "digits-1.tar.gz", archive)

    result = _fetch(cli, "github://acme/models/releases/v1.0.0/digits-1.tar.gz", tmp_path / "d")

    assert result.exit_code == 0, result.stderr
    assert result.json()["model_name"] == "digits"
    assert github.cdn_auth_headers == [None], "the token leaked to the redirect host"
    assert "s3cr3t-token" not in result.stderr + result.stdout


def test_release_by_numeric_id(
    cli: Callable[..., CLIResult], github: FakeGitHub, archive: bytes, tmp_path: Path
) -> None:
    release = github.add_release(987654, "v2")
    github.add_asset(release, "digits-1.tar.gz", archive)
    result = _fetch(cli, "github://acme/models/releases/987654/digits-1.tar.gz", tmp_path / "d")
    assert result.exit_code == 0, result.stderr
    assert "GET /repos/acme/models/releases/987654" in github.api_requests


def test_numeric_tag_falls_back_from_id_to_tag(
    cli: Callable[..., CLIResult], github: FakeGitHub, archive: bytes, tmp_path: Path
) -> None:
    release = github.add_release(5, "2026")
    github.add_asset(release, "digits-1.tar.gz", archive)
    result = _fetch(cli, "github://acme/models/releases/2026/digits-1.tar.gz", tmp_path / "d")
    assert result.exit_code == 0, result.stderr
    assert "GET /repos/acme/models/releases/tags/2026" in github.api_requests


def test_missing_release_is_not_found(
    cli: Callable[..., CLIResult], github: FakeGitHub, tmp_path: Path
) -> None:
    result = _fetch(cli, "github://acme/models/releases/v9/x.tar.gz", tmp_path / "d")
    assert result.exit_code == errors.ArtifactNotFoundError.exit_code
    assert "no release 'v9'" in str(result.json()["error"])
    assert not (tmp_path / "d").exists()


def test_asset_uploaded_after_the_release_event_is_waited_for(
    cli: Callable[..., CLIResult], github: FakeGitHub, archive: bytes, tmp_path: Path
) -> None:
    release = github.add_release(7, "v3")
    github.add_asset(release, "digits-1.tar.gz", archive, delay_s=2.5)
    started = time.monotonic()
    result = _fetch(
        cli,
        "github://acme/models/releases/v3/digits-1.tar.gz",
        tmp_path / "d",
        "--asset-wait",
        "30",
    )
    assert result.exit_code == 0, result.stderr
    assert time.monotonic() - started >= 2.5
    assert "not on release v3 yet" in result.stderr


def test_asset_that_never_appears_times_out_listing_what_exists(
    cli: Callable[..., CLIResult], github: FakeGitHub, archive: bytes, tmp_path: Path
) -> None:
    release = github.add_release(8, "v4")
    github.add_asset(release, "other.tar.gz", archive)
    result = _fetch(
        cli, "github://acme/models/releases/v4/digits-1.tar.gz", tmp_path / "d", "--asset-wait", "1"
    )
    assert result.exit_code == errors.ArtifactNotFoundError.exit_code
    message = str(result.json()["error"])
    assert "after waiting 1 s" in message and "other.tar.gz" in message


def test_rate_limit_beyond_the_wait_budget_names_the_reset(
    cli: Callable[..., CLIResult], github: FakeGitHub, tmp_path: Path
) -> None:
    github.rate_limited_until = time.time() + 3600
    result = _fetch(
        cli, "github://acme/models/releases/v1/x.tar.gz", tmp_path / "d", "--rate-limit-wait", "5"
    )
    assert result.exit_code == errors.RemoteError.exit_code
    error = result.json()["error"]
    assert isinstance(error, dict)
    assert "rate limit" in str(error["message"]) and "GITHUB_TOKEN" in str(error["fix"])


def test_short_rate_limit_is_waited_out(
    cli: Callable[..., CLIResult], github: FakeGitHub, archive: bytes, tmp_path: Path
) -> None:
    release = github.add_release(9, "v5")
    github.add_asset(release, "digits-1.tar.gz", archive)
    github.rate_limited_until = time.time() + 1
    result = _fetch(
        cli,
        "github://acme/models/releases/v5/digits-1.tar.gz",
        tmp_path / "d",
        "--rate-limit-wait",
        "10",
    )
    assert result.exit_code == 0, result.stderr


def test_bad_token_is_an_auth_error(
    cli: Callable[..., CLIResult],
    github: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    github.token = "right"
    monkeypatch.setenv("GITHUB_TOKEN", "wrong")
    result = _fetch(cli, "github://acme/models/releases/v1/x.tar.gz", tmp_path / "d")
    assert result.exit_code == errors.AuthError.exit_code
    assert "wrong" not in result.stdout + result.stderr


def test_digest_mismatch_is_an_integrity_error(
    cli: Callable[..., CLIResult], github: FakeGitHub, archive: bytes, tmp_path: Path
) -> None:
    release = github.add_release(10, "v6")
    github.add_asset(release, "digits-1.tar.gz", archive, digest_override="sha256:" + "0" * 64)
    result = _fetch(cli, "github://acme/models/releases/v6/digits-1.tar.gz", tmp_path / "d")
    assert result.exit_code == errors.IntegrityError.exit_code
    assert "advertises" in str(result.json()["error"])
    assert not (tmp_path / "d").exists()


def test_cdn_503s_are_retried(
    cli: Callable[..., CLIResult], github: FakeGitHub, archive: bytes, tmp_path: Path
) -> None:
    release = github.add_release(11, "v7")
    github.add_asset(release, "digits-1.tar.gz", archive)
    github.cdn_failures_remaining = 2
    result = _fetch(cli, "github://acme/models/releases/v7/digits-1.tar.gz", tmp_path / "d")
    assert result.exit_code == 0, result.stderr
    assert len(github.cdn_auth_headers) == 3


def test_asset_still_uploading_is_not_taken(
    cli: Callable[..., CLIResult], github: FakeGitHub, archive: bytes, tmp_path: Path
) -> None:
    release = github.add_release(12, "v8")
    github.add_asset(release, "digits-1.tar.gz", archive, state_until_uploaded="starter")
    result = _fetch(
        cli,
        "github://acme/models/releases/v8/digits-1.tar.gz",
        tmp_path / "d",
        "--asset-wait",
        "0.5",
    )
    assert result.exit_code == errors.ArtifactNotFoundError.exit_code
    assert github.cdn_auth_headers == []
