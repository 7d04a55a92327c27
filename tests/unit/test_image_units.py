"""Image references, credentials lookup and composition, without servers."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from scripts.errors import AuthError, UsageError
from scripts.image import media_types as mt
from scripts.image.auth import CredentialStore
from scripts.image.base import BaseImage, Platform
from scripts.image.build import tags_for
from scripts.image.compose import ImageMeta, compose
from scripts.image.layer import LayerBlob
from scripts.image.reference import ImageRef, LayoutRef


@pytest.mark.parametrize(
    ("text", "registry", "repo", "tag", "digest", "api"),
    [
        (
            "tensorflow/serving:2.20.0",
            "docker.io",
            "tensorflow/serving",
            "2.20.0",
            None,
            "registry-1.docker.io",
        ),
        ("busybox", "docker.io", "library/busybox", None, None, "registry-1.docker.io"),
        (
            "127.0.0.1:5000/models/digits:v1",
            "127.0.0.1:5000",
            "models/digits",
            "v1",
            None,
            "127.0.0.1:5000",
        ),
        (
            "europe-docker.pkg.dev/p/r/digits@sha256:" + "a" * 64,
            "europe-docker.pkg.dev",
            "p/r/digits",
            None,
            "sha256:" + "a" * 64,
            "europe-docker.pkg.dev",
        ),
        ("localhost/x", "localhost", "x", None, None, "localhost"),
    ],
)
def test_reference_parsing(
    text: str, registry: str, repo: str, tag: str | None, digest: str | None, api: str
) -> None:
    ref = ImageRef.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest, ref.api_host) == (
        registry,
        repo,
        tag,
        digest,
        api,
    )


@pytest.mark.parametrize("text", ["Upper/Case", "repo@sha256:short", "repo:bad tag", "a//b"])
def test_bad_references_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        ImageRef.parse(text)


def test_layout_ref_and_loopback() -> None:
    assert LayoutRef.parse("oci:/tmp/x:digits") == LayoutRef(Path("/tmp/x"), "digits")
    assert ImageRef.parse("127.0.0.1:5000/a").is_loopback
    assert not ImageRef.parse("gcr.io/a/b").is_loopback


def _config(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


def test_docker_config_auths_and_identity_tokens(tmp_path: Path) -> None:
    auth = base64.b64encode(b"user:p@ss:word").decode()
    store = CredentialStore(
        _config(
            tmp_path,
            {
                "auths": {
                    "reg.example:5000": {"auth": auth},
                    "https://other.example": {"identitytoken": "tok"},
                }
            },
        ),
        use_google_adc=False,
    )
    cred = store.lookup("reg.example:5000")
    assert cred is not None and (cred.username, cred.password) == ("user", "p@ss:word")
    assert "p@ss" not in repr(cred)
    other = store.lookup("other.example")
    assert other is not None and other.password == "tok"
    assert store.lookup("nothing.example") is None


def test_cred_helper_is_run_with_the_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helper = tmp_path / "bin" / "docker-credential-fake"
    helper.parent.mkdir()
    helper.write_text(
        '#!/bin/sh\nread host\necho "{\\"Username\\": \\"u-$host\\", \\"Secret\\": \\"s\\"}"\n'
    )
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    store = CredentialStore(
        _config(tmp_path, {"credHelpers": {"gar.pkg.dev": "fake"}}), use_google_adc=False
    )
    cred = store.lookup("gar.pkg.dev")
    assert cred is not None and cred.username == "u-gar.pkg.dev"


def test_missing_cred_helper_is_an_auth_error(tmp_path: Path) -> None:
    store = CredentialStore(_config(tmp_path, {"credHelpers": {"h": "nope-not-installed"}}))
    with pytest.raises(AuthError, match="docker-credential-nope-not-installed"):
        store.lookup("h")


def _base(family: str) -> BaseImage:
    layer = {
        "mediaType": mt.DOCKER_LAYER_GZIP if family == "docker" else mt.OCI_LAYER_GZIP,
        "size": 10,
        "digest": "sha256:" + "1" * 64,
    }
    return BaseImage(
        display="reg/base@sha256:" + "2" * 64,
        family=family,
        manifest={"config": {}, "layers": [layer]},
        manifest_digest="sha256:" + "2" * 64,
        config={
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/bin", "MODEL_NAME=model"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "3" * 64]},
            "history": [{"created_by": "base"}],
        },
        source=None,
        layers=[layer],
    )


def _layer(compression: str = "gzip") -> LayerBlob:
    return LayerBlob(
        path=Path("/dev/null"),
        digest="sha256:" + "4" * 64,
        size=99,
        diff_id="sha256:" + "5" * 64,
        compression=compression,
        uncompressed_size=200,
    )


META = ImageMeta(
    model_name="digits",
    version=3,
    archive_sha256="ab" * 32,
    source="https://github.com/acme/models",
    revision="deadbeef",
    created_epoch=1_700_000_000,
)


def test_compose_keeps_the_family_and_updates_config() -> None:
    image = compose(_base("docker"), _layer(), META)
    manifest = image.manifest.json()
    assert manifest["mediaType"] == mt.DOCKER_MANIFEST
    assert [layer["mediaType"] for layer in manifest["layers"]] == [mt.DOCKER_LAYER_GZIP] * 2
    assert "annotations" not in manifest  # Docker v2 manifests have none
    config = json.loads(image.config)
    assert config["config"]["Env"] == ["PATH=/bin", "MODEL_NAME=digits"]
    assert config["rootfs"]["diff_ids"][-1] == "sha256:" + "5" * 64
    assert config["history"][-1]["created"] == "2023-11-14T22:13:20Z"
    labels = config["config"]["Labels"]
    assert labels["org.opencontainers.image.revision"] == "deadbeef"
    assert labels["dev.tf-release-pipeline.model.archive-sha256"] == "ab" * 32
    assert compose(_base("docker"), _layer(), META).manifest.digest == image.manifest.digest


def test_zstd_turns_a_docker_base_into_an_oci_manifest() -> None:
    manifest = compose(_base("docker"), _layer("zstd"), META).manifest.json()
    assert manifest["mediaType"] == mt.OCI_MANIFEST
    assert manifest["layers"][0]["mediaType"] == mt.OCI_LAYER_GZIP
    assert manifest["layers"][1]["mediaType"] == mt.OCI_LAYER_ZSTD
    assert manifest["annotations"]["org.opencontainers.image.version"] == "3"


def test_tags_are_version_and_content_never_latest_alone() -> None:
    assert tags_for(3, "sha256:" + "ab" * 32, None) == ["v3", "v3-abababababab"]
    assert tags_for(3, "sha256:" + "ab" * 32, "latest") == ["v3", "v3-abababababab", "latest"]


def test_platform_parsing() -> None:
    assert Platform.parse("linux/arm64/v8") == Platform("linux", "arm64", "v8")
    with pytest.raises(UsageError):
        Platform.parse("amd64")
