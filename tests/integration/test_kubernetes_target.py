"""The Kubernetes target on a real control plane: kube-apiserver, kube-controller-manager
(Deployment, ReplicaSet and Job controllers), kube-scheduler and etcd built from their Go
modules, with kwok as the kubelets (tests/controlplane).

Server-side apply with real field managers, rollouts through real ReplicaSets, a canary
that never becomes ready, promote and rollback, leases racing between two deployers,
server-side dry runs, every overlay accepted by the API server, HPA ownership of
spec.replicas (the real HPA controller), and a pod's log served through the API server from kwok.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts import errors
from scripts.deploy.kube_api import ClusterConfig, KubeApi
from tests.conftest import REPO_ROOT, CLIResult
from tests.controlplane.cluster import ControlPlane

pytestmark = [pytest.mark.integration, pytest.mark.controlplane]
V1 = "registry.example/models/digits@sha256:" + "1" * 64
V2 = "registry.example/models/digits@sha256:" + "2" * 64
V3 = "registry.example/models/digits@sha256:" + "3" * 64


@pytest.fixture
def api(control_plane: ControlPlane) -> KubeApi:
    return KubeApi.connect(ClusterConfig(control_plane.kubeconfig, None, False))


@pytest.fixture
def kcli(
    cli: Callable[..., CLIResult], control_plane: ControlPlane, k8s_namespace: str
) -> Callable[..., CLIResult]:
    def run(
        command: str,
        *args: str | Path,
        image: str | None = None,
        kubeconfig: Path | None = None,
        overlay: str = "staging",
        model: str | None = None,
    ) -> CLIResult:
        base: list[str | Path] = [
            command,
            "--target",
            "k8s",
            "--kubeconfig",
            kubeconfig or control_plane.kubeconfig,
            "--namespace",
            k8s_namespace,
            "--poll-interval",
            "0.2",
            "--timeout",
            "60",
            "--json",
        ]
        if image is not None:
            base += ["--overlay", overlay, "--model", model or "digits", "--image", image]
        else:
            base += ["--overlay", overlay] + (["--model", model] if model else [])
        return cli(*base, *args)

    return run


def deployment(api: KubeApi, namespace: str, name: str) -> dict[str, Any]:
    found = api.get("apps/v1", "Deployment", namespace, name)
    assert found is not None, f"no Deployment {name}"
    return found


def image(api: KubeApi, namespace: str, name: str) -> str:
    spec = deployment(api, namespace, name)["spec"]["template"]["spec"]
    return str(spec["containers"][0]["image"])


def fault_tree(
    tmp_path: Path,
    annotations: dict[str, str],
    deadline_s: int = 300,
    resources: dict[str, Any] | None = None,
) -> Path:
    """A copy of kustomize/ whose staging canary's pods carry kwok fault annotations (and,
    given ``resources``, other container resources)."""
    tree = tmp_path / "kustomize"
    shutil.copytree(REPO_ROOT / "kustomize", tree)
    path = tree / "overlays" / "staging" / "kustomization.yaml"
    data = yaml.safe_load(path.read_text())
    data["patches"].append(
        {
            "target": {"kind": "Deployment", "labelSelector": "track=canary"},
            "patch": yaml.safe_dump(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "any"},
                    "spec": {
                        "progressDeadlineSeconds": deadline_s,
                        "template": {
                            "metadata": {"annotations": annotations},
                            "spec": {"containers": [{"name": "tf-serving", "resources": resources}]}
                            if resources
                            else {},
                        },
                    },
                }
            ),
        }
    )
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return tree


# -- server-side apply, canary, rollout ---------------------------------------------------
def test_first_deploy_applies_with_our_field_manager_and_a_second_apply_is_a_noop(
    kcli: Callable[..., CLIResult], api: KubeApi, k8s_namespace: str
) -> None:
    result = kcli("deploy", image=V1)
    assert result.exit_code == 0, result.stderr
    assert result.json()["rollout"] == "digits-serving successfully rolled out"
    live = deployment(api, k8s_namespace, "digits-serving")
    managers = {f["manager"]: f for f in live["metadata"]["managedFields"]}
    assert managers["tf-release-pipeline"]["operation"] == "Apply"
    assert "kube-controller-manager" in managers  # the real controller wrote the status
    status = live["status"]
    assert status["readyReplicas"] == status["updatedReplicas"] == live["spec"]["replicas"] == 2
    # Rolled out through a real ReplicaSet, whose pods kwok runs on the staging node pool.
    sets = (
        api.request(
            "GET",
            f"/apis/apps/v1/namespaces/{k8s_namespace}/replicasets",
            query=[("labelSelector", "track=stable")],
        )
        or {}
    )["items"]
    assert [s["status"].get("readyReplicas") for s in sets] == [2]
    pods = api.list("v1", "Pod", k8s_namespace, labels="track=stable")
    # The overlay's nodeSelector, and the real scheduler: one 1.5-CPU pod per 2-vCPU node.
    nodes = [p["spec"]["nodeName"] for p in pods]
    assert all(n.startswith("pool-2vcpu-") for n in nodes) and len(set(nodes)) == 2
    # Applying the same manifests again changes nothing the API server stores.
    version = live["metadata"]["resourceVersion"]
    again = kcli("deploy", image=V1)
    assert again.exit_code == 0, again.stderr
    assert (
        deployment(api, k8s_namespace, "digits-serving")["metadata"]["resourceVersion"] == version
    )
    assert (
        api.get(
            "coordination.k8s.io/v1", "Lease", k8s_namespace, "tf-release-pipeline-digits-staging"
        )
        is None
    )


def test_a_canary_runs_beside_stable_and_never_touches_it(
    kcli: Callable[..., CLIResult], api: KubeApi, k8s_namespace: str
) -> None:
    assert kcli("deploy", image=V1).exit_code == 0
    stable = deployment(api, k8s_namespace, "digits-serving")
    result = kcli("deploy", "--canary", image=V2)
    assert result.exit_code == 0, result.stderr
    assert image(api, k8s_namespace, "digits-serving-canary") == V2
    after = deployment(api, k8s_namespace, "digits-serving")
    assert after["metadata"]["resourceVersion"] == stable["metadata"]["resourceVersion"]
    assert result.json()["endpoints"]["canary"] == [
        f"http://digits-serving-canary.{k8s_namespace}.svc:8501"
    ]
    canary_pods = api.list("v1", "Pod", k8s_namespace, labels="track=canary")
    assert len(canary_pods) == 1 and canary_pods[0]["status"]["phase"] == "Running"
    # The stable Service selects the stable pods only; the canary's its own.
    stable_service = api.get("v1", "Service", k8s_namespace, "digits-serving")
    assert stable_service is not None and stable_service["spec"]["selector"]["track"] == "stable"
    status = kcli("status").json()
    assert status["stable"]["image"] == V1 and status["canary"]["image"] == V2  # type: ignore[index]


def test_a_fresh_baseline_comes_and_goes_with_the_canary_and_never_touches_stable(
    kcli: Callable[..., CLIResult], api: KubeApi, k8s_namespace: str
) -> None:
    """Kayenta's practice: the canary is compared with a new copy of the stable image,
    started with it (its size, its age), not with the long-running stable pods."""
    assert kcli("deploy", image=V1).exit_code == 0
    stable = deployment(api, k8s_namespace, "digits-serving")
    for outcome in ("rollback", "promote"):
        deployed = kcli("deploy", "--canary", "--fresh-baseline", image=V2)
        assert deployed.exit_code == 0, deployed.stderr
        assert "fresh baseline: digits-serving-baseline successfully rolled out" in str(
            deployed.json()["rollout"]
        )
        baseline = deployment(api, k8s_namespace, "digits-serving-baseline")
        canary = deployment(api, k8s_namespace, "digits-serving-canary")
        assert image(api, k8s_namespace, "digits-serving-baseline") == V1
        assert baseline["spec"]["replicas"] == canary["spec"]["replicas"] == 1
        assert baseline["spec"]["selector"]["matchLabels"]["track"] == "baseline"
        labels = baseline["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "digits"
        assert labels["app.kubernetes.io/part-of"] == "tf-release-pipeline"
        # Its own pods, running, behind its own Service; stable's pods are not selected.
        pods = api.list("v1", "Pod", k8s_namespace, labels="track=baseline")
        assert len(pods) == 1 and pods[0]["status"]["phase"] == "Running"
        service = api.get("v1", "Service", k8s_namespace, "digits-serving-baseline")
        assert service is not None and service["spec"]["selector"]["track"] == "baseline"
        assert deployed.json()["endpoints"]["baseline"] == [  # type: ignore[index]
            f"http://digits-serving-baseline.{k8s_namespace}.svc:8501"
        ]
        assert kcli("status").json()["baseline"]["image"] == V1  # type: ignore[index]
        if outcome == "rollback":
            removed = kcli("rollback")
            assert removed.json()["action"] == "canary-removed", removed.stderr
            live = deployment(api, k8s_namespace, "digits-serving")
            assert live["metadata"]["resourceVersion"] == stable["metadata"]["resourceVersion"]
        else:
            assert kcli("promote", image=V2).exit_code == 0
            assert image(api, k8s_namespace, "digits-serving") == V2
        for kind, version in (("Deployment", "apps/v1"), ("Service", "v1")):
            assert api.get(version, kind, k8s_namespace, "digits-serving-baseline") is None
        assert api.list("v1", "Pod", k8s_namespace, labels="track=baseline") == []


def test_a_canary_of_several_pods_is_given_as_each_pods_address_stable_as_its_service(
    kcli: Callable[..., CLIResult], api: KubeApi, k8s_namespace: str
) -> None:
    """local-2x250m: two pods per track. The canary and its fresh baseline are handed to
    the load test pod by pod (the Service's selector, Ready, through the named
    targetPort), so the gate can weigh pods as units; stable keeps its Service (an
    autoscaler may change its pods mid-test), as does a one-pod canary (above)."""
    overlay = "local-2x250m"
    assert kcli("deploy", image=V1, overlay=overlay).exit_code == 0
    deployed = kcli("deploy", "--canary", "--fresh-baseline", image=V2, overlay=overlay)
    assert deployed.exit_code == 0, deployed.stderr
    endpoints = deployed.json()["endpoints"]
    status = kcli("status").json()
    for track, name in (
        ("canary", "digits-serving-canary"),
        ("baseline", "digits-serving-baseline"),
    ):
        service = api.get("v1", "Service", k8s_namespace, name)
        assert service is not None
        selector = ",".join(f"{k}={v}" for k, v in service["spec"]["selector"].items())
        ips = sorted(
            p["status"]["podIP"] for p in api.list("v1", "Pod", k8s_namespace, labels=selector)
        )
        assert len(ips) == 2
        assert sorted(endpoints[track]) == [f"http://{ip}:8501" for ip in ips]
        assert sorted(endpoints[f"{track}_grpc"]) == [f"{ip}:8500" for ip in ips]
        assert sorted(status[track]["endpoints"]) == sorted(endpoints[track])  # type: ignore[index]
    assert set(endpoints["canary"]).isdisjoint(endpoints["baseline"])
    assert status["stable"]["endpoints"] == [  # type: ignore[index]
        f"http://digits-serving.{k8s_namespace}.svc:8501"
    ]
    assert kcli("rollback", overlay=overlay).exit_code == 0


def test_promote_then_rollback_restores_the_previous_digest_once(
    kcli: Callable[..., CLIResult], api: KubeApi, k8s_namespace: str
) -> None:
    assert kcli("deploy", image=V1).exit_code == 0
    assert kcli("deploy", "--canary", image=V2).exit_code == 0
    untested = kcli("promote", image=V3)
    assert untested.exit_code == errors.DeployError.exit_code
    promoted = kcli("promote", image=V2)
    assert promoted.exit_code == 0, promoted.stderr
    assert promoted.json()["previous_image"] == V1
    assert image(api, k8s_namespace, "digits-serving") == V2
    assert api.get("apps/v1", "Deployment", k8s_namespace, "digits-serving-canary") is None
    assert api.get("v1", "Service", k8s_namespace, "digits-serving-canary") is None
    live = deployment(api, k8s_namespace, "digits-serving")
    assert live["metadata"]["annotations"]["tf-release-pipeline.dev/previous-image"] == V1
    assert live["status"]["updatedReplicas"] == 2  # the new ReplicaSet rolled out
    restored = kcli("rollback")
    assert restored.exit_code == 0, restored.stderr
    assert restored.json()["action"] == "restored"
    assert image(api, k8s_namespace, "digits-serving") == V1
    again = kcli("rollback")
    assert again.json()["action"] == "none"  # no flip-flop back to V2
    assert image(api, k8s_namespace, "digits-serving") == V1


def test_rollback_of_a_canary_leaves_stable(
    kcli: Callable[..., CLIResult], api: KubeApi, k8s_namespace: str
) -> None:
    assert kcli("deploy", image=V1).exit_code == 0
    assert kcli("deploy", "--canary", image=V2).exit_code == 0
    result = kcli("rollback")
    assert result.json()["action"] == "canary-removed"
    assert api.get("apps/v1", "Deployment", k8s_namespace, "digits-serving-canary") is None
    assert api.list("v1", "ConfigMap", k8s_namespace, labels="track=canary") == []
    assert image(api, k8s_namespace, "digits-serving") == V1


# -- a canary that never becomes ready -------------------------------------------------------
@pytest.mark.parametrize(
    ("exit_code", "reason", "message", "finding", "hint"),
    [
        ("1", "Error", "Failed to load servable digits", "last terminated: Error (exit 1)",
         "keeps crashing"),
        # Whatever base render records (stock), a 132 is a SIGILL on an e2 node.
        ("132", "Error", "illegal instruction",
         "died with SIGILL (illegal instruction, exit 132) on node pool-2vcpu-",
         "the image's binary uses CPU instructions"),
        ("137", "OOMKilled", "", "last terminated: OOMKilled (exit 137)", "ran out of memory"),
    ],
)  # fmt: skip
def test_a_crashing_canary_is_diagnosed_from_its_pods(
    kcli: Callable[..., CLIResult],
    api: KubeApi,
    k8s_namespace: str,
    tmp_path: Path,
    exit_code: str,
    reason: str,
    message: str,
    finding: str,
    hint: str,
) -> None:
    assert kcli("deploy", image=V1).exit_code == 0
    stable = deployment(api, k8s_namespace, "digits-serving")
    tree = fault_tree(
        tmp_path,
        {
            "test.tf-release-pipeline.dev/fail": "true",
            "test.tf-release-pipeline.dev/exit-code": exit_code,
            "test.tf-release-pipeline.dev/reason": reason,
            "test.tf-release-pipeline.dev/message": message,
        },
        deadline_s=4,
    )
    result = kcli("deploy", "--canary", "--kustomize-dir", tree, image=V2)
    assert result.exit_code == errors.DeployError.exit_code, result.stdout
    error = result.json()["error"]
    text = str(error["message"])  # type: ignore[index]
    # The real Deployment controller declared the deadline; the pods say why.
    assert "ProgressDeadlineExceeded" in text or "progress deadline" in text
    assert "CrashLoopBackOff" in text
    assert finding in text
    assert message in text
    assert hint in str(error["cause"])  # type: ignore[index]
    if exit_code == "132":
        assert "(machine family e2)" in text  # the node's GKE label, read by diagnosis
    assert (
        deployment(api, k8s_namespace, "digits-serving")["metadata"]["resourceVersion"]
        == (stable["metadata"]["resourceVersion"])
    )
    assert (
        api.get(
            "coordination.k8s.io/v1", "Lease", k8s_namespace, "tf-release-pipeline-digits-staging"
        )
        is None
    )


C2_FEATURES = "avx,avx2,fma,avx512f,avx512cd,avx512bw,avx512dq,avx512vl,avx512_vnni"


@pytest.mark.parametrize("identity", ["admin", "shipped-role"])
def test_a_canary_dying_with_sigill_names_its_bases_cpu_features_and_its_nodes_family(
    kcli: Callable[..., CLIResult],
    api: KubeApi,
    control_plane: ControlPlane,
    k8s_namespace: str,
    tmp_path: Path,
    identity: str,
) -> None:
    """A canary built on c2-cascadelake lands on an e2 node (all test nodes are e2) and
    dies at once with exit 132. The base's annotations are set on the rendered canary
    here, as render would write them for that base (render itself pins such a base to
    c2 nodes, which the test cluster has none of). As the shipped Role, which may not
    read Nodes, the node's family is unknown and the error says why."""
    from scripts.deploy.kubernetes_target import KubernetesTarget
    from scripts.deploy.target import DeployOptions, deployment_of
    from scripts.image.bases import (
        BASE_ANNOTATION,
        CPU_FEATURES_ANNOTATION,
        FAMILIES_ANNOTATION,
    )
    from scripts.manifests.render import RenderRequest, render
    from tests.controlplane.rbac import bind

    assert kcli("deploy", image=V1).exit_code == 0
    stable = deployment(api, k8s_namespace, "digits-serving")
    tree = fault_tree(
        tmp_path,
        {
            "test.tf-release-pipeline.dev/fail": "true",
            "test.tf-release-pipeline.dev/exit-code": "132",
            "test.tf-release-pipeline.dev/reason": "Error",
        },
        deadline_s=4,
    )
    rendered = render(
        RenderRequest(overlay="staging", image=V2, model="digits", kustomize_dir=tree)
    )
    template = deployment_of(rendered.objects, "canary")["spec"]["template"]
    template["metadata"].setdefault("annotations", {}).update(
        {
            BASE_ANNOTATION: "c2-cascadelake",
            CPU_FEATURES_ANNOTATION: C2_FEATURES,
            FAMILIES_ANNOTATION: "c2",
        }
    )
    deployer = api
    if identity == "shipped-role":
        kubeconfig = bind(control_plane, k8s_namespace, "deployer@acme-ml.iam.gserviceaccount.com")
        deployer = KubeApi.connect(ClusterConfig(kubeconfig, None, False))
    target = KubernetesTarget(deployer, k8s_namespace, "staging", model="digits", poll_s=0.2)
    with pytest.raises(errors.DeployError) as raised:
        target.deploy(rendered, canary=True, options=DeployOptions(timeout_s=60))
    error = raised.value
    (pod,) = api.list("v1", "Pod", k8s_namespace, labels="track=canary")
    node = pod["spec"]["nodeName"]
    needs = C2_FEATURES.replace(",", ", ")
    assert "ProgressDeadlineExceeded" in error.what or "progress deadline" in error.what
    assert "CrashLoopBackOff" in error.what
    assert (
        f"pod {pod['metadata']['name']}: container tf-serving died with SIGILL "
        f"(illegal instruction, exit 132) on node {node} (machine family "
    ) in error.what
    assert f"its base c2-cascadelake needs {needs}" in error.what
    assert "build this model on a base for" in error.fix
    assert "serve it on nodes of c2 (render pins" in error.fix
    if identity == "admin":
        assert f"on node {node} (machine family e2): its base c2-cascadelake" in error.what
        assert (
            "e2 CPUs guarantee avx, avx2, fma — lacking: avx512f, avx512cd, avx512bw, "
            "avx512dq, avx512vl, avx512_vnni"
        ) in error.what
        assert f"CPU instructions node {node}'s CPU lacks" in error.cause
        assert "built for c2, the node is e2" in error.cause
        assert "nodeSelector/affinity for e2" in error.fix
        assert "a base for e2 (e.g. stock: --base stock, or model.yaml base_image" in error.fix
    else:
        assert "machine family unknown: the deployer may not read Nodes" in error.what
        assert "kustomize/rbac/bench" in error.what
        assert "lacking" not in error.what
        assert "let the deployer read Nodes" in error.fix
    assert (
        deployment(api, k8s_namespace, "digits-serving")["metadata"]["resourceVersion"]
        == stable["metadata"]["resourceVersion"]
    )
    assert (
        api.get(
            "coordination.k8s.io/v1", "Lease", k8s_namespace, "tf-release-pipeline-digits-staging"
        )
        is None
    )


