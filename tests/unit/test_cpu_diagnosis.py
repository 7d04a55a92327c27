"""A canary that dies with SIGILL: recognised from its pod status, explained by its base's
CPU features and its node's family (scripts/deploy/cpu_diagnosis.py), on pods shaped like
the API server's."""

from __future__ import annotations

from typing import Any

import pytest

from scripts.deploy.cpu_diagnosis import CpuDiagnosis, is_sigill, sigill_of
from scripts.deploy.rollout import _hint, diagnose
from scripts.errors import AuthError
from scripts.image.bases import (
    BASE_ANNOTATION,
    CPU_FEATURES_ANNOTATION,
    FAMILIES_ANNOTATION,
    NODE_FAMILY_LABEL_ANNOTATION,
)

C2_FEATURES = "avx,avx2,fma,avx512f,avx512cd,avx512bw,avx512dq,avx512vl,avx512_vnni"
C2_BASE = {
    BASE_ANNOTATION: "c2-cascadelake",
    CPU_FEATURES_ANNOTATION: C2_FEATURES,
    FAMILIES_ANNOTATION: "c2",
}
LACKING = "lacking: avx512f, avx512cd, avx512bw, avx512dq, avx512vl, avx512_vnni"


class Api:
    """What diagnosis asks of the API: the pods, their events, and a node by name."""

    def __init__(self, pods: list[dict[str, Any]], nodes: dict[str, dict[str, str]]) -> None:
        self.pods = pods
        self.nodes = nodes  # name → labels
        self.forbidden = False
        self.node_reads: list[str] = []

    def list(self, api_version: str, kind: str, namespace: str, **_: Any) -> list[dict[str, Any]]:
        return self.pods if kind == "Pod" else []

    def request(self, method: str, path: str, **_: Any) -> dict[str, Any] | None:
        assert method == "GET" and path.startswith("/api/v1/nodes/"), path
        name = path.rsplit("/", 1)[1]
        self.node_reads.append(name)
        if self.forbidden:
            raise AuthError(
                f'the API server refused GET {path}: nodes "{name}" is forbidden: User '
                '"deployer" cannot get resource "nodes" in API group "" at the cluster scope'
            )
        if name not in self.nodes:
            return None
        return {"kind": "Node", "metadata": {"name": name, "labels": self.nodes[name]}}


def terminated(
    exit_code: int = 132, reason: str = "Error", message: str = "", signal: int | None = None
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": reason,
        "startedAt": "2026-12-01T08:00:00Z",
        "finishedAt": "2026-12-01T08:00:00Z",
        "containerID": "containerd://" + "a" * 64,
    }
    if message:
        found["message"] = message
    if signal is not None:
        found["signal"] = signal
    return found


def pod(
    *,
    last: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    node: str = "pool-2vcpu-0",
) -> dict[str, Any]:
    """A crash-looping canary pod as the API server returns it."""
    status: dict[str, Any] = {
        "name": "tf-serving",
        "image": "registry.example/models/digits@sha256:" + "2" * 64,
        "imageID": "registry.example/models/digits@sha256:" + "2" * 64,
        "ready": False,
        "started": False,
        "restartCount": 3,
        "state": {"terminated": state}
        if state
        else {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": "back-off 40s restarting failed container=tf-serving",
            }
        },
        "lastState": {"terminated": last} if last else {},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "digits-serving-canary-5d9c7b-x2x4q",
            "namespace": "models",
            "labels": {"app.kubernetes.io/name": "tf-serving", "track": "canary"},
            "annotations": dict(C2_BASE if annotations is None else annotations),
        },
        "spec": {"nodeName": node, "containers": [{"name": "tf-serving"}]},
        "status": {
            "phase": "Running",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "ContainersNotReady",
                    "message": "containers with unready status: [tf-serving]",
                }
            ],
            "containerStatuses": [status],
        },
    }


DEPLOYMENT = {"spec": {"selector": {"matchLabels": {"track": "canary"}}}}
FAMILY = "cloud.google.com/machine-family"
E2_NODE = {"pool-2vcpu-0": {FAMILY: "e2"}}


