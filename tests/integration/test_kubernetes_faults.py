"""Failures a real API server will not produce on demand, on the fake Kubernetes API.

Everything else about the Kubernetes target runs on the real control plane
(test_kubernetes_target.py, test_kubernetes_rbac.py). The fake (tests/fakes/kube_api_server.py)
stays for what the real one cannot be made to do:

* kubelet events: kwok's kubelets emit none, so an image that cannot be pulled (and its
  "Failed to pull image" event) is the fake's;
* 409 storms: with ``force`` a real server-side apply does not conflict;
* 5xx from the API server, and an API server that keeps failing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scripts import errors
from tests.conftest import CLIResult
from tests.fakes.kube_api_server import FakeKubeApi

pytestmark = pytest.mark.integration
NS = "models"
GOOD_V1 = "registry.example/models/digits@sha256:" + "1" * 64
GOOD_V2 = "registry.example/models/digits@sha256:" + "2" * 64
PULL_FAILS = "registry.example/models/imagepull@sha256:" + "3" * 64


@pytest.fixture
def kube() -> Iterator[FakeKubeApi]:
    fake = FakeKubeApi().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def kcli(
    cli: Callable[..., CLIResult], kube: FakeKubeApi, tmp_path: Path
) -> Callable[..., CLIResult]:
    kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")

    def run(command: str, *args: str, image: str) -> CLIResult:
        return cli(
            command, "--target", "k8s", "--kubeconfig", str(kubeconfig), "--namespace", NS,
            "--poll-interval", "0.02", "--timeout", "20", "--json", "--overlay", "staging",
            "--model", "digits", "--image", image, *args,
        )  # fmt: skip

    return run


def test_an_image_that_cannot_be_pulled_is_named_with_the_kubelets_event(
    kcli: Callable[..., CLIResult], kube: FakeKubeApi
) -> None:
    assert kcli("deploy", image=GOOD_V1).exit_code == 0
    stable_before = kube.get("deployments", NS, "tf-serving")
    result = kcli("deploy", "--canary", image=PULL_FAILS)
    assert result.exit_code == errors.DeployError.exit_code
    error = result.json()["error"]
    assert isinstance(error, dict)
    assert "ProgressDeadlineExceeded" in str(error["message"]) or "progress deadline" in str(
        error["message"]
    )
    assert "ImagePullBackOff" in str(error["message"])
    assert "Failed to pull image" in str(error["message"])  # the event
    assert "cannot be pulled" in str(error["cause"])
    assert kube.get("deployments", NS, "tf-serving") == stable_before
    assert kube.get("leases", NS, "tf-release-pipeline-staging") is None


def test_apply_conflicts_are_retried(kcli: Callable[..., CLIResult], kube: FakeKubeApi) -> None:
    kube.conflicts["deployments/tf-serving-canary"] = 2
    result = kcli("deploy", "--canary", image=GOOD_V2)
    assert result.exit_code == 0, result.stderr
    assert kube.image(NS, "tf-serving-canary") == GOOD_V2


def test_api_server_outages_are_retried_then_reported(
    kcli: Callable[..., CLIResult], kube: FakeKubeApi
) -> None:
    kube.unavailable = 3  # a control plane upgrade: a few 503s
    assert kcli("deploy", "--canary", image=GOOD_V2).exit_code == 0
    kube.unavailable = 1000  # down for good
    result = kcli("deploy", "--canary", image=GOOD_V1)
    assert result.exit_code == errors.RemoteError.exit_code
    assert "kept failing" in str(result.json()["error"])