def test_an_unready_canary_times_out_naming_its_condition(
    kcli: Callable[..., CLIResult], k8s_namespace: str, tmp_path: Path
) -> None:
    tree = fault_tree(tmp_path, {"test.tf-release-pipeline.dev/unready": "true"})
    result = kcli("deploy", "--canary", "--kustomize-dir", tree, "--timeout", "4", image=V2)
    assert result.exit_code == errors.PipelineTimeoutError.exit_code, result.stdout
    assert "0 of 1" in str(result.json()["error"]) or "ready" in str(result.json()["error"])


def test_a_canary_no_node_can_take_is_diagnosed_from_the_scheduler(
    kcli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    three_cpus = {"cpu": "3"}  # more than any 2-vCPU node of the staging pool has
    tree = fault_tree(tmp_path, {}, resources={"requests": three_cpus, "limits": three_cpus})
    result = kcli("deploy", "--canary", "--kustomize-dir", tree, "--timeout", "5", image=V2)
    assert result.exit_code == errors.PipelineTimeoutError.exit_code, result.stdout
    error = result.json()["error"]
    assert "Unschedulable" in str(error["message"])  # type: ignore[index]
    assert "Insufficient cpu" in str(error["message"])  # type: ignore[index]
    assert "no node can take the pod" in str(error["cause"])  # type: ignore[index]


# -- the deploy lock -----------------------------------------------------------------------
def test_two_deployers_race_for_the_lease_and_one_waits_its_turn_or_is_refused(
    control_plane: ControlPlane, api: KubeApi, k8s_namespace: str, tmp_path: Path
) -> None:
    tree = fault_tree(tmp_path, {"test.tf-release-pipeline.dev/unready": "true"})

    def deploy(image_ref: str, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                sys.executable, "-m", "scripts", "deploy", "--target", "k8s", "--canary",
                "--kubeconfig", str(control_plane.kubeconfig), "--namespace", k8s_namespace,
                "--overlay", "staging", "--model", "digits", "--image", image_ref,
                "--poll-interval", "0.2", "--json", *extra,
            ],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    # The first holds the lease while its (never ready) canary rolls out for 6 s.
    first = deploy(V1, "--kustomize-dir", str(tree), "--timeout", "6")
    deadline = time.monotonic() + 30
    while (
        api.get(
            "coordination.k8s.io/v1", "Lease", k8s_namespace, "tf-release-pipeline-digits-staging"
        )
        is None
    ):
        assert time.monotonic() < deadline, "the first deployer never took the lease"
        time.sleep(0.1)
    second = deploy(V2, "--timeout", "30")
    out2, _ = second.communicate(timeout=120)
    out1, _ = first.communicate(timeout=120)
    assert second.returncode == errors.LockError.exit_code, out2
    holder = api.get(
        "coordination.k8s.io/v1", "Lease", k8s_namespace, "tf-release-pipeline-digits-staging"
    )
    assert holder is None  # released by the first when it gave up
    assert "holds" in json.loads(out2)["error"]["message"] or "lease" in out2
    assert first.returncode == errors.PipelineTimeoutError.exit_code, out1


def test_an_expired_lease_is_taken_over(
    kcli: Callable[..., CLIResult], api: KubeApi, k8s_namespace: str
) -> None:
    api.create(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "tf-release-pipeline-digits-staging", "namespace": k8s_namespace},
            "spec": {
                "holderIdentity": "github-run-41/dead",
                "leaseDurationSeconds": 60,
                "acquireTime": "2020-01-01T00:00:00.000000Z",
                "renewTime": "2020-01-01T00:00:00.000000Z",
            },
        },
        k8s_namespace,
    )
    result = kcli("deploy", "--canary", image=V2)
    assert result.exit_code == 0, result.stderr
    assert "taking over the expired deploy lease" in result.stderr


