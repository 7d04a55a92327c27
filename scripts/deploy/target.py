"""The deploy-target interface: what a place to run the model must do.

``KubernetesTarget`` (GKE or any cluster) and, from the local-runtime issue, a
local target implement it over the *same rendered manifests*. Targets are
chosen by name from :data:`TARGETS`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from scripts.deploy.jobs import JobRun
from scripts.manifests.render import TRACK_LABEL, Rendered

STABLE = "stable"
CANARY = "canary"
# A fresh copy of the stable version, created with the canary and removed with it: the
# gate compares the canary with it (same size, same age, same warm-up), never with the
# long-running stable pods, which keep serving users untouched (Kayenta's practice).
BASELINE = "baseline"
PREVIOUS_IMAGE = "tf-release-pipeline.dev/previous-image"
ROLLED_BACK_FROM = "tf-release-pipeline.dev/rolled-back-from"
# Metadata the API server writes: dropped before a live object is applied again.
VOLATILE_METADATA = (
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
)
FIELD_MANAGER = "tf-release-pipeline"


@dataclass(frozen=True)
class DeployOptions:
    wait: bool = True
    timeout_s: float = 600.0
    dry_run: bool = False
    # A canary deploy also starts a fresh baseline of the stable image (BASELINE).
    fresh_baseline: bool = False
    # Local target: start the canary's processes before its fresh baseline's. By default
    # the baseline starts first: on the 2-core machine the process started second ran
    # ~3 % faster over a whole run (docs/benchmarks.md, "The ordering effect"), and
    # the gate's accuracy was measured with the canary second. A confirmation run sets
    # it, swapping the order. Kubernetes' scheduler places pods itself and ignores it.
    canary_first: bool = False


@dataclass
class DeployResult:
    action: str  # deployed | canary-deployed | promoted | canary-removed | restored | none | ...
    target: str
    namespace: str
    image: str | None = None
    previous_image: str | None = None
    applied: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    rollout: str = ""
    diff: str = ""
    endpoints: dict[str, list[str]] = field(default_factory=dict)
    dry_run: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "action": self.action,
            "target": self.target,
            "namespace": self.namespace,
            "image": self.image,
            "previous_image": self.previous_image,
            "applied": self.applied,
            "deleted": self.deleted,
            "rollout": self.rollout,
            "diff": self.diff,
            "endpoints": self.endpoints,
            "dry_run": self.dry_run,
        }


@dataclass
class TrackStatus:
    exists: bool
    image: str | None = None
    replicas: int = 0
    ready: int = 0
    rollout: str = ""
    previous_image: str | None = None
    endpoints: list[str] = field(default_factory=list)  # REST base URLs
    grpc_endpoints: list[str] = field(default_factory=list)  # HOST:PORT

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class StatusResult:
    target: str
    namespace: str
    model: str
    stable: TrackStatus
    canary: TrackStatus
    lock_holder: str | None = None
    baseline: TrackStatus = field(default_factory=lambda: TrackStatus(exists=False))

    def to_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "namespace": self.namespace,
            "model": self.model,
            "stable": self.stable.to_dict(),
            "canary": self.canary.to_dict(),
            "baseline": self.baseline.to_dict(),
            "lock_holder": self.lock_holder,
        }


class DeployTarget(Protocol):
    """Deploy the candidate as a canary, promote it, roll back, report, tear down.

    A target is bound to one model in one namespace: several models share a namespace
    without touching each other's objects, replicas or locks."""

    name: str
    model: str

    def deploy(
        self, rendered: Rendered, *, canary: bool, options: DeployOptions
    ) -> DeployResult: ...

    def promote(self, rendered: Rendered, options: DeployOptions) -> DeployResult: ...

    def rollback(self, options: DeployOptions) -> DeployResult: ...

    def status(self) -> StatusResult: ...

    def teardown(self, options: DeployOptions) -> DeployResult:
        """Remove everything this model has in the namespace (other models stay)."""
        ...

    def run_job(self, objects: list[dict[str, Any]], *, timeout_s: float) -> JobRun:
        """Run a rendered Job (the load generator) to its end; it is gone afterwards."""
        ...


def track_of(obj: dict[str, Any]) -> str | None:
    value = obj.get("metadata", {}).get("labels", {}).get(TRACK_LABEL)
    return str(value) if value else None


# Untracked objects a canary needs before it runs: the config it mounts, and the network
# policy (a model's first canary must not run unprotected until its promotion).
CANARY_NEEDS = ("ConfigMap", "NetworkPolicy")


def canary_objects(rendered: Rendered) -> list[dict[str, Any]]:
    """The canary's objects, plus the untracked objects it needs (CANARY_NEEDS)."""
    return [
        o
        for o in rendered.objects
        if track_of(o) == CANARY or (track_of(o) is None and o["kind"] in CANARY_NEEDS)
    ]


def stable_objects(rendered: Rendered) -> list[dict[str, Any]]:
    """Everything that is not the canary's (autoscalers and PDBs act on the stable track)."""
    return [o for o in rendered.objects if track_of(o) != CANARY]


def deployment_of(objects: list[dict[str, Any]], track: str) -> dict[str, Any]:
    for obj in objects:
        if obj["kind"] == "Deployment" and track_of(obj) == track:
            return obj
    raise LookupError(f"no {track} Deployment in the rendered manifests")


def baseline_name(canary_name: str) -> str:
    """``MODEL-serving-canary`` → ``MODEL-serving-baseline``."""
    return canary_name.removesuffix("-" + CANARY) + "-" + BASELINE


def as_baseline(obj: dict[str, Any], name: str, *, replicas: int | None = None) -> dict[str, Any]:
    """A copy of a stable Deployment (or a canary Service) as the fresh baseline's:
    renamed, its track label, selector and pod labels set to ``baseline``, and (a
    Deployment) the canary's replica count. Live-only fields are dropped."""
    body = copy.deepcopy(obj)
    body.pop("status", None)
    meta = body["metadata"]
    for key in (*VOLATILE_METADATA, "ownerReferences", "deletionTimestamp"):
        meta.pop(key, None)
    meta["name"] = name
    meta.setdefault("labels", {})[TRACK_LABEL] = BASELINE
    annotations = meta.get("annotations") or {}
    for key in (PREVIOUS_IMAGE, ROLLED_BACK_FROM):
        annotations.pop(key, None)  # stable's rollback marks, not the baseline's
    annotations.pop("deployment.kubernetes.io/revision", None)
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    spec = body["spec"]
    if body["kind"] == "Deployment":
        spec["selector"].setdefault("matchLabels", {})[TRACK_LABEL] = BASELINE
        spec["template"].setdefault("metadata", {}).setdefault("labels", {})[TRACK_LABEL] = BASELINE
        if replicas is not None:
            spec["replicas"] = replicas
    elif body["kind"] == "Service":
        spec.setdefault("selector", {})[TRACK_LABEL] = BASELINE
        for key in ("clusterIP", "clusterIPs"):
            spec.pop(key, None)
    return body


def image_of(deployment: dict[str, Any]) -> str | None:
    containers = (
        deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    )
    return str(containers[0]["image"]) if containers else None


def remove_canary_of(target: DeployTarget, options: DeployOptions, image: str) -> bool:
    """Remove the canary (and its fresh baseline) when it runs ``image``; False when there
    is no such canary. Never ``rollback`` blindly: without a canary, rollback restores
    the previous stable version."""
    canary = target.status().canary
    if not (canary.exists and canary.image == image):
        return False
    target.rollback(replace(options, dry_run=False))
    return True
