"""Building and pushing serving images against the real registry (Debian docker-registry),
checked with skopeo and umoci, with basic and bearer auth, and through a faulty proxy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from scripts import errors
from tests.conftest import CLIResult, QuickRetry, requirement_missing
from tests.fakes.base_images import push_bases, write_base_layout
from tests.fakes.fault_proxy import FaultProxy
from tests.fakes.registry_server import RegistryServer, registry_available
from tests.fakes.savedmodel_factory import write_saved_model

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _tools() -> None:
    if not registry_available() or shutil.which("skopeo") is None:
        requirement_missing("docker-registry or skopeo (Debian packages)")


@pytest.fixture(scope="module")
def base_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_base_layout(tmp_path_factory.mktemp("base") / "layout")


@pytest.fixture(scope="module")
def registry(base_layout: Path) -> Iterator[tuple[RegistryServer, dict[str, str]]]:
    with RegistryServer() as server:
        yield server, push_bases(base_layout, server.host)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A model base dir in TF Serving layout with ~1 MB of weights."""
    write_saved_model(tmp_path / "models" / "digits" / "3", weights=bytes(range(256)) * 4096)
    return tmp_path / "models" / "digits"


def skopeo_inspect(ref: str, *, raw: bool = False, config: bool = False) -> dict[str, Any]:
    args = ["skopeo", "inspect"]
    if raw:
        args.append("--raw")
    if config:
        args.append("--config")
    if ref.startswith("docker://"):
        args.append("--tls-verify=false")
    out = subprocess.run([*args, ref], check=True, capture_output=True, text=True, timeout=60)
    data = json.loads(out.stdout)
    assert isinstance(data, dict)
    return data


def _build(
    cli: Callable[..., CLIResult], model: Path, base: str, image: str, cache: Path, *extra: str
) -> CLIResult:
    return cli(
        "build",
        "--model-dir",
        model,
        "--base",
        base,
        "--image",
        image,
        "--json",
        "--cache-dir",
        cache,
        *extra,
    )


