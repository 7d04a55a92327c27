"""The in-cluster load test on the real control plane: the generator Job through the real
Job controller and scheduler, kwok as the kubelets, the results back through ``pods/log``
as the API server serves them.

kwok runs no containers, so the generator's pods are run by the tests' generator kubelet
(tests/controlplane/generator_kubelet.py): the pod's own plan and index, this checkout's
generator program, its output served as the pod's log by kwok. Behind the Services' names
it puts two real model servers (``python -m scripts serve`` with the digits model), as
cluster DNS would. These are the same commands kind.yml runs on a real cluster.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.deploy.kube_api import ClusterConfig, KubeApi
from scripts.loadtest.generator import GeneratorPlan
from scripts.loadtest.job_spec import GeneratorJob, GeneratorOptions, build_job
from scripts.loadtest.locust_process import Traffic
from tests.conftest import REPO_ROOT, CLIResult
from tests.controlplane.cluster import ControlPlane
from tests.controlplane.generator_kubelet import GeneratorKubelet, PodScript
from tests.fakes.savedmodel_factory import write_saved_model
from tests.integration.serving_fixtures import Server, running_server

pytestmark = [pytest.mark.integration, pytest.mark.controlplane]

GENERATOR_IMAGE = "registry.test/tf-loadgen@sha256:" + "1" * 64
GATE = REPO_ROOT / "tests" / "data" / "gate_mechanics.yaml"
LOAD = ("--duration", "5", "--warmup", "0", "--rate", "50", "--users", "2")  # judged: ≥ 200
SHORT = ("--duration", "2", "--warmup", "0", "--rate", "40", "--users", "2")  # not judged
SHORT_SAMPLES = 64  # 80 % of SHORT's 2 s × 40 req/s: the share LOAD's checks ask (200 of 250)


@pytest.fixture(scope="module")
def servers(digits_export: Path) -> Iterator[dict[str, Server]]:
    """What the Services lead to: the stable, canary and fresh baseline model servers."""
    args = [f"--model_base_path={digits_export}", "--model_name=digits"]
    with (
        running_server(args) as stable,
        running_server(args) as canary,
        running_server(args) as baseline,
    ):
        yield {"stable": stable, "canary": canary, "baseline": baseline}


@pytest.fixture
def api(control_plane: ControlPlane) -> Iterator[KubeApi]:
    client = KubeApi.connect(ClusterConfig(control_plane.kubeconfig, None, False))
    yield client
    client.close()


@pytest.fixture
def kubelet(
    control_plane: ControlPlane, k8s_namespace: str, servers: dict[str, Server], tmp_path: Path
) -> Callable[..., contextlib.AbstractContextManager[GeneratorKubelet]]:
    def start(pod_network: bool = False, **scripts: PodScript) -> GeneratorKubelet:
        return GeneratorKubelet(
            control_plane,
            k8s_namespace,
            # Each track's two pods → two processes (its own and stable's: the same model)
            track_hosts={
                track: [servers[track].rest_url[7:], servers["stable"].rest_url[7:]]
                for track in ("canary", "baseline")
            }
            if pod_network
            else {},
            hosts={
                f"digits-serving-canary.{k8s_namespace}.svc:8501": servers["canary"].rest_url[7:],
                f"digits-serving.{k8s_namespace}.svc:8501": servers["stable"].rest_url[7:],
                f"digits-serving-baseline.{k8s_namespace}.svc:8501": (
                    servers["baseline"].rest_url[7:]
                ),
            },
            workdir=tmp_path / "kubelet",
            scripts={int(k.removeprefix("index")): v for k, v in scripts.items()},
        )

    return start


def release(tmp_path: Path, cli: Callable[..., CLIResult], version: int) -> Path:
    model = write_saved_model(tmp_path / "export" / "digits" / str(version))
    result = cli(
        "package", model, "--name", "digits", "--version", str(version),
        "--out", tmp_path / "release", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return Path(str(result.json()["path"]))


@pytest.fixture
def krun(
    cli: Callable[..., CLIResult],
    control_plane: ControlPlane,
    k8s_namespace: str,
    tmp_path: Path,
) -> Callable[..., CLIResult]:
    def run(
        version: int, *extra: str | Path, load: tuple[str, ...] = LOAD, overlay: str = "staging"
    ) -> CLIResult:
        return cli(
            "run", "--source", release(tmp_path, cli, version),
            "--workdir", tmp_path / f"work-{version}", "--cache-dir", tmp_path / "cache",
            "--target", "k8s", "--kubeconfig", control_plane.kubeconfig,
            "--namespace", k8s_namespace, "--overlay", overlay, "--poll-interval", "0.2",
            "--timeout", "60", *load, "--slo", GATE, "--generator-image", GENERATOR_IMAGE,
            "--json", *extra,
        )  # fmt: skip

    return run


def loadtest_tree(tmp_path: Path, *, annotations: dict[str, str] | None = None,
                  deadline_s: int | None = None) -> Path:  # fmt: skip
    """A copy of kustomize/ whose generator Job carries kwok fault annotations or a
    shorter start-up allowance (the base's activeDeadlineSeconds)."""
    tree = tmp_path / "kustomize"
    if not tree.exists():
        shutil.copytree(REPO_ROOT / "kustomize", tree)
    path = tree / "loadtest" / "kustomization.yaml"
    data = yaml.safe_load(path.read_text())
    spec: dict[str, Any] = {}
    if deadline_s is not None:
        spec["activeDeadlineSeconds"] = deadline_s
    if annotations:
        spec["template"] = {"metadata": {"annotations": annotations}}
    data.setdefault("patches", []).append(
        {
            "target": {"kind": "Job"},
            "patch": yaml.safe_dump(
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": {"name": "any"},
                    "spec": spec,
                }
            ),
        }
    )
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return tree


