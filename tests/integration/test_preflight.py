"""``preflight`` against real and fake services: every miss is found before anything
changes, each names its fix, and the exit status is 0 only when every check passes.

The registry is the real one (Debian's docker-registry, anonymous and with htpasswd);
the GitHub API and the Kubernetes API server are the fakes (RBAC answers come from the
fake's SelfSubjectAccessReview endpoint until a real API server runs in the tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.errors import PreflightError
from tests.conftest import CLIResult, requirement_missing
from tests.fakes.github_api import FakeGitHub
from tests.fakes.kube_api_server import FakeKubeApi
from tests.fakes.registry_server import RegistryServer, registry_available

pytestmark = pytest.mark.integration
NAMESPACE = "tf-serving-staging"  # the staging overlay's


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryServer]:
    if not registry_available():
        requirement_missing("docker-registry (Debian package)")
    with RegistryServer() as server:
        yield server


@pytest.fixture
def kube() -> Iterator[FakeKubeApi]:
    fake = FakeKubeApi(namespaces={NAMESPACE}).start()
    try:
        yield fake
    finally:
        fake.stop()


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
def preflight(
    cli: Callable[..., CLIResult],
    packaged: dict[str, object],
    registry: RegistryServer,
    kube: FakeKubeApi,
    github: FakeGitHub,
    tmp_path: Path,
) -> Callable[..., tuple[CLIResult, dict[str, dict[str, Any]]]]:
    kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")

    def run(*extra: str, **override: str) -> tuple[CLIResult, dict[str, dict[str, Any]]]:
        options = {
            "--target": "k8s",
            "--source": str(packaged["path"]),
            "--sha256": str(packaged["sha256"]),
            "--overlay": "staging",
            "--model": "digits",
            "--image": f"{registry.host}/models/digits",
            "--base": "scratch",
            "--kubeconfig": str(kubeconfig),
            "--github-repository": github.full_name,
        } | override
        args = [a for pair in options.items() for a in pair if pair[1] != "-"]
        result = cli("preflight", *args, *extra, "--json")
        data = result.json()
        checks = {c["name"]: c for c in data["checks"]}  # type: ignore[union-attr]
        return result, checks

    return run


def test_every_prerequisite_present_passes(
    preflight: Callable[..., Any], kube: FakeKubeApi
) -> None:
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
    # The deploy's verbs were asked for, on the kinds the overlay renders and on leases.
    asked = {(r["verb"], r["resource"]) for r in kube.reviews}
    assert {("patch", "deployments"), ("create", "deployments"), ("delete", "services")} <= asked
    assert ("update", "leases") in asked and ("list", "events") in asked
    assert kube.mutations() == [], "preflight changed something in the cluster"


def test_each_miss_is_reported_with_its_fix_and_exit_18(
    preflight: Callable[..., Any], kube: FakeKubeApi, github: FakeGitHub
) -> None:
    kube.denied = {("patch", "deployments.apps"), ("create", "leases.coordination.k8s.io")}
    github.token_permissions["deployments"] = "read"
    result, checks = preflight(**{"--sha256": "0" * 64})
    assert result.exit_code == PreflightError.exit_code == 18
    assert (
        not checks["archive"]["ok"] and "expected sha256:" + "0" * 64 in checks["archive"]["detail"]
    )
    permissions = checks["permissions"]
    assert not permissions["ok"]
    assert "patch deployments.apps" in permissions["detail"]
    assert "create leases.coordination.k8s.io" in permissions["detail"]
    assert "roles/container.developer" in permissions["fix"]
    assert not checks["GitHub deployments"]["ok"]
    assert "deployments: write" in checks["GitHub deployments"]["fix"]
    # The rest still ran and passed: one run shows every miss.
    assert checks["registry push"]["ok"] and checks["namespace"]["ok"]
    assert github.deployments == {} and kube.mutations() == []


def test_a_missing_namespace_and_unknown_base_are_named(
    preflight: Callable[..., Any], kube: FakeKubeApi, registry: RegistryServer
) -> None:
    kube.namespaces = set()
    result, checks = preflight(**{"--base": f"{registry.host}/mirror/tensorflow-serving:2.20.0"})
    assert result.exit_code == 18
    assert "kubectl create namespace tf-serving-staging" in checks["namespace"]["fix"]
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