# -- dry run, defaults, every overlay -----------------------------------------------------
def test_a_dry_run_is_the_api_servers_and_changes_nothing(
    kcli: Callable[..., CLIResult], api: KubeApi, k8s_namespace: str
) -> None:
    assert kcli("deploy", image=V1).exit_code == 0
    before = deployment(api, k8s_namespace, "digits-serving")["metadata"]["resourceVersion"]
    result = kcli("deploy", "--dry-run", image=V2)
    assert result.exit_code == 0, result.stderr
    diff = str(result.json()["diff"])
    assert f"-        image: {V1}" in diff and f"+        image: {V2}" in diff
    assert deployment(api, k8s_namespace, "digits-serving")["metadata"]["resourceVersion"] == before
    assert image(api, k8s_namespace, "digits-serving") == V1


@pytest.mark.parametrize(
    "overlay",
    sorted(
        p.parent.name for p in (REPO_ROOT / "kustomize" / "overlays").glob("*/kustomization.yaml")
    ),
)
def test_every_overlay_is_accepted_by_the_api_server_with_the_defaults_we_expect(
    overlay: str, api: KubeApi, k8s_namespace: str
) -> None:
    from scripts.manifests.render import RenderRequest, render

    # Ablations (bench only) are applied too: `bench` deploys them under bench names.
    rendered = render(
        RenderRequest(overlay=overlay, image=V1, model="digits", allow_ablations=True)
    )
    for obj in rendered.objects:
        stored = api.apply(obj, k8s_namespace, "tf-release-pipeline", dry_run=True)
        assert stored["metadata"]["namespace"] == k8s_namespace
        if obj["kind"] != "Deployment":
            continue
        spec = stored["spec"]
        # What rollout status and the policy rely on, as the API server defaults it.
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        assert spec["progressDeadlineSeconds"] == obj["spec"].get("progressDeadlineSeconds", 600)
        container = spec["template"]["spec"]["containers"][0]
        assert container["imagePullPolicy"] == "IfNotPresent"  # a digest is never re-pulled
        assert container["resources"]["requests"] == container["resources"]["limits"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/v1/models/digits"
        assert spec["template"]["spec"]["restartPolicy"] == "Always"
        assert container["terminationMessagePolicy"] == "File"


def _owners_of_replicas(live: dict[str, Any]) -> set[str]:
    return {
        f["manager"]
        for f in live["metadata"]["managedFields"]
        if "f:replicas" in f.get("fieldsV1", {}).get("f:spec", {})
    }


def test_an_hpa_owns_spec_replicas_and_a_deploy_neither_resets_nor_fights_it(
    kcli: Callable[..., CLIResult], api: KubeApi, k8s_namespace: str
) -> None:
    """The production overlay ships an HPA (4-12 replicas). The real HPA controller of the
    test control plane scales the Deployment out; later deploys (a new stable image, a
    canary, a restore) leave spec.replicas to it, at every moment in between."""
    assert kcli("deploy", image=V1, overlay="production").exit_code == 0
    live = deployment(api, k8s_namespace, "digits-serving")
    assert live["spec"]["replicas"] == 4  # created at the overlay's size
    # Handed over at once: the pipeline's own manager no longer claims the field.
    assert "tf-release-pipeline" not in _owners_of_replicas(live)
    assert "tf-release-pipeline-replicas-handover" in _owners_of_replicas(live)
    # An operator raises the floor; the real HPA controller (no metrics here, so only its
    # min/max clamp acts) scales the Deployment out through /scale.
    api.request(
        "PATCH",
        f"/apis/autoscaling/v2/namespaces/{k8s_namespace}/horizontalpodautoscalers/digits-serving",
        query=[("fieldManager", "operator")],
        body={"spec": {"minReplicas": 6}},
        content_type="application/merge-patch+json",
    )
    deadline = time.monotonic() + 90
    while deployment(api, k8s_namespace, "digits-serving")["spec"]["replicas"] != 6:
        assert time.monotonic() < deadline, "the HPA controller never scaled to its minimum"
        time.sleep(0.5)

    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:  # every state the Deployment passes through during the deploys
        while not stop.is_set():
            seen.append(deployment(api, k8s_namespace, "digits-serving")["spec"]["replicas"])
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        # A new stable image (the apply also resets the HPA's floor to the overlay's 4:
        # 6 is within 4-12, so the autoscaler keeps 6).
        assert kcli("deploy", image=V2, overlay="production").exit_code == 0
        assert kcli("deploy", "--canary", image=V3, overlay="production").exit_code == 0
        canary = deployment(api, k8s_namespace, "digits-serving-canary")
        assert canary["spec"]["replicas"] == 1  # the canary keeps its fixed size, ours
        assert "tf-release-pipeline" in _owners_of_replicas(canary)
        assert kcli("rollback").exit_code == 0  # the canary goes
        assert kcli("rollback").json()["action"] == "restored"  # stable back to V1
    finally:
        stop.set()
        watcher.join()
    live = deployment(api, k8s_namespace, "digits-serving")
    assert image(api, k8s_namespace, "digits-serving") == V1
    assert live["spec"]["replicas"] == 6
    assert seen and set(seen) == {6}, f"spec.replicas moved during the deploys: {set(seen)}"
    assert "tf-release-pipeline" not in _owners_of_replicas(live)


def test_a_pods_log_is_served_through_the_api_server_from_kwok(
    kcli: Callable[..., CLIResult],
    api: KubeApi,
    k8s_namespace: str,
    control_plane: ControlPlane,
    tmp_path: Path,
) -> None:
    assert kcli("deploy", "--canary", image=V2).exit_code == 0
    pod = api.list("v1", "Pod", k8s_namespace, labels="track=canary")[0]["metadata"]["name"]
    log = tmp_path / "canary.log"
    log.write_text(
        "2026-12-01T08:00:00.000000000Z stdout F first line\n"
        "2026-12-01T08:00:01.000000000Z stderr F second line\n"
    )
    control_plane.apply(
        {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "Logs",
            "metadata": {"name": pod, "namespace": k8s_namespace},
            "spec": {"logs": [{"containers": ["tf-serving"], "logsFile": str(log)}]},
        }
    )
    deadline = time.monotonic() + 20
    while True:
        kubectl = str(Path(sys.executable).parent / "kubectl")
        proc = subprocess.run(
            [kubectl, "--kubeconfig", str(control_plane.kubeconfig), "-n", k8s_namespace,
             "logs", pod, "-c", "tf-serving"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        if proc.returncode == 0 and "second line" in proc.stdout:
            break
        assert time.monotonic() < deadline, proc.stderr
        time.sleep(0.5)
    assert proc.stdout.splitlines() == ["first line", "second line"]


def test_rejected_credentials_are_an_auth_error(
    kcli: Callable[..., CLIResult], control_plane: ControlPlane, tmp_path: Path
) -> None:
    from tests.controlplane.cluster import Pki

    stranger = Pki(tmp_path / "other-ca")  # a client certificate from a CA it does not trust
    cert, key = stranger.issue(
        "intruder", common_name="intruder", organizations=("system:masters",)
    )
    kubeconfig = control_plane.write_kubeconfig("intruder", cert, key)
    result = kcli("deploy", "--canary", image=V2, kubeconfig=kubeconfig)
    assert result.exit_code == errors.AuthError.exit_code
    assert "get-gke-credentials" in str(result.json()["error"])


M1 = "registry.example/models/mnist@sha256:" + "a" * 64
M2 = "registry.example/models/mnist@sha256:" + "b" * 64


def test_two_models_share_a_namespace_one_promoted_while_the_other_is_rolled_back(
    kcli: Callable[..., CLIResult], api: KubeApi, k8s_namespace: str
) -> None:
    for model, stable in (("digits", V1), ("mnist", M1)):
        assert kcli("deploy", image=stable, model=model).exit_code == 0
    for model, candidate in (("digits", V2), ("mnist", M2)):
        assert kcli("deploy", "--canary", image=candidate, model=model).exit_code == 0
    # Four Deployments, each Service selecting its own model's pods only.
    for model in ("digits", "mnist"):
        for name in (f"{model}-serving", f"{model}-serving-canary"):
            service = api.get("v1", "Service", k8s_namespace, name)
            assert service is not None
            selected = api.list(
                "v1",
                "Pod",
                k8s_namespace,
                labels=",".join(f"{k}={v}" for k, v in service["spec"]["selector"].items()),
            )
            assert selected and {
                p["metadata"]["labels"]["app.kubernetes.io/instance"] for p in selected
            } == {model}
            assert {p["spec"]["containers"][0]["image"] for p in selected} == {
                image(api, k8s_namespace, name)
            }
    mnist_stable = deployment(api, k8s_namespace, "mnist-serving")["metadata"]["resourceVersion"]

    # Without --model a command cannot guess which of two models is meant.
    ambiguous = kcli("status")
    assert ambiguous.exit_code == errors.UsageError.exit_code
    assert "digits, mnist" in ambiguous.json()["error"]["message"]
    # digits' deploy lease does not block mnist: hold it for someone else.
    api.create(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "tf-release-pipeline-digits-staging"},
            "spec": {
                "holderIdentity": "someone-else",
                "leaseDurationSeconds": 600,
                "renewTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
            },
        },
        k8s_namespace,
    )
    assert kcli("rollback", model="digits").exit_code == errors.LockError.exit_code
    assert kcli("rollback", model="mnist").json()["action"] == "canary-removed"
    api.delete(
        "coordination.k8s.io/v1", "Lease", k8s_namespace, "tf-release-pipeline-digits-staging"
    )
    assert kcli("promote", image=V2, model="digits").json()["action"] == "promoted"

    assert image(api, k8s_namespace, "digits-serving") == V2
    assert api.get("apps/v1", "Deployment", k8s_namespace, "digits-serving-canary") is None
    assert image(api, k8s_namespace, "mnist-serving") == M1
    assert api.get("apps/v1", "Deployment", k8s_namespace, "mnist-serving-canary") is None
    # digits' promotion never wrote to mnist's stable Deployment.
    assert (
        deployment(api, k8s_namespace, "mnist-serving")["metadata"]["resourceVersion"]
        == mnist_stable
    )
    digits = kcli("status", model="digits").json()
    mnist = kcli("status", model="mnist").json()
    assert (digits["model"], digits["stable"]["image"], digits["canary"]["exists"]) == (
        "digits",
        V2,
        False,
    )
    assert (mnist["model"], mnist["stable"]["image"], mnist["canary"]["exists"]) == (
        "mnist",
        M1,
        False,
    )
    # Teardown is per model too.
    assert kcli("teardown", model="digits").exit_code == 0
    assert api.get("apps/v1", "Deployment", k8s_namespace, "digits-serving") is None
    assert image(api, k8s_namespace, "mnist-serving") == M1
    assert kcli("status").json()["model"] == "mnist"  # the only one left


SCALEDOBJECT_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "scaledobjects.keda.sh"},
    "spec": {
        "group": "keda.sh",
        "names": {"kind": "ScaledObject", "listKind": "ScaledObjectList",
                  "plural": "scaledobjects", "singular": "scaledobject"},
        "scope": "Namespaced",
        "versions": [{
            "name": "v1alpha1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {"type": "object",
                                           "x-kubernetes-preserve-unknown-fields": True}},
        }],
    },
}  # fmt: skip


