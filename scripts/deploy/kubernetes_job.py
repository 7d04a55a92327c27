"""A Job run to its end through the API server, always deleted afterwards.

Created (its Service first), then watched by polling the Job and its pods:

* ``Complete`` → succeeded;
* ``Failed`` → the Job controller's reason (``DeadlineExceeded``,
  ``BackoffLimitExceeded``…) with each pod's end (``OOMKilled``, ``Evicted``, an exit
  code and its message);
* a pod that cannot pull its image (``ErrImagePull``, ``ImagePullBackOff``,
  ``InvalidImageName``) fails the run at once: an analysis Job whose image never
  pulled must not count as a pass (Argo Rollouts #3562);
* a pod still unschedulable after ``schedule_grace_s``, a Job deleted by someone else,
  or no end within ``timeout_s`` also fail it.

The pods' logs are read right after, before ``ttlSecondsAfterFinished`` could remove
them; then the Job and its Service are deleted, also on error and Ctrl-C.
"""

from __future__ import annotations

import time
from typing import Any

from scripts.deploy.jobs import JobRun, PodEnd
from scripts.deploy.kube_api import KubeApi
from scripts.errors import PipelineError
from scripts.log import log

IMAGE_PULL_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
CONFIG_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError"})
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"


def _true_conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        str(c.get("type")): c
        for c in obj.get("status", {}).get("conditions", []) or []
        if c.get("status") == "True"
    }


def pod_end(pod: dict[str, Any]) -> PodEnd:
    meta, status = pod.get("metadata", {}), pod.get("status", {})
    index_text = meta.get("labels", {}).get(INDEX_LABEL) or meta.get("annotations", {}).get(
        "batch.kubernetes.io/job-completion-index", "0"
    )
    end = PodEnd(
        name=meta.get("name", "?"),
        index=int(index_text) if str(index_text).isdigit() else 0,
        phase=status.get("phase", "Unknown"),
        reason=status.get("reason", ""),  # Evicted, DeadlineExceeded…
        message=status.get("message", ""),
    )
    for cs in status.get("containerStatuses", []) or []:
        state = cs.get("state", {})
        if "terminated" in state:
            t = state["terminated"]
            return PodEnd(
                end.name,
                end.index,
                end.phase,
                end.reason or t.get("reason", ""),
                t.get("exitCode"),
                end.message or t.get("message", ""),
            )
        if "waiting" in state and state["waiting"].get("reason"):
            w = state["waiting"]
            return PodEnd(end.name, end.index, end.phase, w["reason"], None, w.get("message", ""))
    scheduled: dict[str, Any] = next(
        (c for c in status.get("conditions", []) or [] if c.get("type") == "PodScheduled"), {}
    )
    if scheduled.get("status") == "False":
        return PodEnd(
            end.name,
            end.index,
            end.phase,
            scheduled.get("reason", "Unschedulable"),
            None,
            scheduled.get("message", ""),
        )
    return end


class KubernetesJobRunner:
    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        *,
        poll_s: float = 1.0,
        schedule_grace_s: float = 180.0,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.poll_s = poll_s
        self.schedule_grace_s = schedule_grace_s

    def run(self, objects: list[dict[str, Any]], *, timeout_s: float) -> JobRun:
        job = next(o for o in objects if o["kind"] == "Job")
        name = job["metadata"]["name"]
        image = job["spec"]["template"]["spec"]["containers"][0].get("image", "")
        created: list[dict[str, Any]] = []
        started = time.monotonic()
        try:
            for obj in sorted(objects, key=lambda o: o["kind"] == "Job"):
                self.api.create(obj, self.namespace)
                created.append(obj)
            log.info("generator Job %s created in %s; waiting for it", name, self.namespace)
            run = self._wait(name, image, started, timeout_s)
            run.logs = self._logs(run.pods)
            run.elapsed_s = time.monotonic() - started
            return run
        finally:
            self._delete(created)

    def _wait(self, name: str, image: str, started: float, timeout_s: float) -> JobRun:
        deadline = started + timeout_s
        while True:
            live = self.api.get("batch/v1", "Job", self.namespace, name)
            pods = [
                pod_end(p)
                for p in self.api.list(
                    "v1", "Pod", self.namespace, labels=f"{JOB_NAME_LABEL}={name}"
                )
            ]
            pods.sort(key=lambda p: (p.index, p.name))
            if live is None:
                return JobRun(name, False, "the generator Job was deleted while it ran", pods)
            conditions = _true_conditions(live)
            if "Complete" in conditions:
                return JobRun(name, True, "", pods)
            if "Failed" in conditions:
                c = conditions["Failed"]
                return JobRun(name, False, _job_failure(live, c, pods), pods)
            for pod in pods:
                if pod.reason in IMAGE_PULL_REASONS:
                    return JobRun(
                        name,
                        False,
                        f"the generator image {image} cannot be pulled ({pod.reason}: "
                        f"{pod.message.strip()[:300]}); no load was generated, so nothing "
                        "was measured",
                        pods,
                    )
                if pod.reason in CONFIG_REASONS:
                    return JobRun(name, False, f"the generator pod cannot start: "
                                  f"{pod.describe()}", pods)  # fmt: skip
                waited = time.monotonic() - started
                if pod.reason == "Unschedulable" and waited > self.schedule_grace_s:
                    return JobRun(
                        name,
                        False,
                        f"the generator pod could not be scheduled in {waited:.0f} s: "
                        f"{pod.message.strip()[:300]}",
                        pods,
                    )
            if time.monotonic() > deadline:
                return JobRun(
                    name,
                    False,
                    f"the generator Job did not finish in {timeout_s:.0f} s "
                    f"({'; '.join(p.describe() for p in pods) or 'no pods'})",
                    pods,
                )
            time.sleep(self.poll_s)

    def _logs(self, pods: list[PodEnd]) -> dict[int, str]:
        logs: dict[int, str] = {}
        for pod in pods:
            try:
                text = self.api.pod_log(self.namespace, pod.name, "locust")
            except PipelineError as exc:  # a pod that never started has no log
                log.warning("cannot read the log of %s: %s", pod.name, exc.what)
                continue
            if text is not None:
                logs[pod.index] = text
        return logs

    def _delete(self, created: list[dict[str, Any]]) -> None:
        for obj in reversed(created):
            try:
                self.api.delete(
                    obj["apiVersion"],
                    obj["kind"],
                    self.namespace,
                    obj["metadata"]["name"],
                    propagation="Background",  # its pods go with it, at once
                )
            except PipelineError as exc:
                log.error(
                    "could not delete %s/%s: %s (its ttlSecondsAfterFinished removes it)",
                    obj["kind"],
                    obj["metadata"]["name"],
                    exc.what,
                )


def _job_failure(job: dict[str, Any], condition: dict[str, Any], pods: list[PodEnd]) -> str:
    reason = condition.get("reason", "")
    ended = "; ".join(p.describe() for p in pods if p.phase != "Succeeded") or "no pods"
    if reason == "DeadlineExceeded":
        deadline = job.get("spec", {}).get("activeDeadlineSeconds")
        return (
            f"the generator Job exceeded its deadline (activeDeadlineSeconds {deadline}): {ended}"
        )
    message = condition.get("message", "")
    return f"the generator Job failed ({reason or 'Failed'}: {message}): {ended}"
