"""`bench --target k8s` on the real control plane: bench objects under their own names,
the generator Job per step, the namespace guard, and the clean-up on cancel.

kwok plays the kubelets, so the bench Deployments' pods are only ever "Running"; behind
each bench Service's name the test puts a real model server (``python -m scripts
serve``) whose ``service_ms`` fault gives it a known capacity, as cluster DNS would, and
the tests' generator kubelet runs each step's generator pod with this checkout's program
(tests/controlplane/generator_kubelet.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.bench.api import BenchRequest, Progress, run_bench
from scripts.bench.results import Slo
from scripts.bench.slots import RUN_LABEL, slot_name
from scripts.config import Settings
from scripts.deploy.kube_api import ClusterConfig, KubeApi
from scripts.deploy.targets import TargetConfig
from scripts.errors import ConfigError
from scripts.loadtest.job_spec import GeneratorOptions
from tests.controlplane.cluster import ControlPlane
from tests.controlplane.generator_kubelet import GeneratorKubelet
from tests.integration.serving_fixtures import Server, running_server

pytestmark = [pytest.mark.integration, pytest.mark.controlplane]

IMAGE = "registry.test/models/digits@sha256:" + "2" * 64
GENERATOR_IMAGE = "registry.test/tf-loadgen@sha256:" + "1" * 64
RUN_ID = "b3nch0123456"
SERVICE_MS = 20.0  # the server behind the Service: 50 req/s


@pytest.fixture(scope="module")
def server(digits_export: Path) -> Iterator[Server]:
    with running_server(
        [
            f"--model_base_path={digits_export}",
            "--model_name=digits",
            f"--unsafe_fault_injection=service_ms={SERVICE_MS:g}",
        ]
    ) as running:
        yield running


@pytest.fixture
def api(control_plane: ControlPlane) -> Iterator[KubeApi]:
    client = KubeApi.connect(ClusterConfig(control_plane.kubeconfig, None, False))
    yield client
    client.close()


def _request(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> BenchRequest:
    return BenchRequest(
        model="digits",
        overlays=["local-1x500m"],
        out=tmp_path / "out",
        target=TargetConfig(
            kind="k8s",
            namespace=namespace,
            kubeconfig=control_plane.kubeconfig,
            timeout_s=60,
            poll_s=0.2,
        ),
        image=IMAGE,
        slo=Slo(p99_ms=100.0),
        quick=True,
        start_rps=40,
        job=GeneratorOptions(image=GENERATOR_IMAGE),
        run_id=RUN_ID,
    )


def _settings(tmp_path: Path) -> Settings:
    return Settings(cache_dir=tmp_path / "cache")


KINDS = (("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "ConfigMap"), ("batch/v1", "Job"))


def _left(api: KubeApi, namespace: str) -> list[str]:
    return [
        f"{kind}/{o['metadata']['name']}"
        for version, kind in KINDS
        for o in api.list(version, kind, namespace, labels=RUN_LABEL)
    ]


def test_bench_finds_the_capacity_behind_a_bench_service_and_leaves_nothing(
    control_plane: ControlPlane,
    k8s_namespace: str,
    server: Server,
    api: KubeApi,
    tmp_path: Path,
) -> None:
    name = slot_name("local-1x500m", RUN_ID)
    seen: list[dict[str, Any]] = []

    def progress(event: Progress) -> None:
        if event.state == "measuring" and not seen:  # deployed: look at it once
            seen.extend(api.list("apps/v1", "Deployment", k8s_namespace, labels=RUN_LABEL))

    hosts = {f"{name}.{k8s_namespace}.svc:8501": server.rest_url[7:]}
    with GeneratorKubelet(
        control_plane, k8s_namespace, hosts=hosts, workdir=tmp_path / "k"
    ) as pods:
        result = run_bench(_request(control_plane, k8s_namespace, tmp_path), progress,
                           _settings(tmp_path))  # fmt: skip
    assert pods.errors == []
    row = result.overlays[0]
    assert row.error == ""
    assert row.capacity_rps is not None, row.stopped
    assert abs(row.capacity_rps - 50.0) <= 5.0, row.capacity_rps
    # One generator Job per step and per recovery probe after a failed step, each ran.
    assert row.recovery_probes >= 1  # the SLO broke at least once
    assert len(pods.handled) == len(row.steps) + row.recovery_probes
    # The bench Deployment had its own name, labels and selector; nothing is left.
    assert [d["metadata"]["name"] for d in seen] == [name]
    assert seen[0]["spec"]["selector"]["matchLabels"]["track"] == "bench"
    assert _left(api, k8s_namespace) == []
    # kwok's nodes have no kubelet to proxy to: throttling is unknown, and says why.
    assert row.at_capacity is not None and row.at_capacity.throttled_ratio is None
    assert "cAdvisor" in row.at_capacity.throttling_note
    assert (tmp_path / "out" / "bench.json").is_file()
    # The nodes were read (cluster-scoped): their allocatable CPU holds the overlay.
    assert result.config["placement"] == "side by side"


def test_bench_refuses_a_namespace_that_holds_a_stable_deployment(
    control_plane: ControlPlane, k8s_namespace: str, api: KubeApi, tmp_path: Path
) -> None:
    stable = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "tf-serving", "labels": {"track": "stable"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"track": "stable"}},
            "template": {
                "metadata": {"labels": {"track": "stable"}},
                "spec": {"containers": [{"name": "c", "image": IMAGE}]},
            },
        },
    }
    api.create(stable, k8s_namespace)
    with pytest.raises(ConfigError, match="holds a stable Deployment"):
        run_bench(_request(control_plane, k8s_namespace, tmp_path), None, _settings(tmp_path))
    assert _left(api, k8s_namespace) == []  # refused before anything was created


def test_bench_refuses_the_namespace_an_overlay_serves_from(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="stable track"):
        run_bench(_request(control_plane, "default", tmp_path), None, _settings(tmp_path))


def test_a_cancelled_bench_removes_its_objects(
    control_plane: ControlPlane, k8s_namespace: str, api: KubeApi, tmp_path: Path
) -> None:
    """GitHub's cancel arrives as SIGINT/SIGTERM (KeyboardInterrupt in `bench`)."""
    deployed: list[str] = []

    def cancel_when_measuring(event: Progress) -> None:
        if event.state == "measuring":
            deployed.extend(_left(api, k8s_namespace))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_bench(
            _request(control_plane, k8s_namespace, tmp_path),
            cancel_when_measuring,
            _settings(tmp_path),
        )
    assert any(d.startswith("Deployment/") for d in deployed)
    assert _left(api, k8s_namespace) == []