@pytest.mark.parametrize(
    "status",
    [
        {"lastState": {"terminated": terminated()}},  # exit 132 via lastState
        {"state": {"terminated": terminated()}},  # exit 132 via state
        {"lastState": {"terminated": terminated(exit_code=0, signal=4)}},
        {"lastState": {"terminated": terminated(exit_code=1, message="Illegal instruction")}},
        {"lastState": {"terminated": terminated(exit_code=2, reason="SIGILL")}},
        {  # an earlier, other crash; this one SIGILL
            "lastState": {"terminated": terminated(exit_code=1)},
            "state": {"terminated": terminated()},
        },
    ],
)
def test_sigill_is_recognised_by_exit_code_signal_or_text(status: dict[str, Any]) -> None:
    assert sigill_of({"name": "tf-serving", **status}) is not None


@pytest.mark.parametrize(
    "found",
    [
        terminated(exit_code=137, reason="OOMKilled"),
        terminated(exit_code=1, message="Failed to load the SavedModel"),
        terminated(exit_code=139, reason="Error", signal=11),
    ],
)
def test_other_crashes_are_not_sigill(found: dict[str, Any]) -> None:
    assert not is_sigill(found)
    assert sigill_of({"lastState": {"terminated": found}, "state": {"waiting": {}}}) is None


def test_a_sigill_names_the_features_the_nodes_family_lacks_and_the_fix() -> None:
    api = Api([pod(last=terminated(message="illegal instruction"))], E2_NODE)
    diagnosis = diagnose(api, "models", DEPLOYMENT)  # type: ignore[arg-type]
    text = "; ".join(diagnosis.findings)
    assert (
        "pod digits-serving-canary-5d9c7b-x2x4q: container tf-serving died with SIGILL "
        "(illegal instruction, exit 132) on node pool-2vcpu-0 (machine family e2): its base "
        f"c2-cascadelake needs {C2_FEATURES.replace(',', ', ')}; e2 CPUs guarantee avx, avx2, "
        f"fma — {LACKING}"
    ) in text
    assert "last terminated" not in text  # the SIGILL finding replaces the generic one
    assert "CrashLoopBackOff" in text  # the waiting reason stays
    (crash,) = diagnosis.cpu_crashes
    cause = _hint(diagnosis)
    assert cause == crash.cause and "keeps crashing" not in cause
    assert "CPU instructions node pool-2vcpu-0's CPU lacks" in cause
    assert "built for c2, the node is e2" in cause
    assert "serve it on nodes of c2" in crash.fix
    assert "nodeSelector/affinity for e2" in crash.fix
    assert "build this model on a base for e2 (e.g. stock: --base stock" in crash.fix


def test_the_node_is_read_once_per_node_and_under_the_label_render_names() -> None:
    label = "example.com/cpu-family"
    annotations = {**C2_BASE, NODE_FAMILY_LABEL_ANNOTATION: label}
    pods = [pod(last=terminated(), annotations=annotations) for _ in range(2)]
    api = Api(pods, {"pool-2vcpu-0": {label: "n1"}})
    diagnosis = diagnose(api, "models", DEPLOYMENT)  # type: ignore[arg-type]
    assert api.node_reads == ["pool-2vcpu-0"]
    assert len(diagnosis.cpu_crashes) == 2
    assert "(machine family n1)" in diagnosis.findings[1]
    assert "n1 CPUs guarantee avx — lacking: avx2, fma, avx512f" in diagnosis.findings[1]


def test_without_a_features_annotation_the_bases_needs_are_unknown() -> None:
    ref = "registry.example/serving/custom-tf@sha256:" + "c" * 64
    api = Api([pod(state=terminated(), annotations={BASE_ANNOTATION: ref})], E2_NODE)
    diagnosis = diagnose(api, "models", DEPLOYMENT)  # type: ignore[arg-type]
    (crash,) = diagnosis.cpu_crashes
    assert f"its base {ref}'s CPU needs are unknown" in crash.finding
    assert "outside kustomize/bases.yaml" in crash.finding
    assert "(machine family e2)" in crash.finding
    assert f"add base {ref} to kustomize/bases.yaml with its cpu_features" in crash.fix
    assert "render pins it" in crash.fix


