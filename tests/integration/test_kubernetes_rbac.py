"""RBAC on the real API server: the Role the docs ship (kustomize/rbac) is enough to
deploy, promote and roll back, and nothing more; preflight's SelfSubjectAccessReview
answers agree with what the API server then allows."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scripts import errors
from scripts.deploy.kube_api import ClusterConfig, KubeApi
from tests.conftest import CLIResult
from tests.controlplane.cluster import ControlPlane
from tests.controlplane.rbac import bind

pytestmark = [pytest.mark.integration, pytest.mark.controlplane]
V1 = "registry.example/models/digits@sha256:" + "1" * 64
V2 = "registry.example/models/digits@sha256:" + "2" * 64


@pytest.fixture
def as_user(cli: Callable[..., CLIResult], k8s_namespace: str) -> Callable[..., CLIResult]:
    def run(kubeconfig: Path, command: str, *args: str, image: str | None = None) -> CLIResult:
        base = [
            command, "--target", "k8s", "--kubeconfig", str(kubeconfig),
            "--namespace", k8s_namespace, "--overlay", "staging",
            "--poll-interval", "0.2", "--timeout", "60", "--json",
        ]  # fmt: skip
        if image is not None:
            base += ["--model", "digits", "--image", image]
        return cli(*base, *args)

    return run


def test_the_shipped_role_can_deliver_and_nothing_more(
    control_plane: ControlPlane, k8s_namespace: str, as_user: Callable[..., CLIResult]
) -> None:
    deployer = bind(
        control_plane, k8s_namespace, "tf-release-pipeline@acme-ml.iam.gserviceaccount.com"
    )
    assert as_user(deployer, "deploy", image=V1).exit_code == 0
    assert as_user(deployer, "deploy", "--canary", image=V2).exit_code == 0
    assert as_user(deployer, "status").json()["canary"]["image"] == V2  # type: ignore[index]
    promoted = as_user(deployer, "promote", image=V2)
    assert promoted.exit_code == 0, promoted.stderr
    assert as_user(deployer, "rollback").json()["action"] == "restored"
    assert as_user(deployer, "teardown").exit_code == 0
    # Anything more is refused: secrets, other namespaces, the namespace itself.
    api = KubeApi.connect(ClusterConfig(deployer, None, False))
    for method, path in (
        ("GET", f"/api/v1/namespaces/{k8s_namespace}/secrets"),
        ("GET", "/api/v1/namespaces/default/configmaps"),
        ("DELETE", f"/api/v1/namespaces/{k8s_namespace}"),
        ("GET", "/api/v1/nodes"),
    ):
        with pytest.raises(errors.AuthError, match=r"403|refused"):
            api.request(method, path)


def test_preflight_agrees_with_what_the_api_server_then_allows(
    control_plane: ControlPlane,
    k8s_namespace: str,
    as_user: Callable[..., CLIResult],
    cli: Callable[..., CLIResult],
    packaged: dict[str, object],
    tmp_path: Path,
) -> None:
    def preflight(kubeconfig: Path) -> tuple[int, dict[str, dict[str, Any]]]:
        result = cli(
            "preflight", "--target", "k8s", "--source", str(packaged["path"]),
            "--sha256", str(packaged["sha256"]), "--overlay", "staging", "--model", "digits",
            "--image", f"oci:{tmp_path / 'layout'}", "--base", "scratch",
            "--kubeconfig", str(kubeconfig), "--namespace", k8s_namespace, "--json",
        )  # fmt: skip
        return result.exit_code, {c["name"]: c for c in result.json()["checks"]}  # type: ignore[union-attr]

    full = bind(control_plane, k8s_namespace, "full-deployer")
    code, checks = preflight(full)
    assert code == 0, [c for c in checks.values() if not c["ok"]]
    assert "verbs the deploy uses are allowed" in checks["permissions"]["detail"]
    assert as_user(full, "deploy", "--canary", image=V2).exit_code == 0  # ... and they are

    weak = bind(control_plane, k8s_namespace, "weak-deployer", drop=("create", "configmaps"))
    code, checks = preflight(weak)
    assert code == errors.PreflightError.exit_code
    assert checks["permissions"]["detail"].startswith("the identity may not: create configmaps")
    assert "roles/container.developer" in checks["permissions"]["fix"]
    # ... and the API server indeed refuses that deploy (a new ConfigMap must be created).
    refused = as_user(weak, "deploy", image=V1)
    assert refused.exit_code == errors.AuthError.exit_code
    # ... on a verb preflight named (the rule that lost `create` also covers services).
    message = str(refused.json()["error"]["message"])  # type: ignore[index]
    match = re.search(r'cannot (\w+) resource "(\w+)"', message)
    assert match is not None, message
    assert f"{match[1]} {match[2]}" in checks["permissions"]["detail"]

    code, checks = preflight(control_plane.identity("nobody"))
    assert code == errors.PreflightError.exit_code
    assert "get deployments.apps" in checks["permissions"]["detail"]


def test_preflight_names_a_missing_namespace(
    control_plane: ControlPlane, cli: Callable[..., CLIResult], packaged: dict[str, object]
) -> None:
    result = cli(
        "preflight", "--target", "k8s", "--source", str(packaged["path"]), "--overlay", "staging",
        "--model", "digits", "--image", "oci:/tmp/unused", "--base", "scratch",
        "--kubeconfig", str(control_plane.kubeconfig), "--namespace", "tf-serving-nowhere",
        "--json",
    )  # fmt: skip
    checks = {c["name"]: c for c in result.json()["checks"]}  # type: ignore[union-attr]
    assert result.exit_code == errors.PreflightError.exit_code
    assert checks["cluster"]["ok"] and "v1.37.2" in checks["cluster"]["detail"]
    assert "kubectl create namespace tf-serving-nowhere" in checks["namespace"]["fix"]
