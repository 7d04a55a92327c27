"""Waiting for a Deployment the way ``kubectl rollout status`` does, and saying why it failed.

Done when ``metadata.generation <= status.observedGeneration`` and the updated,
current and available replica counts all reach ``spec.replicas``; failed when the
``Progressing`` condition says ``ProgressDeadlineExceeded``. On failure the pods'
conditions, container waiting reasons (``ImagePullBackOff``, ``CrashLoopBackOff``),
last terminations (``OOMKilled``) and recent events are reported; a container that died
with SIGILL is explained by its base's CPU features and its node's family
(scripts/deploy/cpu_diagnosis.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scripts.deploy.cpu_diagnosis import CpuCrash, CpuDiagnosis
from scripts.deploy.kube_api import KubeApi
from scripts.errors import DeployError, PipelineTimeoutError
from scripts.log import log


@dataclass(frozen=True)
class RolloutState:
    done: bool
    failed: bool
    message: str


def rollout_state(deployment: dict[str, Any]) -> RolloutState:
    """kubectl's DeploymentStatusViewer, as a pure function."""
    meta = deployment.get("metadata", {})
    spec = deployment.get("spec", {})
    status = deployment.get("status", {})
    name = meta.get("name", "?")
    if meta.get("generation", 0) > status.get("observedGeneration", 0):
        return RolloutState(False, False, f"waiting for {name}'s spec update to be observed")
    for condition in status.get("conditions", []):
        if (
            condition.get("type") == "Progressing"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return RolloutState(
                False,
                True,
                f"{name} exceeded its progress deadline "
                f"({spec.get('progressDeadlineSeconds', 600)} s)",
            )
    wanted = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    current = status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    if updated < wanted:
        return RolloutState(False, False, f"{name}: {updated} of {wanted} new replicas updated")
    if current > updated:
        return RolloutState(
            False, False, f"{name}: {current - updated} old replicas pending termination"
        )
    if available < updated:
        return RolloutState(
            False, False, f"{name}: {available} of {updated} updated replicas available"
        )
    return RolloutState(True, False, f"{name} successfully rolled out")


@dataclass(frozen=True)
class Diagnosis:
    findings: list[str]
    cpu_crashes: list[CpuCrash]  # containers that died with SIGILL


def diagnose(api: KubeApi, namespace: str, deployment: dict[str, Any]) -> Diagnosis:
    """Why the pods are not ready: conditions, waiting reasons, SIGILL, OOM kills, events."""
    selector = deployment.get("spec", {}).get("selector", {}).get("matchLabels", {})
    labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    findings: list[str] = []
    cpu = CpuDiagnosis(api)
    pods = api.list("v1", "Pod", namespace, labels=labels) if labels else []
    for pod in pods:
        pod_name = pod["metadata"]["name"]
        status = pod.get("status", {})
        for cs in status.get("containerStatuses", []):
            waiting = cs.get("state", {}).get("waiting")
            if waiting:
                findings.append(
                    f"pod {pod_name}: container {cs['name']} waiting: "
                    f"{waiting.get('reason')} {waiting.get('message', '')}".strip()
                )
            sigill = cpu.check(pod, cs)
            if sigill is not None:
                findings.append(sigill)
                continue
            terminated = cs.get("lastState", {}).get("terminated")
            if terminated and terminated.get("reason"):
                detail = f": {terminated['message']}" if terminated.get("message") else ""
                findings.append(
                    f"pod {pod_name}: container {cs['name']} last terminated: "
                    f"{terminated['reason']} (exit {terminated.get('exitCode')}){detail}"
                )
        for condition in status.get("conditions", []):
            if condition.get("status") != "True" and condition.get("reason"):
                findings.append(
                    f"pod {pod_name}: {condition['type']}=False "
                    f"({condition['reason']}: {condition.get('message', '')})"
                )
        events = api.list("v1", "Event", namespace, fields=f"involvedObject.name={pod_name}")
        for event in events[-5:]:
            if event.get("type") == "Warning":
                findings.append(
                    f"pod {pod_name} event: {event.get('reason')}: {event.get('message')}"
                )
    if not pods:
        findings.append(
            "no pods were created (check quotas, admission webhooks and the ReplicaSet's events)"
        )
    return Diagnosis(findings, cpu.crashes)


def _hint(diagnosis: Diagnosis) -> str:
    if diagnosis.cpu_crashes:  # before CrashLoopBackOff: the same crash, explained
        return diagnosis.cpu_crashes[0].cause
    text = " ".join(diagnosis.findings)
    if "ImagePullBackOff" in text or "ErrImagePull" in text:
        return "the image cannot be pulled: check the digest exists and the node's pull access"
    if "OOMKilled" in text:
        return "the container ran out of memory: raise resources.limits.memory in the overlay"
    if "Unschedulable" in text:
        return (
            "no node can take the pod: its requests do not fit any node its nodeSelector "
            "allows (add nodes to the pool, or lower the overlay's requests)"
        )
    if "CrashLoopBackOff" in text:
        return (
            "the server keeps crashing: see `kubectl logs` of the pod (a model that fails to load?)"
        )
    return "see the findings above and `kubectl describe` the pods"


def wait_for_rollout(
    api: KubeApi,
    namespace: str,
    name: str,
    timeout: float,
    *,
    poll: float = 1.0,
    heartbeat: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Block until the rollout is done; DeployError / PipelineTimeoutError with the diagnosis."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        deployment = api.get("apps/v1", "Deployment", namespace, name)
        if deployment is None:
            raise DeployError(
                f"Deployment {namespace}/{name} disappeared during the rollout",
                cause="someone deleted it",
                fix="rerun the deploy",
            )
        state = rollout_state(deployment)
        if state.message != last:
            log.info("%s", state.message)
            last = state.message
        if state.done:
            return deployment
        if state.failed or time.monotonic() >= deadline:
            diagnosis = diagnose(api, namespace, deployment)
            detail = "; ".join(diagnosis.findings) or "no pod-level findings"
            # A SIGILL is not slow loading: its own fix on either path.
            cpu_fix = diagnosis.cpu_crashes[0].fix if diagnosis.cpu_crashes else None
            if state.failed:
                raise DeployError(
                    f"rollout of {namespace}/{name} failed: {state.message}. {detail}",
                    cause=_hint(diagnosis),
                    fix=cpu_fix
                    or "fix the cause, then deploy again (the stable track was "
                    "not touched by a canary)",
                )
            raise PipelineTimeoutError(
                f"rollout of {namespace}/{name} not ready after {timeout:.0f} s: "
                f"{state.message}. {detail}",
                cause=_hint(diagnosis),
                fix=cpu_fix or "raise --timeout if the model is just slow to load",
            )
        if heartbeat is not None:
            heartbeat()
        time.sleep(poll)