def test_a_pod_without_annotations_still_says_sigill() -> None:
    api = Api([pod(last=terminated(exit_code=0, signal=4), annotations={})], E2_NODE)
    (crash,) = diagnose(api, "models", DEPLOYMENT).cpu_crashes  # type: ignore[arg-type]
    assert "died with SIGILL (illegal instruction, signal 4)" in crash.finding
    assert "the image's base's CPU needs are unknown" in crash.finding
    assert "add the image's base to kustomize/bases.yaml" in crash.fix


def test_a_node_the_deployer_may_not_read_leaves_the_family_unknown_and_says_why() -> None:
    api = Api([pod(last=terminated())], E2_NODE)
    api.forbidden = True
    diagnosis = diagnose(api, "models", DEPLOYMENT)  # type: ignore[arg-type]
    (crash,) = diagnosis.cpu_crashes
    assert "on node pool-2vcpu-0 (machine family unknown: the deployer may not read Nodes" in (
        crash.finding
    )
    assert "kustomize/rbac/bench" in crash.finding
    assert f"its base c2-cascadelake needs {C2_FEATURES.replace(',', ', ')}" in crash.finding
    assert "lacking" not in crash.finding
    assert "serve it on nodes of c2" in crash.fix
    assert "let the deployer read Nodes" in crash.fix


@pytest.mark.parametrize(
    ("nodes", "why"),
    [({}, "node pool-2vcpu-0 no longer exists"), ({"pool-2vcpu-0": {}}, "has no cloud.google")],
)
def test_a_missing_node_or_label_leaves_the_family_unknown(
    nodes: dict[str, dict[str, str]], why: str
) -> None:
    (crash,) = diagnose(Api([pod(last=terminated())], nodes), "m", DEPLOYMENT).cpu_crashes  # type: ignore[arg-type]
    assert why in crash.finding


def test_other_crashes_keep_their_findings_and_hints_and_read_no_node() -> None:
    api = Api([pod(last=terminated(exit_code=137, reason="OOMKilled"))], E2_NODE)
    diagnosis = diagnose(api, "models", DEPLOYMENT)  # type: ignore[arg-type]
    assert diagnosis.cpu_crashes == []
    assert api.node_reads == []
    assert any("last terminated: OOMKilled (exit 137)" in f for f in diagnosis.findings)
    assert "ran out of memory" in _hint(diagnosis)
    cpu = CpuDiagnosis(api)  # type: ignore[arg-type]
    assert cpu.check(api.pods[0], api.pods[0]["status"]["containerStatuses"][0]) is None


def test_a_sigill_on_a_family_the_catalog_says_can_run_the_base_blames_the_catalog() -> None:
    stock = {BASE_ANNOTATION: "stock", CPU_FEATURES_ANNOTATION: "avx"}  # render's, for stock
    api = Api([pod(last=terminated(), annotations=stock)], E2_NODE)
    (crash,) = diagnose(api, "models", DEPLOYMENT).cpu_crashes  # type: ignore[arg-type]
    assert "e2 CPUs guarantee avx, avx2, fma — lacking: none" in crash.finding
    assert "beyond the ones kustomize/bases.yaml records for base stock (avx)" in crash.cause
    assert "record in base stock's cpu_features" in crash.fix
    assert "serve it on nodes of" not in crash.fix


def test_a_base_without_families_is_served_where_its_features_are_guaranteed() -> None:
    avx2 = {BASE_ANNOTATION: "custom-avx2", CPU_FEATURES_ANNOTATION: "avx,avx2,fma"}
    api = Api([pod(last=terminated(), annotations=avx2)], {"pool-2vcpu-0": {FAMILY: "n1"}})
    (crash,) = diagnose(api, "models", DEPLOYMENT).cpu_crashes  # type: ignore[arg-type]
    assert "n1 CPUs guarantee avx — lacking: avx2, fma" in crash.finding
    assert "base custom-avx2 needs avx, avx2, fma, the node is n1" in crash.cause
    assert "serve it on nodes of c2 or c2d or c3" in crash.fix
    assert "give base custom-avx2 its families: in kustomize/bases.yaml" in crash.fix
    assert "a base for n1 (e.g. stock: --base stock" in crash.fix
