"""Deploy, promote, roll back and lock against a fake Kubernetes API server on loopback.

No real API server can run here (README: "What the tests fake"); the fake speaks the
real shapes, progresses Deployment status over time and fails like a cluster does.
"""

from __future__ import annotations

import time
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
CRASHES = "registry.example/models/crashloop@sha256:" + "4" * 64
OOM = "registry.example/models/oomkill@sha256:" + "5" * 64


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[FakeKubeApi]:
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

    def run(command: str, *args: str, image: str | None = None) -> CLIResult:
        base = [
            command,
            "--target",
            "k8s",
            "--kubeconfig",
            str(kubeconfig),
            "--namespace",
            NS,
            "--poll-interval",
            "0.02",
            "--timeout",
            "20",
            "--json",
        ]
        if image is not None:
            base += ["--overlay", "staging", "--model", "digits", "--image", image]
        return cli(*base, *args)

    return run


def test_first_deploy_creates_the_stable_track_with_server_side_apply(
    kcli: Callable[..., CLIResult], kube: FakeKubeApi
) -> None:
    result = kcli("deploy", image=GOOD_V1)
    assert result.exit_code == 0, result.stderr
    assert result.json()["rollout"] == "tf-serving successfully rolled out"
    assert kube.image(NS, "tf-serving") == GOOD_V1
    assert kube.get("deployments", NS, "tf-serving-canary") is None
    deployment = kube.get("deployments", NS, "tf-serving")
    assert deployment is not None
    assert deployment["metadata"]["managedFields"][0]["manager"] == "tf-release-pipeline"
    patches = [r for r in kube.requests if r.startswith("PATCH")]
    assert patches[0].startswith("PATCH /api/v1/namespaces/models/configmaps/")  # config first
    assert kube.get("leases", NS, "tf-release-pipeline-staging") is None  # lock released


def test_canary_runs_beside_stable_and_never_touches_it(
    kcli: Callable[..., CLIResult], kube: FakeKubeApi
) -> None:
    assert kcli("deploy", image=GOOD_V1).exit_code == 0
    stable_before = kube.get("deployments", NS, "tf-serving")
    kube.requests.clear()
    result = kcli("deploy", "--canary", image=GOOD_V2)
    assert result.exit_code == 0, result.stderr
    assert kube.image(NS, "tf-serving-canary") == GOOD_V2
    assert kube.get("deployments", NS, "tf-serving") == stable_before
    touched = [r for r in kube.mutations() if "/deployments/tf-serving" in r]
    assert all(r.endswith("tf-serving-canary") for r in touched), touched
    # The canary's in-cluster Service addresses, for the load test (REST and gRPC).
    assert result.json()["endpoints"] == {
        "canary": [f"http://tf-serving-canary.{NS}.svc:8501"],
        "canary_grpc": [f"tf-serving-canary.{NS}.svc:8500"],
    }
    status = kcli("status").json()
    assert status["stable"]["image"] == GOOD_V1  # type: ignore[index]
    assert status["canary"]["image"] == GOOD_V2  # type: ignore[index]
    assert status["stable"]["endpoints"] == [f"http://tf-serving.{NS}.svc:8501"]  # type: ignore[index]


def test_promote_moves_stable_records_previous_and_removes_canary(
    kcli: Callable[..., CLIResult], kube: FakeKubeApi
) -> None:
    assert kcli("deploy", image=GOOD_V1).exit_code == 0
    assert kcli("deploy", "--canary", image=GOOD_V2).exit_code == 0
    result = kcli("promote", image=GOOD_V2)
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["previous_image"] == GOOD_V1
    assert kube.image(NS, "tf-serving") == GOOD_V2
    deployment = kube.get("deployments", NS, "tf-serving")
    assert deployment is not None
    annotations = deployment["metadata"]["annotations"]
    assert annotations["tf-release-pipeline.dev/previous-image"] == GOOD_V1
    assert kube.get("deployments", NS, "tf-serving-canary") is None
    assert kube.get("services", NS, "tf-serving-canary") is None


def test_promote_refuses_an_untested_image(
    kcli: Callable[..., CLIResult], kube: FakeKubeApi
) -> None:
    assert kcli("deploy", image=GOOD_V1).exit_code == 0
    no_canary = kcli("promote", image=GOOD_V2)
    assert no_canary.exit_code == errors.DeployError.exit_code
    assert "no canary" in str(no_canary.json()["error"])
    assert kcli("deploy", "--canary", image=GOOD_V2).exit_code == 0
    other = kcli("promote", image="registry.example/models/digits@sha256:" + "9" * 64)
    assert other.exit_code == errors.DeployError.exit_code
    assert kube.image(NS, "tf-serving") == GOOD_V1