def test_teardown_removes_the_models_scaledobject_and_works_without_keda(
    kcli: Callable[..., CLIResult],
    api: KubeApi,
    k8s_namespace: str,
    control_plane: ControlPlane,
    tmp_path: Path,
) -> None:
    # Without KEDA's CRD (the cluster has none yet) teardown does not trip over the kind.
    assert kcli("deploy", image=V1).exit_code == 0
    assert kcli("teardown").exit_code == 0
    tree = tmp_path / "kustomize"
    shutil.copytree(REPO_ROOT / "kustomize", tree)
    overlay = tree / "overlays" / "keda-test"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["../../base"],
                "components": ["../../components/canary", "../../components/keda"],
            }
        )
    )
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/scaledobjects.keda.sh"
    control_plane.apply(SCALEDOBJECT_CRD)
    try:
        deadline = time.monotonic() + 30
        while not any(
            c["type"] == "Established" and c["status"] == "True"
            for c in (control_plane.get(path) or {}).get("status", {}).get("conditions", [])
        ):
            assert time.monotonic() < deadline, "the CRD was never served"
            time.sleep(0.2)
        deployed = kcli("deploy", "--kustomize-dir", tree, image=V1, overlay="keda-test")
        assert deployed.exit_code == 0, deployed.stdout
        scaled = api.get("keda.sh/v1alpha1", "ScaledObject", k8s_namespace, "digits-serving")
        assert scaled is not None
        assert scaled["spec"]["scaleTargetRef"]["name"] == "digits-serving"
        torn = kcli("teardown", overlay="keda-test")
        assert torn.exit_code == 0, torn.stdout
        deleted = torn.json()["deleted"]
        assert "ScaledObject/digits-serving" in deleted
        assert api.list("autoscaling/v2", "HorizontalPodAutoscaler", k8s_namespace) == []
        assert api.get("keda.sh/v1alpha1", "ScaledObject", k8s_namespace, "digits-serving") is None
    finally:
        api.request("DELETE", path, allow_404=True)