def test_push_docker_v2_base_mounts_base_layers_and_labels_the_image(
    cli: Callable[..., CLIResult],
    registry: tuple[RegistryServer, dict[str, str]],
    model: Path,
    tmp_path: Path,
) -> None:
    server, bases = registry
    result = _build(cli, model, bases["docker"], f"{server.host}/models/digits", tmp_path / "c")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    digest = str(data["digest"])
    assert data["image"] == f"{server.host}/models/digits@{digest}"
    assert data["tags"] == ["v3", f"v3-{str(data['layer_digest'])[7:19]}"]
    assert data["reused"] is False
    actions = {a["action"] for a in data["actions"]}  # type: ignore[union-attr]
    assert "mount" in actions, "the base lives in the same registry: its layers are mounted"

    raw = skopeo_inspect(f"docker://{server.host}/models/digits:v3", raw=True)
    assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert {layer["mediaType"] for layer in raw["layers"]} == {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    }
    config = skopeo_inspect(f"docker://{server.host}/models/digits@{digest}", config=True)
    assert "MODEL_NAME=digits" in config["config"]["Env"]
    assert "MODEL_NAME=model" not in config["config"]["Env"]
    assert len(config["rootfs"]["diff_ids"]) == 2
    assert config["history"][-1]["created_by"].endswith("/models/digits/3")
    labels = config["config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == "3"
    assert labels["org.opencontainers.image.base.digest"].startswith("sha256:")
    assert labels["maintainer"] == "stand-in"  # the base's labels survive


def test_same_model_same_base_gives_same_digest_and_rebuild_pushes_nothing(
    cli: Callable[..., CLIResult],
    registry: tuple[RegistryServer, dict[str, str]],
    model: Path,
    tmp_path: Path,
) -> None:
    server, bases = registry
    image = f"{server.host}/models/repro"
    first = _build(cli, model, bases["oci"], image, tmp_path / "cache-a")
    assert first.exit_code == 0, first.stderr
    # A copy of the model with other mtimes, built with an empty cache: same bytes, same digest.
    copy = tmp_path / "copy" / "digits"
    shutil.copytree(model, copy)
    second = _build(cli, copy, bases["oci"], image, tmp_path / "cache-b")
    assert second.exit_code == 0, second.stderr
    assert second.json()["digest"] == first.json()["digest"]
    assert second.json()["reused"] is True
    assert second.json()["pushed_bytes"] == 0
    raw = skopeo_inspect(f"docker://{image}:v3", raw=True)
    assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert raw["annotations"]["org.opencontainers.image.version"] == "3"


def test_index_base_resolves_to_the_platform_and_missing_platform_is_explained(
    cli: Callable[..., CLIResult],
    registry: tuple[RegistryServer, dict[str, str]],
    model: Path,
    tmp_path: Path,
) -> None:
    server, bases = registry
    ok = _build(
        cli,
        model,
        bases["multi"],
        f"{server.host}/models/multi",
        tmp_path / "c",
        "--platform",
        "linux/arm64",
    )
    assert ok.exit_code == 0, ok.stderr
    config = skopeo_inspect(f"docker://{server.host}/models/multi:v3", config=True)
    assert config["architecture"] == "arm64"
    bad = _build(
        cli,
        model,
        bases["multi"],
        f"{server.host}/models/multi",
        tmp_path / "c",
        "--platform",
        "linux/s390x",
    )
    assert bad.exit_code == errors.ArtifactNotFoundError.exit_code
    message = str(bad.json()["error"])
    assert "no linux/s390x variant" in message and "linux/amd64" in message


def test_unknown_base_and_bad_model_dir_are_clear_errors(
    cli: Callable[..., CLIResult],
    registry: tuple[RegistryServer, dict[str, str]],
    model: Path,
    tmp_path: Path,
) -> None:
    server, _ = registry
    unknown = _build(
        cli, model, f"{server.host}/serving-base:nope", f"{server.host}/m/x", tmp_path / "c"
    )
    assert unknown.exit_code == errors.ArtifactNotFoundError.exit_code
    error = unknown.json()["error"]
    assert isinstance(error, dict)
    assert server.host in str(error["message"]) and "serving-base:nope" in str(error["message"])
    assert "MANIFEST_UNKNOWN" in str(error["message"])

    no_version = tmp_path / "flat" / "digits"
    write_saved_model(no_version)  # saved_model.pb at the top: no version directory
    bad = _build(cli, no_version, "scratch", f"{server.host}/m/x", tmp_path / "c")
    assert bad.exit_code == errors.InvalidModelError.exit_code
    assert "no version directory" in str(bad.json()["error"])


def test_cross_registry_base_is_streamed_registry_to_registry(
    cli: Callable[..., CLIResult],
    registry: tuple[RegistryServer, dict[str, str]],
    model: Path,
    tmp_path: Path,
) -> None:
    _, bases = registry
    with RegistryServer() as target:
        result = _build(cli, model, bases["docker"], f"{target.host}/models/digits", tmp_path / "c")
        assert result.exit_code == 0, result.stderr
        actions = [a["action"] for a in result.json()["actions"]]  # type: ignore[union-attr]
        assert actions.count("copy") == 1
        # skopeo copy verifies every blob's digest while reading the image.
        subprocess.run(
            [
                "skopeo",
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                f"docker://{target.host}/models/digits:v3",
                f"oci:{tmp_path / 'verify'}:v3",
            ],
            check=True,
            timeout=60,
        )


def test_dry_run_pushes_nothing(
    cli: Callable[..., CLIResult],
    registry: tuple[RegistryServer, dict[str, str]],
    model: Path,
    tmp_path: Path,
) -> None:
    server, bases = registry
    result = _build(
        cli, model, bases["docker"], f"{server.host}/models/dry", tmp_path / "c", "--dry-run"
    )
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["dry_run"] is True
    assert {a["action"] for a in data["actions"]} >= {"would-upload", "would-tag"}  # type: ignore[union-attr]
    tags = requests.get(f"http://{server.host}/v2/models/dry/tags/list", timeout=10)
    assert tags.status_code == 404


def test_zstd_layer_is_oci_and_readable_by_skopeo(
    cli: Callable[..., CLIResult],
    registry: tuple[RegistryServer, dict[str, str]],
    model: Path,
    tmp_path: Path,
) -> None:
    server, bases = registry
    result = _build(
        cli,
        model,
        bases["docker"],
        f"{server.host}/models/zstd",
        tmp_path / "c",
        "--compression",
        "zstd",
    )
    assert result.exit_code == 0, result.stderr
    raw = skopeo_inspect(f"docker://{server.host}/models/zstd:v3", raw=True)
    assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert raw["layers"][-1]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert raw["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"


def test_umoci_sees_model_base_files_and_model_name(
    cli: Callable[..., CLIResult],
    registry: tuple[RegistryServer, dict[str, str]],
    model: Path,
    tmp_path: Path,
) -> None:
    if shutil.which("umoci") is None:
        requirement_missing("umoci (Debian package)")
    server, bases = registry
    assert (
        _build(cli, model, bases["docker"], f"{server.host}/models/umoci", tmp_path / "c").exit_code
        == 0
    )
    oci_dir = tmp_path / "oci"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            f"docker://{server.host}/models/umoci:v3",
            f"oci:{oci_dir}:v3",
        ],
        check=True,
        timeout=60,
    )
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", f"{oci_dir}:v3", str(bundle)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    rootfs = bundle / "rootfs"
    assert (rootfs / "models/digits/3/saved_model.pb").is_file()
    assert (rootfs / "models/digits/3/variables/variables.index").is_file()
    assert (rootfs / "usr/bin/tensorflow_model_server").is_file()  # the base is still there
    runtime = json.loads((bundle / "config.json").read_text())
    assert "MODEL_NAME=digits" in runtime["process"]["env"]