def test_rollback_removes_the_canary_and_leaves_stable(
    kcli: Callable[..., CLIResult], kube: FakeKubeApi
) -> None:
    assert kcli("deploy", image=GOOD_V1).exit_code == 0
    assert kcli("deploy", "--canary", image=GOOD_V2).exit_code == 0
    result = kcli("rollback")
    assert result.exit_code == 0, result.stderr
    assert result.json()["action"] == "canary-removed"
    assert kube.get("deployments", NS, "tf-serving-canary") is None
    assert kube.image(NS, "tf-serving") == GOOD_V1


def test_rollback_after_a_bad_promotion_restores_the_previous_digest_once(
    kcli: Callable[..., CLIResult], kube: FakeKubeApi
) -> None:
    assert kcli("deploy", image=GOOD_V1).exit_code == 0
    assert kcli("deploy", "--canary", image=GOOD_V2).exit_code == 0
    assert kcli("promote", image=GOOD_V2).exit_code == 0
    restored = kcli("rollback")
    assert restored.exit_code == 0, restored.stderr
    assert restored.json()["action"] == "restored"
    assert kube.image(NS, "tf-serving") == GOOD_V1
    again = kcli("rollback")
    assert again.json()["action"] == "none"  # no flip-flop back to the bad image
    assert kube.image(NS, "tf-serving") == GOOD_V1


def test_failed_canary_reports_why_and_stable_is_untouched(
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


@pytest.mark.parametrize(
    ("image", "reason", "hint"),
    [
        (CRASHES, "CrashLoopBackOff", "keeps crashing"),
        (OOM, "OOMKilled", "out of memory"),
    ],
)
def test_rollout_that_never_becomes_ready_times_out_with_the_reason(
    kcli: Callable[..., CLIResult], kube: FakeKubeApi, image: str, reason: str, hint: str
) -> None:
    kube.deadline_s = 60  # the deadline will not be reached: our --timeout is
    result = kcli("deploy", "--canary", "--timeout", "0.5", image=image)
    assert result.exit_code == errors.PipelineTimeoutError.exit_code
    error = result.json()["error"]
    assert isinstance(error, dict)
    assert reason in str(error["message"]) and hint in str(error["cause"])


def test_one_deploy_at_a_time_and_stale_leases_expire(
    kcli: Callable[..., CLIResult], kube: FakeKubeApi
) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    kube.objects[("coordination.k8s.io/v1", "leases", NS, "tf-release-pipeline-staging")] = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": "tf-release-pipeline-staging",
            "namespace": NS,
            "resourceVersion": "7",
        },
        "spec": {
            "holderIdentity": "github-run-42/abc",
            "leaseDurationSeconds": 900,
            "acquireTime": now,
            "renewTime": now,
        },
    }
    locked = kcli("deploy", "--canary", image=GOOD_V2)
    assert locked.exit_code == errors.LockError.exit_code
    assert "github-run-42/abc" in str(locked.json()["error"])
    assert kube.get("deployments", NS, "tf-serving-canary") is None

    stale = kube.get("leases", NS, "tf-release-pipeline-staging")
    assert stale is not None
    stale["spec"]["renewTime"] = "2020-01-01T00:00:00.000000Z"
    taken = kcli("deploy", "--canary", image=GOOD_V2)
    assert taken.exit_code == 0, taken.stderr
    assert "taking over the expired deploy lease" in taken.stderr


def test_apply_conflicts_are_retried(kcli: Callable[..., CLIResult], kube: FakeKubeApi) -> None:
    kube.conflicts["deployments/tf-serving-canary"] = 2
    result = kcli("deploy", "--canary", image=GOOD_V2)
    assert result.exit_code == 0, result.stderr
    assert kube.image(NS, "tf-serving-canary") == GOOD_V2


def test_rejected_credentials_are_an_auth_error(
    kcli: Callable[..., CLIResult], kube: FakeKubeApi
) -> None:
    kube.reject_token = True
    result = kcli("deploy", "--canary", image=GOOD_V2)
    assert result.exit_code == errors.AuthError.exit_code
    assert "get-gke-credentials" in str(result.json()["error"])


def test_dry_run_shows_a_diff_and_changes_nothing(
    kcli: Callable[..., CLIResult], kube: FakeKubeApi
) -> None:
    assert kcli("deploy", image=GOOD_V1).exit_code == 0
    before = {k: v["metadata"]["resourceVersion"] for k, v in kube.objects.items()}
    result = kcli("deploy", "--dry-run", image=GOOD_V2)
    assert result.exit_code == 0, result.stderr
    diff = str(result.json()["diff"])
    assert f"-        image: {GOOD_V1}" in diff and f"+        image: {GOOD_V2}" in diff
    assert {k: v["metadata"]["resourceVersion"] for k, v in kube.objects.items()} == before
    assert kube.image(NS, "tf-serving") == GOOD_V1
