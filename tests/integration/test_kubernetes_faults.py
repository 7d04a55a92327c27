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
import yaml

from scripts import errors
from tests.conftest import CLIResult, QuickRetry
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
    stable_before = kube.get("deployments", NS, "digits-serving")
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
    assert kube.get("deployments", NS, "digits-serving") == stable_before
    assert kube.get("leases", NS, "tf-release-pipeline-digits-staging") is None


def test_apply_conflicts_are_retried(kcli: Callable[..., CLIResult], kube: FakeKubeApi) -> None:
    kube.conflicts["deployments/digits-serving-canary"] = 2
    result = kcli("deploy", "--canary", image=GOOD_V2)
    assert result.exit_code == 0, result.stderr
    assert kube.image(NS, "digits-serving-canary") == GOOD_V2


def test_api_server_outages_are_retried_then_reported(
    kcli: Callable[..., CLIResult], kube: FakeKubeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client's 6 attempts, with milliseconds between them: the default 0.5 s doubling
    # only slept here (15.5 s for the outage), and how long it waits is not under test.
    monkeypatch.setattr("scripts.deploy.kube_api.RetryPolicy", QuickRetry)
    kube.unavailable = 3  # a control plane upgrade: a few 503s
    assert kcli("deploy", "--canary", image=GOOD_V2).exit_code == 0
    kube.unavailable = 1000  # down for good
    result = kcli("deploy", "--canary", image=GOOD_V1)
    assert result.exit_code == errors.RemoteError.exit_code
    assert "kept failing" in str(result.json()["error"])


def test_a_log_stream_cut_mid_body_is_never_read_as_results(tmp_path: Path) -> None:
    # The real API server cannot be made to drop a connection mid-body on demand: this
    # one answers pods/log with a Content-Length it never delivers, then hangs up.
    import socket
    import threading

    from scripts.deploy.jobs import JobRun, PodEnd
    from scripts.deploy.kube_api import ClusterConfig, KubeApi
    from scripts.deploy.kubernetes_job import KubernetesJobRunner
    from scripts.errors import IntegrityError
    from scripts.loadtest.generator import GeneratorPlan
    from scripts.loadtest.in_cluster import _frames
    from scripts.loadtest.job_spec import GeneratorJob
    from scripts.loadtest.locust_process import Traffic
    from scripts.transfer import RetryPolicy

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    served: list[str] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                served.append(conn.recv(65536).split(b"\r\n", 1)[0].decode())
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n"
                    b'\r\nTFRP-RESULTS-BEGIN {"v": 1, "lines": 40'
                )

    threading.Thread(target=serve, daemon=True).start()
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1", "kind": "Config", "current-context": "cut",
                "clusters": [{"name": "cut", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "cut", "context": {"cluster": "cut", "user": "u"}}],
            }
        )
    )  # fmt: skip
    api = KubeApi.connect(
        ClusterConfig(path, None, False), RetryPolicy(attempts=2, initial_backoff_s=0.01)
    )
    try:
        runner = KubernetesJobRunner(api, "models")
        logs = runner._logs([PodEnd("gen-0", 0, "Succeeded", "Completed", 0)])
    finally:
        api.close()
        listener.close()
    assert logs == {}  # a cut body is not a log
    assert len(served) == 2 and "/pods/gen-0/log" in served[0]  # retried, then given up
    run = JobRun("gen", True, logs=logs)
    plan = GeneratorPlan(Traffic({"canary": ["http://c:8501"]}, "digits", "rest", 1, 1, 1, 0), None)
    job = GeneratorJob("gen", "models", [], plan)
    with pytest.raises(IntegrityError, match="its log could not be read"):
        _frames(job, run)