def test_layout_builder_writes_a_layout_skopeo_and_umoci_read(
    cli: Callable[..., CLIResult],
    base_layout: Path,
    model: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "images"
    result = cli(
        "build",
        "--model-dir",
        model,
        "--base",
        f"oci:{base_layout}:single",
        "--image",
        f"oci:{out}:digits",
        "--builder",
        "layout",
        "--json",
        "--cache-dir",
        tmp_path / "c",
    )
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["image"] == f"oci:{out}@{data['digest']}"
    inspected = skopeo_inspect(f"oci:{out}:v3")
    assert "MODEL_NAME=digits" in inspected["Env"]
    again = cli(
        "build",
        "--model-dir",
        model,
        "--base",
        f"oci:{base_layout}:single",
        "--image",
        f"oci:{out}:digits",
        "--builder",
        "layout",
        "--json",
        "--cache-dir",
        tmp_path / "c",
    )
    assert again.json()["reused"] is True
    if shutil.which("umoci"):
        bundle = tmp_path / "bundle"
        subprocess.run(
            ["umoci", "unpack", "--rootless", "--image", f"{out}:digits", str(bundle)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        assert (bundle / "rootfs/models/digits/3/saved_model.pb").is_file()


def test_basic_auth_with_docker_config_and_without_credentials(
    cli: Callable[..., CLIResult],
    base_layout: Path,
    model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with RegistryServer(users={"ci": "hunter2"}) as server:
        bases = push_bases(base_layout, server.host, creds="ci:hunter2")
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty"))
        denied = _build(cli, model, bases["docker"], f"{server.host}/models/digits", tmp_path / "c")
        assert denied.exit_code == errors.AuthError.exit_code
        error = denied.json()["error"]
        assert isinstance(error, dict)
        assert server.host in str(error["message"]) and "docker login" in str(error["fix"])

        conf = tmp_path / "docker"
        conf.mkdir()
        server.docker_config(conf / "config.json", "ci", "hunter2")
        monkeypatch.setenv("DOCKER_CONFIG", str(conf))
        ok = _build(cli, model, bases["docker"], f"{server.host}/models/digits", tmp_path / "c")
        assert ok.exit_code == 0, ok.stderr
        assert "hunter2" not in ok.stderr + ok.stdout


def test_bearer_token_challenge(
    cli: Callable[..., CLIResult],
    base_layout: Path,
    model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with RegistryServer(users={"ci": "s3cret"}, token=True) as server:
        bases = push_bases(base_layout, server.host, creds="ci:s3cret")
        conf = tmp_path / "docker"
        conf.mkdir()
        server.docker_config(conf / "config.json", "ci", "s3cret")
        monkeypatch.setenv("DOCKER_CONFIG", str(conf))
        result = _build(cli, model, bases["docker"], f"{server.host}/models/digits", tmp_path / "c")
        assert result.exit_code == 0, result.stderr
        assert server.token_server is not None
        scopes = [s for r in server.token_server.requests for s in r["scopes"]]
        assert "repository:models/digits:pull,push" in scopes
        assert any("repository:serving-base:pull" in s for s in scopes)  # mount scope
        assert all(r["user"] == "ci" for r in server.token_server.requests)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_push_through_a_faulty_proxy_completes_and_is_intact(
    cli: Callable[..., CLIResult],
    registry: tuple[RegistryServer, dict[str, str]],
    tmp_path: Path,
    seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # --retries 8 as before, with milliseconds between attempts: the proxy's faults are
    # drawn per request from its seed, not from the clock, so the same faults happen and
    # must be survived; the default 0.5 s doubling only slept (up to ~15 s for one seed).
    monkeypatch.setattr("scripts.transfer.RetryPolicy", QuickRetry)
    server, bases = registry
    model = write_saved_model(
        tmp_path / "m" / "faulty" / "1", weights=bytes(range(251)) * 40_000
    ).parent  # ~10 MB
    proxy = FaultProxy(server.port, fail_ratio=0.15, cut_ratio=0.3, seed=seed).start()
    try:
        base = bases["docker"].replace(server.host, proxy.host)
        result = _build(
            cli, model, base, f"{proxy.host}/models/faulty{seed}", tmp_path / "c", "--retries", "8"
        )
    finally:
        proxy.stop()
    assert result.exit_code == 0, result.stderr
    assert proxy.stats.failed + proxy.stats.cut > 0, "the proxy injected no fault"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            f"docker://{server.host}/models/faulty{seed}:v1",
            f"oci:{tmp_path / 'verify'}:v1",
        ],
        check=True,
        timeout=60,
    )


def test_interrupted_push_leaves_no_tag_and_a_rerun_completes(
    cli: Callable[..., CLIResult],
    registry: tuple[RegistryServer, dict[str, str]],
    tmp_path: Path,
) -> None:
    server, bases = registry
    model = write_saved_model(
        tmp_path / "m" / "cut" / "1", weights=bytes(range(253)) * 40_000
    ).parent
    image = f"models/cut-{tmp_path.name[-6:]}"
    proxy = FaultProxy(server.port, cut_after=2).start()  # an outage from the 3rd upload on
    try:
        base = bases["docker"].replace(server.host, proxy.host)
        failed = _build(cli, model, base, f"{proxy.host}/{image}", tmp_path / "c", "--retries", "2")
    finally:
        proxy.stop()
    assert failed.exit_code == errors.RemoteError.exit_code
    tags = requests.get(f"http://{server.host}/v2/{image}/tags/list", timeout=10)
    assert tags.status_code == 404 or not tags.json().get("tags"), "a tag points at a broken image"

    rerun = _build(cli, model, bases["docker"], f"{server.host}/{image}", tmp_path / "c")
    assert rerun.exit_code == 0, rerun.stderr
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            f"docker://{server.host}/{image}:v1",
            f"oci:{tmp_path / 'v'}:v1",
        ],
        check=True,
        timeout=60,
    )