def stages(result: CLIResult) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in result.json()["stages"]}  # type: ignore[union-attr]


def assert_no_generator_left(api: KubeApi, namespace: str) -> None:
    assert api.list("batch/v1", "Job", namespace) == []
    assert api.list("v1", "Service", namespace, labels="app.kubernetes.io/component=loadgen") == []


def small_job(namespace: str, run_id: str, workers: int = 0) -> GeneratorJob:
    """A generator Job for one second of load (its objects, for tests that create them)."""
    plan = GeneratorPlan(Traffic({"canary": ["http://x:8501"]}, "digits", "rest", 1, 1, 1, 0), None)
    return build_job(plan, GeneratorOptions(workers=workers), image=GENERATOR_IMAGE,
                     model="digits", namespace=namespace, run_id=run_id)  # fmt: skip


# -- the whole pipeline -------------------------------------------------------------------------
def test_run_goes_canary_in_cluster_load_test_gate_promote_twice(
    krun: Callable[..., CLIResult],
    kubelet: Callable[..., GeneratorKubelet],
    api: KubeApi,
    k8s_namespace: str,
    tmp_path: Path,
) -> None:
    with kubelet() as pods:
        first = krun(1)
        # v2 with a master and two workers: one Indexed Job of three pods.
        second = krun(2, "--workers", "2")
    assert pods.errors == []
    assert first.exit_code == 0, first.stdout
    assert first.json()["action"] == "promoted"
    assert second.exit_code == 0, second.stdout
    data = second.json()
    assert data["action"] == "promoted"
    assert data["outcome"] == "pass"
    # The pods really ran and their results came back through the API server.
    assert sorted(pods.handled.values()) == [0, 0, 0, 0]
    raw = tmp_path / "work-2" / "loadtest" / "raw"
    job = yaml.safe_load((raw / "job.json").read_text())
    assert [p["index"] for p in job["pods"]] == [0, 1, 2]
    assert all(p["reason"] == "Completed" for p in job["pods"])
    for index in range(3):
        assert "TFRP-RESULTS-BEGIN" in (raw / f"pod-{index}.log").read_text()
    # Raw samples merge exactly: the gate's counts are the workers' rows, to the row.
    loadtest = stages(second)["loadtest"]["result"]
    workers_rows = sum(len(p.read_text().splitlines()) - 1 for p in raw.glob("samples-[12]-*.csv"))
    measured_rows = sum(
        len((tmp_path / "work-2" / "loadtest" / t / "samples.csv").read_text().splitlines()) - 1
        for t in ("canary", "baseline")
    )
    assert loadtest["canary"]["samples"] + loadtest["baseline"]["samples"] == measured_rows
    assert 0 < measured_rows <= workers_rows
    assert loadtest["baseline"]["samples"] >= 200
    # The canary was compared with the fresh baseline, never with the stable pods.
    assert loadtest["baseline"]["endpoints"] == [
        f"http://digits-serving-baseline.{k8s_namespace}.svc:8501"
    ]
    # The Job and its Service are gone; the stable track runs v2; the baseline went.
    assert api.get("apps/v1", "Deployment", k8s_namespace, "digits-serving-baseline") is None
    assert_no_generator_left(api, k8s_namespace)
    stable = api.get("apps/v1", "Deployment", k8s_namespace, "digits-serving")
    assert stable is not None
    digest = str(data["image"]).rsplit("@", 1)[1]
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"].endswith("@" + digest)


