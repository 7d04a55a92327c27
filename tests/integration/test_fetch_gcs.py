"""Fetching from Google Cloud Storage against the real fake-gcs-server on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from scripts import errors
from tests.conftest import CLIResult
from tests.fakes.gcs_server import GCSEmulator

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gcs_server() -> Iterator[GCSEmulator]:
    with GCSEmulator() as server:
        yield server


@pytest.fixture
def bucket(gcs_server: GCSEmulator, monkeypatch: pytest.MonkeyPatch) -> storage.Bucket:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.url)
    client = storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=gcs_server.url),
    )
    existing = client.lookup_bucket("models")
    return existing or client.create_bucket("models")


def test_download_from_gcs(
    cli: Callable[..., CLIResult],
    bucket: storage.Bucket,
    packaged: dict[str, object],
    tmp_path: Path,
) -> None:
    bucket.blob("releases/digits-1.tar.gz").upload_from_filename(str(packaged["path"]))
    result = cli(
        "fetch",
        "gs://models/releases/digits-1.tar.gz",
        "--dest",
        tmp_path / "d",
        "--sha256",
        str(packaged["sha256"]),
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["sha256"] == packaged["sha256"]
    assert (tmp_path / "d" / "digits" / "1" / "saved_model.pb").is_file()


def test_missing_object_is_not_found(
    cli: Callable[..., CLIResult], bucket: storage.Bucket, tmp_path: Path
) -> None:
    result = cli("fetch", "gs://models/releases/nope.tar.gz", "--dest", tmp_path / "d", "--json")
    assert result.exit_code == errors.ArtifactNotFoundError.exit_code
    assert "gs://models/releases/nope.tar.gz does not exist" in str(result.json()["error"])
    assert not (tmp_path / "d").exists()


def test_checksum_mismatch_leaves_nothing(
    cli: Callable[..., CLIResult],
    bucket: storage.Bucket,
    packaged: dict[str, object],
    tmp_path: Path,
) -> None:
    bucket.blob("releases/digits-1.tar.gz").upload_from_filename(str(packaged["path"]))
    wrong = "f" * 64
    result = cli(
        "fetch",
        "gs://models/releases/digits-1.tar.gz",
        "--dest",
        tmp_path / "d",
        "--sha256",
        wrong,
        "--json",
    )
    assert result.exit_code == errors.IntegrityError.exit_code
    assert f"expected {wrong}" in str(result.json()["error"])
    assert not (tmp_path / "d").exists()


def test_malformed_gs_uri_is_a_usage_error(cli: Callable[..., CLIResult], tmp_path: Path) -> None:
    assert cli("fetch", "gs://only-bucket", "--dest", tmp_path / "d").exit_code == 2
