"""The Kubernetes deploy target: server-side apply, canary beside stable, promote, roll back.

Rules that keep production safe:

* a canary deploy applies only the canary's objects: a failed canary never touches
  the stable Deployment;
* promote requires a canary running exactly the image being promoted, records the
  stable image it replaces in an annotation, waits for the stable rollout, and only
  then removes the canary;
* every mutating operation holds the namespace's deploy Lease.
"""

from __future__ import annotations

import copy
import difflib
import time
from typing import Any

import yaml

from scripts.deploy.jobs import JobRun
from scripts.deploy.kube_api import KubeApi
from scripts.deploy.lease import DeployLock
from scripts.deploy.rollout import rollout_state, wait_for_rollout
from scripts.deploy.target import (
    CANARY,
    FIELD_MANAGER,
    PREVIOUS_IMAGE,
    STABLE,
    DeployOptions,
    DeployResult,
    StatusResult,
    TrackStatus,
    canary_objects,
    deployment_of,
    image_of,
    stable_objects,
    track_of,
)
from scripts.errors import DeployError, PipelineTimeoutError
from scripts.log import log
from scripts.manifests.render import Rendered

_VOLATILE = (
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
)
STABLE_NAME = "tf-serving"
ROLLED_BACK_FROM = "tf-release-pipeline.dev/rolled-back-from"
CANARY_NAME = "tf-serving-canary"