def test_tracks_of_several_pods_are_loaded_pod_by_pod_and_judged_per_pod(
    krun: Callable[..., CLIResult],
    kubelet: Callable[..., GeneratorKubelet],
    servers: dict[str, Server],
    api: KubeApi,
    k8s_namespace: str,
    tmp_path: Path,
) -> None:
    """local-2x250m: two pods per track. The generator is given each canary and fresh
    baseline pod's own address (what their Services select, Ready), every sample names
    its pod, and the gate takes each block's track value as the median of its pods."""
    with kubelet(pod_network=True) as pods:
        first = krun(1, overlay="local-2x250m")
        second = krun(2, overlay="local-2x250m")
    assert pods.errors == []
    assert first.exit_code == 0, first.stdout
    assert second.exit_code == 0, second.stdout
    assert second.json()["outcome"] == "pass"
    loadtest = stages(second)["loadtest"]["result"]
    deployed = stages(second)["deploy"]["result"]["endpoints"]
    for track in ("canary", "baseline"):
        endpoints = loadtest[track]["endpoints"]
        assert len(endpoints) == 2 and endpoints == deployed[track]
        assert all(e.startswith("http://") and ".svc" not in e for e in endpoints)
        # The samples name the pods' processes (the test's kubelet stands in for the pod
        # network): the load went round both.
        samples = (tmp_path / "work-2" / "loadtest" / track / "samples.csv").read_text()
        seen = {line.split(",")[2] for line in samples.splitlines()[1:]}
        assert seen == {servers[track].rest_url, servers["stable"].rest_url}
    assert set(deployed["canary"]).isdisjoint(deployed["baseline"])
    row = next(
        r for r in stages(second)["gate"]["result"]["rows"] if r["metric"] == "latency_vs_baseline"
    )
    assert "2 canary and 2 baseline pod(s)" in row["reason"], row["reason"]
    assert api.get("apps/v1", "Deployment", k8s_namespace, "digits-serving-baseline") is None
    assert_no_generator_left(api, k8s_namespace)


