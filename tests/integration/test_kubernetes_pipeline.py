"""`run --target k8s` on the real control plane: the pipeline's own handling of a canary
that never becomes ready, and of one it cannot load-test, with real controllers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from scripts import errors
from scripts.deploy.kube_api import ClusterConfig, KubeApi
from tests.conftest import CLIResult
from tests.controlplane.cluster import ControlPlane
from tests.integration.test_kubernetes_target import fault_tree

pytestmark = [pytest.mark.integration, pytest.mark.controlplane]


@pytest.fixture
def krun(
    cli: Callable[..., CLIResult],
    control_plane: ControlPlane,
    k8s_namespace: str,
    packaged: dict[str, object],
    tmp_path: Path,
) -> Callable[..., CLIResult]:
    def run(*extra: str | Path) -> CLIResult:
        return cli(
            "run", "--source", str(packaged["path"]), "--workdir", tmp_path / "work",
            "--cache-dir", tmp_path / "cache", "--target", "k8s",
            "--kubeconfig", control_plane.kubeconfig, "--namespace", k8s_namespace,
            "--overlay", "staging", "--poll-interval", "0.2", "--timeout", "60",
            "--duration", "2", "--warmup", "0", "--json", *extra,
        )  # fmt: skip

    return run


def test_a_canary_that_never_becomes_ready_is_removed_and_diagnosed(
    krun: Callable[..., CLIResult], control_plane: ControlPlane, k8s_namespace: str, tmp_path: Path
) -> None:
    tree = fault_tree(
        tmp_path,
        {
            "test.tf-release-pipeline.dev/fail": "true",
            "test.tf-release-pipeline.dev/exit-code": "1",
            "test.tf-release-pipeline.dev/message": "failed to load the model",
        },
        deadline_s=4,
    )
    result = krun("--kustomize-dir", tree)
    assert result.exit_code == errors.DeployError.exit_code, result.stdout
    assert "failed to load the model" in str(result.json()["error"])
    api = KubeApi.connect(ClusterConfig(control_plane.kubeconfig, None, False))
    # Removed before the error was reported: no Deployment, no pods left terminating.
    assert api.get("apps/v1", "Deployment", k8s_namespace, "digits-serving-canary") is None
    assert api.list("v1", "Pod", k8s_namespace, labels="track=canary") == []
    record = (tmp_path / "work" / "run.json").read_text()
    assert '"name": "rollback"' in record


def test_a_canary_the_runner_cannot_reach_directly_is_not_judged_and_is_rolled_back(
    krun: Callable[..., CLIResult], control_plane: ControlPlane, k8s_namespace: str
) -> None:
    # --generator direct: Locust on the runner. The Services' cluster addresses do not
    # resolve outside the cluster: exit 52, no verdict, the canary removed, and the fix
    # points at the generator Job (the default; tests/integration/test_kubernetes_loadgen.py).
    result = krun("--generator", "direct")
    assert result.exit_code == 52, result.stdout
    data = result.json()
    stages = {s["name"]: s for s in data["stages"]}  # type: ignore[union-attr]
    assert stages["deploy"]["result"]["rollout"] == "digits-serving-canary successfully rolled out"
    assert stages["loadtest"]["error"]["kind"] == "remote"
    assert f"digits-serving-canary.{k8s_namespace}.svc" in stages["loadtest"]["error"]["message"]
    assert "--generator job" in stages["loadtest"]["error"]["fix"]
    assert data["action"] == "rolled back"
    api = KubeApi.connect(ClusterConfig(control_plane.kubeconfig, None, False))
    assert api.get("apps/v1", "Deployment", k8s_namespace, "digits-serving-canary") is None


def test_without_a_generator_image_the_run_says_how_to_get_one(
    krun: Callable[..., CLIResult], control_plane: ControlPlane, k8s_namespace: str
) -> None:
    # No --generator-image, no --generator-repository, and a local image layout (so no
    # registry to put one beside): the in-cluster load test cannot start.
    result = krun()
    assert result.exit_code == 52, result.stdout
    error = {s["name"]: s for s in result.json()["stages"]}["loadtest"]["error"]  # type: ignore[union-attr]
    assert error["kind"] == "config"
    assert "needs a generator image" in error["message"]
    assert "python -m scripts generator-image" in error["fix"]
    assert result.json()["action"] == "rolled back"