def _name(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def _comparable(obj: dict[str, Any] | None) -> str:
    if obj is None:
        return ""
    clean = copy.deepcopy(obj)
    clean.pop("status", None)
    for key in _VOLATILE:
        clean.get("metadata", {}).pop(key, None)
    return yaml.safe_dump(clean, sort_keys=True)


class KubernetesTarget:
    name = "k8s"

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        environment: str,
        *,
        holder: str | None = None,
        poll_s: float = 1.0,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.environment = environment
        self.lock = DeployLock(api, namespace, environment, holder=holder)
        self.poll_s = poll_s

    # -- helpers -------------------------------------------------------------------
    def _deployment(self, name: str) -> dict[str, Any] | None:
        return self.api.get("apps/v1", "Deployment", self.namespace, name)

    def _apply_all(
        self, objects: list[dict[str, Any]], result: DeployResult, options: DeployOptions
    ) -> None:
        # ConfigMaps first: a Deployment must never reference config that is not there yet.
        ordered = sorted(
            objects, key=lambda o: (o["kind"] != "ConfigMap", o["kind"] == "Deployment")
        )
        diffs: list[str] = []
        for obj in ordered:
            live = (
                self.api.get(
                    obj["apiVersion"], obj["kind"], self.namespace, obj["metadata"]["name"]
                )
                if options.dry_run
                else None
            )
            applied = self.api.apply(obj, self.namespace, FIELD_MANAGER, dry_run=options.dry_run)
            result.applied.append(_name(obj))
            if options.dry_run:
                before, after = _comparable(live), _comparable(applied)
                if before != after:
                    diffs.extend(
                        difflib.unified_diff(
                            before.splitlines(keepends=True),
                            after.splitlines(keepends=True),
                            fromfile=f"live/{_name(obj)}",
                            tofile=f"apply/{_name(obj)}",
                        )
                    )
        result.diff = "".join(diffs)

    def _wait(self, name: str, options: DeployOptions) -> str:
        if not options.wait or options.dry_run:
            return "not waited"
        deployment = wait_for_rollout(
            self.api,
            self.namespace,
            name,
            options.timeout_s,
            poll=self.poll_s,
            heartbeat=self.lock.renew,
        )
        return rollout_state(deployment).message

    def _delete(
        self, objects: list[dict[str, Any]], result: DeployResult, options: DeployOptions
    ) -> None:
        """Delete, and wait until the objects are gone (pods included: foreground deletion).

        A Deployment marked for deletion lingers until the garbage collector has removed
        its ReplicaSets and pods; a canary applied again meanwhile would be deleted with
        it. So deletion completes before the lock is released."""
        ordered = sorted(objects, key=lambda o: o["kind"] != "Deployment")
        for obj in ordered:
            if options.dry_run or self.api.delete(
                obj["apiVersion"], obj["kind"], self.namespace, obj["metadata"]["name"]
            ):
                result.deleted.append(_name(obj))
        if options.dry_run or not options.wait:
            return
        deadline = time.monotonic() + options.timeout_s
        for obj in ordered:
            name = obj["metadata"]["name"]
            while self.api.get(obj["apiVersion"], obj["kind"], self.namespace, name) is not None:
                if time.monotonic() > deadline:
                    raise PipelineTimeoutError(
                        f"{obj['kind']}/{name} in {self.namespace} was not gone after "
                        f"{options.timeout_s:.0f} s",
                        cause="its pods are not terminating (a finalizer, or an unhealthy "
                        "node or controller)",
                        fix=f"kubectl -n {self.namespace} describe {obj['kind'].lower()} {name}",
                    )
                self.lock.renew()
                time.sleep(self.poll_s)

    def _live_canary(self) -> list[dict[str, Any]]:
        """The canary's live objects (by label, so it works without the rendered manifests)."""
        labels = f"app.kubernetes.io/name=tf-serving,track={CANARY}"
        found = []
        for api_version, kind in (
            ("apps/v1", "Deployment"),
            ("v1", "Service"),
            ("v1", "ConfigMap"),
        ):
            found += [
                {"apiVersion": api_version, "kind": kind, "metadata": o["metadata"]}
                for o in self.api.list(api_version, kind, self.namespace, labels=labels)
            ]
        return found

    # -- operations ------------------------------------------------------------------
    def deploy(self, rendered: Rendered, *, canary: bool, options: DeployOptions) -> DeployResult:
        objects = canary_objects(rendered) if canary else stable_objects(rendered)
        track = CANARY if canary else STABLE
        deployment = deployment_of(objects, track)
        result = DeployResult(
            action=f"{'canary-' if canary else ''}deployed",
            target=self.name,
            namespace=self.namespace,
            image=image_of(deployment),
            dry_run=options.dry_run,
        )
        with self.lock.held():
            if not canary:
                live = self._deployment(deployment["metadata"]["name"])
                if live is not None:
                    result.previous_image = image_of(live)
                    _annotate_previous(deployment, result.previous_image)
            self._apply_all(objects, result, options)
            result.rollout = self._wait(deployment["metadata"]["name"], options)
        rest, grpc = self._endpoints(deployment["metadata"]["name"])
        result.endpoints[track], result.endpoints[f"{track}_grpc"] = rest, grpc
        return result

    def promote(self, rendered: Rendered, options: DeployOptions) -> DeployResult:
        stable = stable_objects(rendered)
        deployment = deployment_of(stable, STABLE)
        candidate = image_of(deployment)
        result = DeployResult(
            action="promoted",
            target=self.name,
            namespace=self.namespace,
            image=candidate,
            dry_run=options.dry_run,
        )
        with self.lock.held():
            canary = self._deployment(CANARY_NAME)
            if canary is None:
                raise DeployError(
                    f"no canary in {self.namespace} to promote",
                    cause="the canary was never deployed, or was rolled back",
                    fix="deploy --canary the candidate and gate it before promoting",
                )
            if image_of(canary) != candidate:
                raise DeployError(
                    f"the canary runs {image_of(canary)}, not {candidate}",
                    cause="promoting an image that was not the one tested",
                    fix="promote the image the canary runs, or deploy the new one as a canary",
                )
            live = self._deployment(deployment["metadata"]["name"])
            result.previous_image = image_of(live) if live else None
            _annotate_previous(deployment, result.previous_image)
            self._apply_all(stable, result, options)
            result.rollout = self._wait(deployment["metadata"]["name"], options)
            self._delete(self._live_canary(), result, options)
        return result

    def rollback(self, options: DeployOptions) -> DeployResult:
        result = DeployResult(
            action="none", target=self.name, namespace=self.namespace, dry_run=options.dry_run
        )
        with self.lock.held():
            canary = self._live_canary()
            if canary:
                # The stable track is not touched: the canary just goes away.
                self._delete(canary, result, options)
                result.action = "canary-removed"
                return result
            live = self._deployment(STABLE_NAME)
            previous = (live or {}).get("metadata", {}).get("annotations", {}).get(PREVIOUS_IMAGE)
            if live is None or not previous or previous == image_of(live):
                result.rollout = "nothing to roll back: no canary and no previous stable image"
                return result
            restored = _restorable(live, previous)
            result.image, result.previous_image = previous, image_of(live)
            self._apply_all([restored], result, options)
            result.rollout = self._wait(STABLE_NAME, options)
            result.action = "restored"
        return result

    def status(self) -> StatusResult:
        lease = self.api.get("coordination.k8s.io/v1", "Lease", self.namespace, self.lock.name)
        return StatusResult(
            target=self.name,
            namespace=self.namespace,
            stable=self._track(STABLE_NAME),
            canary=self._track(CANARY_NAME),
            lock_holder=(lease or {}).get("spec", {}).get("holderIdentity"),
        )

    def _track(self, name: str) -> TrackStatus:
        live = self._deployment(name)
        if live is None or live.get("metadata", {}).get("deletionTimestamp"):
            return TrackStatus(exists=False)  # being deleted: no longer a track
        status = live.get("status", {})
        rest, grpc = self._endpoints(name)
        return TrackStatus(
            exists=True,
            image=image_of(live),
            replicas=live.get("spec", {}).get("replicas", 0),
            ready=status.get("readyReplicas", 0),
            rollout=rollout_state(live).message,
            previous_image=live.get("metadata", {}).get("annotations", {}).get(PREVIOUS_IMAGE),
            endpoints=rest,
            grpc_endpoints=grpc,
        )

    def _endpoints(self, service: str) -> tuple[list[str], list[str]]:
        """In-cluster addresses of a track's Service (named like its Deployment): REST, gRPC.

        Only reachable from inside the cluster's network; `run` checks reachability
        before loading them and `--canary-endpoint`/`--baseline-endpoint` override them.
        """
        host = f"{service}.{self.namespace}.svc"
        return [f"http://{host}:8501"], [f"{host}:8500"]

    def run_job(self, objects: list[dict[str, Any]], *, timeout_s: float) -> JobRun:
        from scripts.deploy.kubernetes_job import KubernetesJobRunner

        runner = KubernetesJobRunner(self.api, self.namespace, poll_s=self.poll_s)
        return runner.run(objects, timeout_s=timeout_s)

    def teardown(self, options: DeployOptions) -> DeployResult:
        result = DeployResult(
            action="torn-down", target=self.name, namespace=self.namespace, dry_run=options.dry_run
        )
        labels = "app.kubernetes.io/part-of=tf-release-pipeline"
        with self.lock.held():
            for api_version, kind in (
                ("apps/v1", "Deployment"),
                ("v1", "Service"),
                ("policy/v1", "PodDisruptionBudget"),
                ("autoscaling/v2", "HorizontalPodAutoscaler"),
                ("networking.k8s.io/v1", "NetworkPolicy"),
                ("v1", "ConfigMap"),
                ("batch/v1", "Job"),  # a generator left by a runner that died
            ):
                objs = [
                    {"apiVersion": api_version, "kind": kind, "metadata": o["metadata"]}
                    for o in self.api.list(api_version, kind, self.namespace, labels=labels)
                ]
                self._delete(objs, result, options)
        return result


def _annotate_previous(deployment: dict[str, Any], previous: str | None) -> None:
    """Record the stable image this apply replaces (rollback restores it)."""
    if previous and previous != image_of(deployment):
        deployment["metadata"].setdefault("annotations", {})[PREVIOUS_IMAGE] = previous


def _restorable(live: dict[str, Any], image: str) -> dict[str, Any]:
    """The live stable Deployment, as an apply body, with its previous image back."""
    body = copy.deepcopy(live)
    body.pop("status", None)
    for key in _VOLATILE:
        body["metadata"].pop(key, None)
    annotations = body["metadata"].setdefault("annotations", {})
    # Dropping the annotation (we own it) means a second rollback cannot flip back.
    annotations.pop(PREVIOUS_IMAGE, None)
    annotations[ROLLED_BACK_FROM] = image_of(live) or ""
    body["spec"]["template"]["spec"]["containers"][0]["image"] = image
    body["apiVersion"], body["kind"] = "apps/v1", "Deployment"
    log.info("restoring %s to %s", STABLE_NAME, image)
    return body


__all__ = ["KubernetesTarget", "track_of"]
