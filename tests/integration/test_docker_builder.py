"""The ``docker`` builder against podman's Docker-compatible API, pushing to the real registry."""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scripts import errors
from tests.conftest import CLIResult, requirement_missing
from tests.fakes.podman_service import PodmanService, podman_available
from tests.fakes.registry_server import RegistryServer, registry_available
from tests.fakes.savedmodel_factory import write_saved_model

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _tools() -> None:
    if not (podman_available() and registry_available()):
        requirement_missing("podman, runc or docker-registry (Debian packages)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PodmanService, str]]:
    with RegistryServer() as registry:
        service = PodmanService([registry.host]).start()
        try:
            rootfs = tmp_path_factory.mktemp("rootfs")
            (rootfs / "usr" / "bin").mkdir(parents=True)
            (rootfs / "usr/bin/tensorflow_model_server").write_text("#!/bin/sh\necho stub\n")
            tar_path = rootfs.parent / "rootfs.tar"
            with tarfile.open(tar_path, "w") as tar:
                tar.add(rootfs / "usr", arcname="usr")
            service.podman(
                "import",
                "--change",
                'ENTRYPOINT ["/usr/bin/tensorflow_model_server"]',
                str(tar_path),
                "localhost/serving-base:stub",
            )
            yield service, registry.host
        finally:
            service.stop()


def test_docker_builder_commits_and_pushes_with_model_name(
    cli: Callable[..., CLIResult],
    stack: tuple[PodmanService, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, registry = stack
    monkeypatch.setenv("DOCKER_HOST", service.url)
    write_saved_model(tmp_path / "models" / "digits" / "2")
    result = cli(
        "build",
        "--builder",
        "docker",
        "--model-dir",
        tmp_path / "models" / "digits",
        "--base",
        "localhost/serving-base:stub",
        "--image",
        f"{registry}/models/digits",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert str(data["image"]).startswith(f"{registry}/models/digits@sha256:")
    assert data["tags"][0] == "v2"  # type: ignore[index]
    out = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--config",
            "--tls-verify=false",
            f"docker://{registry}/models/digits:v2",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    config = json.loads(out)
    assert "MODEL_NAME=digits" in config["config"]["Env"]
    assert config["config"]["Labels"]["org.opencontainers.image.version"] == "2"


def test_docker_builder_push_failure_is_raised_not_swallowed(
    cli: Callable[..., CLIResult],
    stack: tuple[PodmanService, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, _ = stack
    monkeypatch.setenv("DOCKER_HOST", service.url)
    write_saved_model(tmp_path / "models" / "digits" / "2")
    # Nothing listens on port 9: the push stream reports errorDetail, which must become an error.
    result = cli(
        "build",
        "--builder",
        "docker",
        "--model-dir",
        tmp_path / "models" / "digits",
        "--base",
        "localhost/serving-base:stub",
        "--image",
        "127.0.0.1:9/models/digits",
        "--json",
    )
    assert result.exit_code in (errors.RemoteError.exit_code, errors.AuthError.exit_code)
    assert "push of 127.0.0.1:9/models/digits" in str(result.json()["error"])


def test_docker_builder_without_a_daemon_says_so(
    cli: Callable[..., CLIResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    write_saved_model(tmp_path / "models" / "digits" / "2")
    result = cli(
        "build",
        "--builder",
        "docker",
        "--model-dir",
        tmp_path / "models" / "digits",
        "--base",
        "x/y:z",
        "--image",
        "127.0.0.1:9/m/d",
        "--json",
    )
    assert result.exit_code == errors.ToolMissingError.exit_code
    assert "--builder registry" in str(result.json()["error"])