# -- failure modes: each rolls back with its reason, and leaves no Job ---------------------------
FAILURES = {
    "image-pull": (
        {"annotations": {"test.tf-release-pipeline.dev/image-pull": "fail"}}, {},
        "cannot be pulled (ErrImagePull",
    ),
    "oom-killed": (
        {}, {"index0": PodScript("fail", 137, "OOMKilled", "memory limit reached")}, "OOMKilled",
    ),
    "evicted": ({}, {"index0": PodScript("evict")}, "Evicted"),
    "deadline": ({"deadline_s": 2}, {"index0": PodScript("hold")}, "exceeded its deadline"),
    "truncated": (
        {}, {"index0": PodScript(log_filter=lambda text: text[: len(text) * 2 // 3])},
        "truncated",
    ),
    "corrupt": (
        {},
        {"index0": PodScript(log_filter=lambda text: text.replace("TFRP-R 0 K", "TFRP-R 0 L", 1)
                             .replace("TFRP-R 0 A", "TFRP-R 0 B", 1))},
        "checksum",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", FAILURES, ids=list(FAILURES))
def test_a_failed_generator_rolls_back_with_its_reason(
    case: str,
    krun: Callable[..., CLIResult],
    kubelet: Callable[..., GeneratorKubelet],
    api: KubeApi,
    k8s_namespace: str,
    tmp_path: Path,
) -> None:
    tree_options, scripts, reason = FAILURES[case]
    extra: list[str | Path] = []
    if tree_options:
        extra = ["--kustomize-dir", loadtest_tree(tmp_path, **tree_options)]  # type: ignore[arg-type]
    with kubelet(**scripts) as pods:
        result = krun(1, *extra, load=SHORT)
    assert pods.errors == []
    assert result.exit_code == 52, result.stdout
    data = result.json()
    assert data["action"] == "rolled back"
    assert reason in " ".join(data["reasons"]), data["reasons"]
    assert "rollback" in stages(result)
    assert api.get("apps/v1", "Deployment", k8s_namespace, "digits-serving-canary") is None
    assert_no_generator_left(api, k8s_namespace)


def test_workers_that_never_connect_fail_the_run(
    krun: Callable[..., CLIResult],
    kubelet: Callable[..., GeneratorKubelet],
    api: KubeApi,
    k8s_namespace: str,
) -> None:
    with kubelet(index1=PodScript("hold")) as pods:
        result = krun(1, "--workers", "1", "--workers-wait", "3", load=SHORT)
    assert pods.errors == []
    assert result.exit_code == 52, result.stdout
    reasons = " ".join(result.json()["reasons"])
    assert "not all 1 workers connected to the master within 3 s" in reasons
    assert_no_generator_left(api, k8s_namespace)


def test_a_canary_deleted_mid_test_is_an_error_not_a_verdict(
    krun: Callable[..., CLIResult],
    kubelet: Callable[..., GeneratorKubelet],
    api: KubeApi,
    k8s_namespace: str,
) -> None:
    def delete_canary() -> None:
        api.delete("apps/v1", "Deployment", k8s_namespace, "digits-serving-canary")

    with kubelet(index0=PodScript(before=delete_canary)) as pods:
        result = krun(1, load=SHORT)
    assert pods.errors == []
    assert result.exit_code == 52, result.stdout
    assert "was removed or replaced during the load test" in " ".join(result.json()["reasons"])
    assert_no_generator_left(api, k8s_namespace)


# -- the command on its own --------------------------------------------------------------------
def test_loadtest_target_k8s_runs_the_job_and_returns_per_track_results(
    cli: Callable[..., CLIResult],
    kubelet: Callable[..., GeneratorKubelet],
    control_plane: ControlPlane,
    api: KubeApi,
    k8s_namespace: str,
    tmp_path: Path,
) -> None:
    ns = k8s_namespace
    with kubelet() as pods:
        result = cli(
            "loadtest", "--target", "k8s", "--kubeconfig", control_plane.kubeconfig,
            "--namespace", ns, "--model", "digits", "--generator-image", GENERATOR_IMAGE,
            "--endpoint", f"http://digits-serving-canary.{ns}.svc:8501",
            "--baseline-endpoint", f"http://digits-serving.{ns}.svc:8501",
            "--out", tmp_path / "out", *SHORT, "--json",
        )  # fmt: skip
    assert pods.errors == []
    assert result.exit_code == 0, result.stdout
    data = result.json()
    for track in ("canary", "baseline"):
        assert data[track]["samples"] >= SHORT_SAMPLES  # type: ignore[index]
        assert data[track]["errors"] == 0  # type: ignore[index]
    assert_no_generator_left(api, ns)


def test_an_interrupted_load_test_deletes_its_job(
    control_plane: ControlPlane, api: KubeApi, k8s_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scripts.deploy.kubernetes_job import KubernetesJobRunner

    job = small_job(k8s_namespace, "ctrl-c")
    runner = KubernetesJobRunner(api, k8s_namespace, poll_s=0.1)
    seen: list[str] = []

    def interrupted(*_: object) -> None:
        seen.extend(j["metadata"]["name"] for j in api.list("batch/v1", "Job", k8s_namespace))
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.run(job.objects, timeout_s=30)
    assert seen == [job.name]  # it existed while the run waited
    assert api.list("batch/v1", "Job", k8s_namespace) == []


def test_the_shipped_role_alone_runs_the_generator_job(
    cli: Callable[..., CLIResult],
    kubelet: Callable[..., GeneratorKubelet],
    control_plane: ControlPlane,
    api: KubeApi,
    k8s_namespace: str,
    tmp_path: Path,
) -> None:
    from tests.controlplane.rbac import bind

    ns = k8s_namespace
    deployer = bind(control_plane, ns, "tf-release-pipeline@acme-ml.iam.gserviceaccount.com")
    with kubelet() as pods:
        result = cli(
            "loadtest", "--target", "k8s", "--kubeconfig", deployer, "--namespace", ns,
            "--model", "digits", "--generator-image", GENERATOR_IMAGE, "--workers", "1",
            "--endpoint", f"http://digits-serving-canary.{ns}.svc:8501",
            "--out", tmp_path / "out", *SHORT, "--json",
        )  # fmt: skip
    assert pods.errors == []
    assert result.exit_code == 0, result.stdout
    assert result.json()["canary"]["samples"] >= SHORT_SAMPLES  # type: ignore[index]
    assert_no_generator_left(api, ns)


def test_teardown_removes_a_generator_left_by_a_runner_that_died(
    cli: Callable[..., CLIResult], control_plane: ControlPlane, api: KubeApi, k8s_namespace: str
) -> None:
    job = small_job(k8s_namespace, "died", workers=1)
    for obj in job.objects:
        api.create(obj, k8s_namespace)
    result = cli(
        "teardown", "--target", "k8s", "--kubeconfig", control_plane.kubeconfig,
        "--namespace", k8s_namespace, "--timeout", "60", "--poll-interval", "0.2", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stdout
    assert f"Job/{job.name}" in result.json()["deleted"]  # type: ignore[operator]
    assert_no_generator_left(api, k8s_namespace)
