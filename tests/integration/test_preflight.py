"""``preflight`` against real services: every miss is found before anything changes,
each names its fix, and the exit status is 0 only when every check passes.

The registry is the real one (Debian's docker-registry, anonymous and with htpasswd);
the Kubernetes API server is the real one of tests/controlplane, with RBAC (identities
bound to the Role the docs ship, or to less); GitHub is the fake API (it cannot run here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.errors import PreflightError
from tests.conftest import CLIResult, requirement_missing
from tests.controlplane.cluster import ControlPlane
from tests.controlplane.rbac import bind
from tests.fakes.github_api import FakeGitHub
from tests.fakes.registry_server import RegistryServer, registry_available

pytestmark = [pytest.mark.integration, pytest.mark.controlplane]


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryServer]:
    if not registry_available():
        requirement_missing("docker-registry (Debian package)")
    with RegistryServer() as server:
        yield server


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    fake = FakeGitHub().start()
    fake.token = "ghs_preflight"
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_preflight")
    monkeypatch.setenv("GITHUB_API_URL", fake.api_url)
    monkeypatch.setenv("TF_PIPELINE_GITHUB_PACING", "0")
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def deployer(control_plane: ControlPlane, k8s_namespace: str) -> Path:
    """An identity bound to the shipped Role in the test's namespace."""
    return bind(control_plane, k8s_namespace, "deployer")


@pytest.fixture
def preflight(
    cli: Callable[..., CLIResult],
    packaged: dict[str, object],
    registry: RegistryServer,
    deployer: Path,
    k8s_namespace: str,
    github: FakeGitHub,
) -> Callable[..., tuple[CLIResult, dict[str, dict[str, Any]]]]:

    def run(*extra: str, **override: str) -> tuple[CLIResult, dict[str, dict[str, Any]]]:
        options = {
            "--target": "k8s",
            "--source": str(packaged["path"]),
            "--sha256": str(packaged["sha256"]),
            "--overlay": "staging",
            "--model": "digits",
            "--image": f"{registry.host}/models/digits",
            "--base": "scratch",
            "--kubeconfig": str(deployer),
            "--namespace": k8s_namespace,
            "--github-repository": github.full_name,
        } | override
        args = [a for pair in options.items() for a in pair if pair[1] != "-"]
        result = cli("preflight", *args, *extra, "--json")
        data = result.json()
        checks = {c["name"]: c for c in data["checks"]}  # type: ignore[union-attr]
        return result, checks

    return run


def test_every_prerequisite_present_passes(preflight: Callable[..., Any]) -> None:
    result, checks = preflight()
    assert result.exit_code == 0, result.stdout
    assert result.json()["ok"] is True
    assert set(checks) == {
        "archive",
        "registry push",
        "base image",
        "overlay",
        "cluster",
        "namespace",
        "permissions",
        "GitHub deployments",
    }
    assert all(c["ok"] for c in checks.values())
    assert "v1.37.2" in checks["cluster"]["detail"]  # the real API server answered
    # The shipped Role needs no cluster-scoped read: the namespace was probed by a dry run.
    assert checks["namespace"]["detail"].endswith("exists")


def test_each_miss_is_reported_with_its_fix_and_exit_18(
    preflight: Callable[..., Any],
    control_plane: ControlPlane,
    k8s_namespace: str,
    github: FakeGitHub,
) -> None:
    weak = bind(control_plane, k8s_namespace, "weak", drop=("patch", "deployments"))
    github.token_permissions["deployments"] = "read"
    result, checks = preflight(**{"--sha256": "0" * 64, "--kubeconfig": str(weak)})
    assert result.exit_code == PreflightError.exit_code == 18
    assert not checks["archive"]["ok"]
    assert "expected sha256:" + "0" * 64 in checks["archive"]["detail"]
    permissions = checks["permissions"]
    assert not permissions["ok"]
    assert permissions["detail"].startswith("the identity may not: patch deployments.apps")
    assert "roles/container.developer" in permissions["fix"]
    assert not checks["GitHub deployments"]["ok"]
    assert "deployments: write" in checks["GitHub deployments"]["fix"]
    # The rest still ran and passed: one run shows every miss.
    assert checks["registry push"]["ok"] and checks["namespace"]["ok"]
    assert github.deployments == {}


def test_a_missing_namespace_and_unknown_base_are_named(
    preflight: Callable[..., Any], control_plane: ControlPlane, registry: RegistryServer
) -> None:
    result, checks = preflight(
        **{
            "--base": f"{registry.host}/mirror/tensorflow-serving:2.20.0",
            "--kubeconfig": str(control_plane.kubeconfig),
            "--namespace": "tf-serving-nowhere",
        }
    )
    assert result.exit_code == 18
    assert "kubectl create namespace tf-serving-nowhere" in checks["namespace"]["fix"]
    assert "permissions" not in checks  # no namespace, nothing to ask about
    assert not checks["base image"]["ok"]
    assert "mirror/tensorflow-serving" in checks["base image"]["detail"]


def test_registry_credentials_missing_are_named(
    preflight: Callable[..., Any], tmp_path: Path
) -> None:
    with RegistryServer(users={"ci": "s3cret"}) as private:
        result, checks = preflight(**{"--image": f"{private.host}/models/digits"})
        assert result.exit_code == 18
        push = checks["registry push"]
        assert not push["ok"] and "401" in push["detail"]
        assert "docker login" in push["fix"]


def test_no_cluster_credentials_names_the_fix(
    preflight: Callable[..., Any], tmp_path: Path
) -> None:
    result, checks = preflight(**{"--kubeconfig": str(tmp_path / "absent")})
    assert result.exit_code == 18
    assert "get-gke-credentials" in checks["cluster"]["fix"]


def test_the_local_target_needs_no_cluster_or_github_outside_actions(
    cli: Callable[..., CLIResult], packaged: dict[str, object], tmp_path: Path
) -> None:
    result = cli(
        "preflight",
        "--target",
        "local",
        "--source",
        str(packaged["path"]),
        "--overlay",
        "local",
        "--base",
        "scratch",
        "--state-dir",
        str(tmp_path / "state"),
        "--json",
    )
    assert result.exit_code == 0, result.stdout
    checks = {c["name"]: c for c in result.json()["checks"]}  # type: ignore[union-attr]
    assert checks["GitHub deployments"]["skipped"] and checks["registry push"]["skipped"]
    assert checks["local target"]["ok"] and "cluster" not in checks
