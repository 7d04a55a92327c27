"""The in-cluster load generator's image, built with the project's own image builder.

Real pip (wheels for the image's Python, from the index or pip's cache), a real OCI
layout and a real registry (CNCF distribution on 127.0.0.1). The proof that the image
holds everything the generator needs: its files alone, under a Python with no packages
at all, run a load test and write results the pipeline decodes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.image.generator_image import (
    CODE,
    GeneratorImageRequest,
    build_generator_image,
    fingerprint,
)
from scripts.loadtest import frames
from scripts.loadtest.generator import GeneratorPlan
from scripts.loadtest.locust_process import Traffic
from tests.conftest import REPO_ROOT, CLIResult
from tests.fakes.base_images import push_bases, write_base_layout
from tests.fakes.ok_server import ok_server
from tests.fakes.registry_server import RegistryServer, registry_available

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("generator-image")
    image = build_generator_image(
        GeneratorImageRequest(
            repository=f"oci:{root / 'layout'}", base="scratch", cache_dir=root / "cache"
        )
    )
    return root, image


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def unpack(layout: Path, digest: str, into: Path) -> dict[str, Any]:
    """The image's files under ``into``; returns its config."""
    manifest = json.loads(_blob(layout, digest).read_bytes())
    for layer in manifest["layers"]:
        with tarfile.open(_blob(layout, layer["digest"]), "r:gz") as tar:
            tar.extractall(into, filter="data")
    config: dict[str, Any] = json.loads(_blob(layout, manifest["config"]["digest"]).read_bytes())
    return config


@pytest.fixture
def tiny_server() -> Iterator[str]:
    with ok_server() as url:
        yield url


def test_the_image_alone_runs_the_generator_under_a_python_with_no_packages(
    built: tuple[Path, Any], tiny_server: str, tmp_path: Path
) -> None:
    root, image = built
    config = unpack(root / "layout", image.digest, tmp_path / "rootfs")
    env = dict(e.split("=", 1) for e in config["config"]["Env"])
    assert env["PYTHONPATH"] == "/opt/tf-loadgen/app:/opt/tf-loadgen/site-packages"
    app = tmp_path / "rootfs" / "opt" / "tf-loadgen"
    assert sorted(str(p.relative_to(app / "app")) for p in (app / "app").rglob("*.py")) == sorted(
        CODE
    )
    assert not (app / "site-packages" / "bin").exists()  # no shebangs of the build machine
    # A Python with no site-packages at all (a venv without pip), as the image's base.
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True
    )
    python = tmp_path / "bare" / "bin" / "python"
    plan = GeneratorPlan(
        Traffic({"canary": [tiny_server]}, "digits", "rest", 2, 20.0, 3.0, 0.0),
        {"instances": [[1.0]]},
    )
    proc = subprocess.run(
        [str(python), "-m", "scripts.loadtest.generator", f"--workdir={tmp_path / 'work'}"],
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": f"{app / 'app'}:{app / 'site-packages'}",
            "TFRP_PLAN": plan.to_json(),
            "JOB_COMPLETION_INDEX": "0",
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    frame = frames.decode(proc.stdout, source="the image's generator")
    assert frame is not None
    assert frames.sample_rows(frame.files) >= 50
    assert frame.meta["role"] == "standalone"
    # The gRPC request body (TensorFlow's messages) and results in GCS import too.
    imports = subprocess.run(
        [str(python), "-c", "import scripts.loadtest.grpc_payload, scripts.loadtest."
         "results_store, google.cloud.storage, grpc, zstandard"],
        env={"PYTHONPATH": f"{app / 'app'}:{app / 'site-packages'}"},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert imports.returncode == 0, imports.stderr[-2000:]


def test_reused_until_the_load_test_code_changes_and_byte_reproducible(
    built: tuple[Path, Any], tmp_path: Path
) -> None:
    root, first = built
    request = GeneratorImageRequest(
        repository=f"oci:{root / 'layout'}", base="scratch", cache_dir=root / "cache"
    )
    again = build_generator_image(request)
    assert again.reused and again.digest == first.digest and again.pushed_bytes == 0
    # Built afresh elsewhere: the same bytes, so the same digest.
    fresh = build_generator_image(
        GeneratorImageRequest(
            repository=f"oci:{tmp_path / 'elsewhere'}", base="scratch", cache_dir=tmp_path / "c"
        )
    )
    assert not fresh.reused and fresh.digest == first.digest
    # A change to the load-test code is a new tag; a change elsewhere is not.
    copy = tmp_path / "checkout"
    for name in (*CODE, "requirements-loadgen.txt", "requirements-loadgen-nodeps.txt",
                 "constraints.txt", "scripts/pipeline.py"):  # fmt: skip
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / name, copy / name)
    unchanged = fingerprint(GeneratorImageRequest(repository="r", base="scratch", root=copy))
    assert unchanged == first.fingerprint
    with (copy / "scripts" / "pipeline.py").open("a") as fh:
        fh.write("# not the load generator's code\n")
    assert fingerprint(GeneratorImageRequest(repository="r", base="scratch", root=copy)) == (
        first.fingerprint
    )
    with (copy / "scripts" / "loadtest" / "openloop.py").open("a") as fh:
        fh.write("# changed\n")
    assert fingerprint(GeneratorImageRequest(repository="r", base="scratch", root=copy)) != (
        first.fingerprint
    )


@pytest.mark.skipif(
    not registry_available() or shutil.which("skopeo") is None,
    reason="needs Debian's docker-registry and skopeo (make setup installs them)",
)
def test_pushed_to_a_registry_once_then_reused(
    cli: Callable[..., CLIResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with RegistryServer() as registry:
        bases = push_bases(write_base_layout(tmp_path / "base"), registry.host)

        def push() -> CLIResult:
            return cli(
                "generator-image", "--repository", f"{registry.host}/tf-loadgen",
                "--base", bases["oci"], "--insecure", "--json",
            )  # fmt: skip

        first = push()
        assert first.exit_code == 0, first.stderr
        data = first.json()
        assert data["reused"] is False
        assert str(data["image"]).startswith(f"{registry.host}/tf-loadgen@sha256:")
        inspect = subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false",
             f"docker://{registry.host}/tf-loadgen:{data['tag']}"],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        labels = json.loads(inspect.stdout)["Labels"]
        assert labels["dev.tf-release-pipeline.loadgen.fingerprint"] == data["fingerprint"]
        assert labels["org.opencontainers.image.base.name"].endswith("/serving-base")
        second = push()
        assert second.exit_code == 0
        assert second.json()["reused"] is True
        assert second.json()["digest"] == data["digest"]
