"""The Kubernetes deploy target: server-side apply, canary beside stable, promote, roll back.

Rules that keep production safe:

* a canary deploy applies only the canary's objects: a failed canary never touches
  the stable Deployment;
* promote requires a canary running exactly the image being promoted, records the
  stable image it replaces in an annotation, waits for the stable rollout, and only
  then removes the canary;
* every mutating operation holds the model's deploy Lease;
* several models share a namespace: a target is bound to one model, finds its objects
  by the model's label (``app.kubernetes.io/instance``) and names them
  ``MODEL-serving[-canary]``, so it never touches another model's;
* when an autoscaler (an HPA, or KEDA's, in the manifests or live) drives the stable
  Deployment, the apply leaves ``spec.replicas`` to it: ownership is handed over once
  (the Kubernetes docs' "transferring ownership" between field managers), so a deploy
  neither resets nor fights the autoscaler. The canary keeps its fixed size.
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
from scripts.deploy.pod_endpoints import pod_endpoints, selector_of
from scripts.deploy.rollout import rollout_state, wait_for_rollout
from scripts.deploy.target import (
    BASELINE,
    CANARY,
    FIELD_MANAGER,
    PREVIOUS_IMAGE,
    ROLLED_BACK_FROM,
    STABLE,
    VOLATILE_METADATA,
    DeployOptions,
    DeployResult,
    StatusResult,
    TrackStatus,
    as_baseline,
    baseline_name,
    canary_objects,
    deployment_of,
    image_of,
    stable_objects,
    track_of,
)
from scripts.errors import DeployError, PipelineTimeoutError
from scripts.loadtest.job_spec import MODEL_LABEL as GENERATOR_MODEL_LABEL
from scripts.log import log
from scripts.manifests.render import MODEL_LABEL, PART_OF, PART_OF_LABEL, Rendered, serving_name

_VOLATILE = VOLATILE_METADATA
# Shares spec.replicas with the autoscaler so that the pipeline's manager can let go of
# it without the field being removed (and the Deployment reset to 1 replica).
REPLICAS_HANDOVER_MANAGER = "tf-release-pipeline-replicas-handover"
SERVING_LABEL = "app.kubernetes.io/name=tf-serving"
PIPELINE_LABEL = f"{PART_OF_LABEL}={PART_OF}"  # render puts it on every object


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
        model: str,
        holder: str | None = None,
        poll_s: float = 1.0,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.environment = environment
        self.model = model
        self.stable_name = serving_name(model)
        self.canary_name = serving_name(model, canary=True)
        self.baseline_name = baseline_name(self.canary_name)
        self.lock = DeployLock(api, namespace, environment, model=model, holder=holder)
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
            body = obj
            if obj["kind"] == "Deployment" and self._autoscaled(obj["metadata"]["name"], objects):
                body = self._leave_replicas_to_autoscaler(obj, options)
            applied = self.api.apply(body, self.namespace, FIELD_MANAGER, dry_run=options.dry_run)
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

    def _autoscaled(self, name: str, objects: list[dict[str, Any]]) -> bool:
        """Does an autoscaler drive Deployment ``name``: one in the manifests, or a live HPA
        (KEDA's own ``keda-hpa-*`` included)?"""
        for obj in objects:
            ref = obj.get("spec", {}).get("scaleTargetRef", {})
            if (
                obj["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")
                and ref.get("name") == name
                and ref.get("kind", "Deployment") == "Deployment"
            ):
                return True
        return any(
            hpa.get("spec", {}).get("scaleTargetRef", {}).get("name") == name
            and hpa["spec"]["scaleTargetRef"].get("kind") == "Deployment"
            for hpa in self.api.list("autoscaling/v2", "HorizontalPodAutoscaler", self.namespace)
        )

    def _leave_replicas_to_autoscaler(
        self, deployment: dict[str, Any], options: DeployOptions
    ) -> dict[str, Any]:
        """The Deployment's apply body without ``spec.replicas``, after handing the field
        over when this pipeline still owns it (a first deploy, or one from before)."""
        name = deployment["metadata"]["name"]
        live = self._deployment(name)
        body = copy.deepcopy(deployment)
        if options.dry_run:
            if live is not None:  # the diff shows what will really happen: no change
                body["spec"]["replicas"] = live.get("spec", {}).get("replicas", 1)
            return body
        if live is None:
            # Created at the overlay's size; the handover below follows at once.
            live = self.api.apply(deployment, self.namespace, FIELD_MANAGER)
        if _owns_replicas(live, FIELD_MANAGER):
            replicas = int(live.get("spec", {}).get("replicas", 1))
            log.info("%s: handing spec.replicas (%d) over to the autoscaler", name, replicas)
            self.api.apply(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": name},
                    "spec": {"replicas": replicas},
                },
                self.namespace,
                REPLICAS_HANDOVER_MANAGER,
            )
        body["spec"].pop("replicas", None)
        return body

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
            # Foreground only where there are dependents to wait for (a Deployment's
            # ReplicaSets and pods, a Job's pods); anything else goes at once (a custom
            # resource under foreground deletion waits for the garbage collector to
            # discover its kind, up to its 30 s resync after a CRD is installed).
            owner = obj["kind"] in ("Deployment", "Job")
            if options.dry_run or self.api.delete(
                obj["apiVersion"],
                obj["kind"],
                self.namespace,
                obj["metadata"]["name"],
                propagation="Foreground" if owner else "Background",
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
        """The canary's live objects and its fresh baseline's (by label, so it works
        without the rendered manifests): they come and go together."""
        return self._live_track(CANARY) + self._live_track(BASELINE)

    def _live_track(self, track: str) -> list[dict[str, Any]]:
        labels = f"{SERVING_LABEL},{MODEL_LABEL}={self.model},track={track}"
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
            wanted = canary and options.fresh_baseline
            baseline = self._fresh_baseline(objects, deployment) if wanted else []
            if canary and not baseline:
                # No fresh baseline wanted (or no stable to copy): an older one goes.
                self._delete(self._live_track(BASELINE), result, options)
            self._apply_all(objects + baseline, result, options)
            result.rollout = self._wait(deployment["metadata"]["name"], options)
            if baseline:
                waited = self._wait(self.baseline_name, options)
                result.rollout += f"; fresh baseline: {waited}"
        rest, grpc = self._endpoints(deployment["metadata"]["name"])
        result.endpoints[track], result.endpoints[f"{track}_grpc"] = rest, grpc
        if baseline:
            rest, grpc = self._endpoints(self.baseline_name)
            result.endpoints[BASELINE], result.endpoints[f"{BASELINE}_grpc"] = rest, grpc
        return result

    def _fresh_baseline(
        self, objects: list[dict[str, Any]], canary: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """The fresh baseline's Deployment (the live stable's pod template, the canary's
        size) and Service (the canary's, selecting it), or [] without a live stable."""
        stable = self._deployment(self.stable_name)
        if stable is None:
            return []
        replicas = int(canary.get("spec", {}).get("replicas", 1))
        found = [as_baseline(stable, self.baseline_name, replicas=replicas)]
        found[0]["apiVersion"], found[0]["kind"] = "apps/v1", "Deployment"
        found += [
            as_baseline(o, self.baseline_name)
            for o in objects
            if o["kind"] == "Service" and o["metadata"]["name"] == self.canary_name
        ]
        return found

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
            canary = self._deployment(self.canary_name)
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
            live = self._deployment(self.stable_name)
            previous = (live or {}).get("metadata", {}).get("annotations", {}).get(PREVIOUS_IMAGE)
            if live is None or not previous or previous == image_of(live):
                result.rollout = "nothing to roll back: no canary and no previous stable image"
                return result
            restored = _restorable(live, previous)
            if self._autoscaled(self.stable_name, []):
                restored["spec"].pop("replicas", None)  # the autoscaler's, not ours
            result.image, result.previous_image = previous, image_of(live)
            self._apply_all([restored], result, options)
            result.rollout = self._wait(self.stable_name, options)
            result.action = "restored"
        return result

    def status(self) -> StatusResult:
        lease = self.api.get("coordination.k8s.io/v1", "Lease", self.namespace, self.lock.name)
        return StatusResult(
            target=self.name,
            namespace=self.namespace,
            model=self.model,
            stable=self._track(self.stable_name),
            canary=self._track(self.canary_name),
            baseline=self._track(self.baseline_name),
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
        """In-cluster addresses of a track (its Service is named like its Deployment):
        REST, gRPC.

        The canary and the fresh baseline with two or more serving pods: each pod's own
        address (scripts/deploy/pod_endpoints.py), so the load spreads evenly and the gate
        weighs pods as units. Otherwise, and always for stable (an autoscaler may add or
        remove its pods during a test), the Service. Only reachable from inside the
        cluster's network; `run` checks reachability before loading them and
        `--canary-endpoint`/`--baseline-endpoint` override them.
        """
        if service in (self.canary_name, self.baseline_name):
            found = self.api.get("v1", "Service", self.namespace, service)
            selector = selector_of(found) if found else None
            if found and selector:
                pods = self.api.list("v1", "Pod", self.namespace, labels=selector)
                rest, grpc = pod_endpoints(found, pods)
                live = self._deployment(service) or {}
                # More serving pods than the Deployment wants: some are not its own
                # (another object's labels, a ReplicaSet still going); the Service knows.
                if 2 <= len(rest) <= live.get("spec", {}).get("replicas", 0):
                    return rest, grpc
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
        serving = f"{PIPELINE_LABEL},{MODEL_LABEL}={self.model}"
        # A load generator left by a runner that died: its Job and its master's Service.
        generator = f"{GENERATOR_MODEL_LABEL}={self.model}"
        with self.lock.held():
            for api_version, kind, selectors in (
                ("apps/v1", "Deployment", (serving,)),
                ("v1", "Service", (serving, generator)),
                ("policy/v1", "PodDisruptionBudget", (serving,)),
                ("autoscaling/v2", "HorizontalPodAutoscaler", (serving,)),
                ("networking.k8s.io/v1", "NetworkPolicy", (serving,)),
                # The keda component's; a cluster without KEDA has no such kind.
                ("keda.sh/v1alpha1", "ScaledObject", (serving,)),
                ("v1", "ConfigMap", (serving,)),
                ("batch/v1", "Job", (generator,)),
            ):
                found = {
                    o["metadata"]["name"]: {
                        "apiVersion": api_version,
                        "kind": kind,
                        "metadata": o["metadata"],
                    }
                    for selector in selectors
                    for o in self.api.list(
                        api_version,
                        kind,
                        self.namespace,
                        labels=selector,
                        missing_ok=kind == "ScaledObject",
                    )
                }
                self._delete(list(found.values()), result, options)
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
    log.info("restoring %s to %s", live["metadata"]["name"], image)
    return body


def _owns_replicas(live: dict[str, Any], manager: str) -> bool:
    """Does ``manager`` (by apply) own ``spec.replicas`` of this live object?"""
    for entry in live.get("metadata", {}).get("managedFields", []):
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        if "f:replicas" in entry.get("fieldsV1", {}).get("f:spec", {}):
            return True
    return False


def served_models(api: KubeApi, namespace: str) -> list[str]:
    """The models with a serving Deployment, or a load generator Job, in ``namespace``."""
    serving = api.list(
        "apps/v1",
        "Deployment",
        namespace,
        labels=f"{SERVING_LABEL},{PIPELINE_LABEL}",
    )
    generators = api.list("batch/v1", "Job", namespace, labels=GENERATOR_MODEL_LABEL)
    found = {d["metadata"].get("labels", {}).get(MODEL_LABEL) for d in serving} | {
        j["metadata"].get("labels", {}).get(GENERATOR_MODEL_LABEL) for j in generators
    }
    return sorted(m for m in found if m)


__all__ = ["KubernetesTarget", "served_models", "track_of"]
