"""The deployment policy every rendered manifest must meet.

Each violation names the object and the field. The rules (docs/manifests.md):

* images are pinned by digest, never ``:latest`` (pods must roll, and run what was tested);
* CPU and memory requests and limits are set (Guaranteed QoS; HPA needs requests);
* startup, readiness and liveness probes exist and ask for this model;
* thread env (OMP/MKL/OPENBLAS/TF_NUM_INTRAOP) comes from the Downward API
  (``resourceFieldRef: requests.cpu``) and TF Serving's intra-op flag uses it:
  never a hand-typed number (seed 000: mismatched threads throttle the pod);
* containers run as non-root, read-only, without privilege escalation;
* the local server's fault injection never appears in a manifest;
* a Deployment that can run more than one replica (``spec.replicas``, or the maximum of
  an HPA or ScaledObject that scales it) spreads its pods across zones, counting only
  its own model's and track's pods (one zone's outage must not take every replica).
"""

from __future__ import annotations

import re
from typing import Any

THREAD_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
)
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_INTRA_FLAG = "--tensorflow_intra_op_parallelism="
ABLATION = "tf-release-pipeline.dev/ablation"
ABLATIONS = ("default-threads",)  # TensorFlow's own thread defaults (seed reproduction 1)
ZONE_KEY = "topology.kubernetes.io/zone"
# A zone spread counts one model's one track: the model label `render` adds to every pod
# (render.MODEL_LABEL) and the track label (render.TRACK_LABEL).
SPREAD_SCOPE = ("app.kubernetes.io/instance", "track")
REVISION_KEY = "pod-template-hash"  # set by the Deployment controller on each ReplicaSet
# Autoscalers that can raise a Deployment's replicas: kind -> (maximum field, its default).
_AUTOSCALERS = {
    "HorizontalPodAutoscaler": ("maxReplicas", 1),  # required by the API
    "ScaledObject": ("maxReplicaCount", 100),  # KEDA's default
}


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj.get("kind") not in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return []
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    containers: list[dict[str, Any]] = spec.get("containers", [])
    return containers


def _image_and_resources(at: str, c: dict[str, Any]) -> list[str]:
    out: list[str] = []
    image = str(c.get("image", ""))
    if not _DIGEST.search(image):
        out.append(f"{at}: image {image!r} is not pinned by digest (spec.containers.image)")
    if image.endswith(":latest") or ":latest@" in image:
        out.append(f"{at}: image uses the :latest tag (spec.containers.image)")
    resources = c.get("resources", {})
    for section in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in resources.get(section, {}):
                out.append(f"{at}: resources.{section}.{resource} is not set")
    return out


def _security(at: str, c: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    out: list[str] = []
    security = c.get("securityContext", {})
    pod_security = pod.get("securityContext", {})
    if not (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
        out.append(f"{at}: securityContext.runAsNonRoot is not true")
    if security.get("readOnlyRootFilesystem") is not True:
        out.append(f"{at}: securityContext.readOnlyRootFilesystem is not true")
    if security.get("allowPrivilegeEscalation") is not False:
        out.append(f"{at}: securityContext.allowPrivilegeEscalation is not false")
    return out


def _check_container(
    where: str, c: dict[str, Any], pod: dict[str, Any], model: str, *, threads: bool = True
) -> list[str]:
    at = f"{where} container {c.get('name')!r}"
    out = _image_and_resources(at, c)
    for probe in PROBES:
        spec = c.get(probe)
        if not spec:
            out.append(f"{at}: {probe} is missing")
            continue
        path = spec.get("httpGet", {}).get("path")
        if path is not None and path != f"/v1/models/{model}":
            out.append(f"{at}: {probe}.httpGet.path is {path!r}, expected /v1/models/{model}")
    env = {e.get("name"): e for e in c.get("env", [])}
    for name in THREAD_ENV if threads else ():
        entry = env.get(name)
        ref = (entry or {}).get("valueFrom", {}).get("resourceFieldRef", {})
        if entry is None:
            out.append(f"{at}: env {name} is not set (thread count must follow the CPU request)")
        elif "value" in entry or ref.get("resource") != "requests.cpu":
            out.append(
                f"{at}: env {name} is hand-typed; it must come from the Downward API "
                "(valueFrom.resourceFieldRef.resource: requests.cpu)"
            )
    for arg in [*c.get("command", []), *c.get("args", [])]:
        if "unsafe_fault_injection" in str(arg):
            out.append(
                f"{at}: args enable --unsafe_fault_injection (rehearsal only, never in a manifest)"
            )
    for arg in c.get("args", []) if threads else ():
        if str(arg).startswith(_INTRA_FLAG) and arg != f"{_INTRA_FLAG}$(TF_NUM_INTRAOP_THREADS)":
            out.append(
                f"{at}: args {arg!r} hand-types the intra-op thread count; use "
                f"{_INTRA_FLAG}$(TF_NUM_INTRAOP_THREADS)"
            )
    return out + _security(at, c, pod)


def _most_replicas(deployment: dict[str, Any], objects: list[dict[str, Any]]) -> int:
    """The most replicas a Deployment can run: ``spec.replicas`` (default 1) or the
    maximum of an autoscaler among ``objects`` whose ``scaleTargetRef`` names it."""
    name = deployment.get("metadata", {}).get("name")
    most = int(deployment.get("spec", {}).get("replicas", 1))
    for obj in objects:
        field = _AUTOSCALERS.get(str(obj.get("kind")))
        spec = obj.get("spec", {})
        target = spec.get("scaleTargetRef", {})
        if (
            field
            and target.get("name") == name
            and target.get("kind", "Deployment") == "Deployment"
        ):
            most = max(most, int(spec.get(field[0], field[1])))
    return most


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Does a LabelSelector (matchLabels, matchExpressions) select these labels?"""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression.get("key", ""))
        values = expression.get("values", [])
        matches = {
            "In": value is not None and value in values,
            "NotIn": value is None or value not in values,
            "Exists": value is not None,
            "DoesNotExist": value is None,
        }.get(expression.get("operator", ""), False)
        if not matches:
            return False
    return True


def _pins(selector: dict[str, Any], key: str, value: str | None) -> bool:
    """Does the selector hold ``key`` to this one value?"""
    if value is None:
        return False
    if selector.get("matchLabels", {}).get(key) == value:
        return True
    return any(
        e.get("key") == key and e.get("operator") == "In" and e.get("values") == [value]
        for e in selector.get("matchExpressions", [])
    )


def _check_spread(
    where: str, deployment: dict[str, Any], objects: list[dict[str, Any]]
) -> list[str]:
    """A Deployment that can run several replicas spreads them across zones, and the
    spread counts only its own pods' model and track (not every tf-serving pod)."""
    most = _most_replicas(deployment, objects)
    if most <= 1:
        return []
    template = deployment.get("spec", {}).get("template", {})
    labels = template.get("metadata", {}).get("labels", {})
    constraints = [
        c
        for c in template.get("spec", {}).get("topologySpreadConstraints", [])
        if c.get("topologyKey") == ZONE_KEY
    ]
    at = f"{where}: spec.template.spec.topologySpreadConstraints"
    if not constraints:
        return [
            f"{at} has no {ZONE_KEY} constraint, yet it can run {most} replicas "
            "(one zone's outage could take them all)"
        ]
    out: list[str] = []
    for constraint in constraints:
        selector = constraint.get("labelSelector")
        if selector is None or not _selects(selector, labels):
            out.append(f"{at}: the {ZONE_KEY} constraint's labelSelector misses its own pods")
            continue
        keys = constraint.get("matchLabelKeys", [])
        if REVISION_KEY in keys:
            continue  # one ReplicaSet's pods: narrower than this model's track
        for key in SPREAD_SCOPE:
            if key not in keys and not _pins(selector, key, labels.get(key)):
                out.append(
                    f"{at}: the {ZONE_KEY} constraint counts other pods than this "
                    f"model's and track's: put {key} in matchLabelKeys"
                )
    return out


def ablation_of(obj: dict[str, Any]) -> str | None:
    """The ablation a workload's pod template declares (``ABLATION`` annotation), if any."""
    template = obj.get("spec", {}).get("template", {}).get("metadata", {})
    value = template.get("annotations", {}).get(ABLATION)
    return str(value) if value else None


def check_policy(
    objects: list[dict[str, Any]], *, model: str, allow_ablations: bool = False
) -> list[str]:
    """Return every violation in ``objects`` (empty when all rules hold).

    An ablation (``ABLATION: default-threads``) breaks the thread rules on purpose to
    measure what they buy: only ``bench`` renders with ``allow_ablations``; a deploy
    of such an overlay is refused."""
    violations: list[str] = []
    deployments = 0
    for obj in objects:
        where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        containers = _containers(obj)
        ablation = ablation_of(obj)
        if ablation and ablation not in ABLATIONS:
            violations.append(f"{where}: unknown ablation {ablation!r} (known: {ABLATIONS})")
        elif ablation and not allow_ablations:
            violations.append(
                f"{where}: is an ablation ({ABLATION}: {ablation}), for `bench` only; "
                "it is never deployed to serve"
            )
        if obj.get("kind") == "Deployment":
            deployments += 1
            if not obj.get("spec", {}).get("progressDeadlineSeconds"):
                violations.append(f"{where}: spec.progressDeadlineSeconds is not set")
            violations += _check_spread(where, obj, objects)
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        threads = not (ablation == "default-threads" and allow_ablations)
        for container in containers:
            violations += _check_container(where, container, pod, model, threads=threads)
    if deployments == 0:
        violations.append("no Deployment was rendered")
    return violations


GENERATOR_LABELS = ("tf-release-pipeline.dev/run", "tf-release-pipeline.dev/model")


def check_generator_policy(objects: list[dict[str, Any]]) -> list[str]:
    """The load generator Job's rules (docs/loadtest.md): the serving rules that apply
    (digest, resources, non-root, read-only, no escalation), plus requests = limits
    (a throttled or first-evicted generator measures itself), one attempt
    (``backoffLimit: 0``: a retry doubles the load), a deadline and a TTL, anti-affinity
    against the serving pods, and labels that tie every object to its run."""
    violations: list[str] = []
    jobs = [o for o in objects if o.get("kind") == "Job"]
    if len(jobs) != 1:
        violations.append(f"expected one generator Job, found {len(jobs)}")
    for obj in objects:
        where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        labels = obj.get("metadata", {}).get("labels", {})
        for label in GENERATOR_LABELS:
            if not labels.get(label):
                violations.append(f"{where}: label {label} is not set (ties it to its run)")
    for job in jobs:
        where = f"Job/{job.get('metadata', {}).get('name')}"
        spec = job.get("spec", {})
        if spec.get("backoffLimit") != 0:
            violations.append(f"{where}: spec.backoffLimit must be 0 (a retry doubles the load)")
        for key in ("activeDeadlineSeconds", "ttlSecondsAfterFinished"):
            if not spec.get(key):
                violations.append(f"{where}: spec.{key} is not set")
        template = spec.get("template", {})
        pod = template.get("spec", {})
        if pod.get("restartPolicy") != "Never":
            violations.append(f"{where}: template.spec.restartPolicy must be Never")
        for label in GENERATOR_LABELS:
            if not template.get("metadata", {}).get("labels", {}).get(label):
                violations.append(f"{where}: the pod template lacks label {label}")
        anti = pod.get("affinity", {}).get("podAntiAffinity", {})
        terms = [
            t.get("podAffinityTerm", t)
            for key in (
                "requiredDuringSchedulingIgnoredDuringExecution",
                "preferredDuringSchedulingIgnoredDuringExecution",
            )
            for t in anti.get(key, [])
        ]
        if not any(
            t.get("labelSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
            == "tf-serving"
            for t in terms
        ):
            violations.append(
                f"{where}: no pod anti-affinity against the serving pods "
                "(app.kubernetes.io/name: tf-serving)"
            )
        for c in _containers(job):
            at = f"{where} container {c.get('name')!r}"
            violations += _image_and_resources(at, c)
            violations += _security(at, c, pod)
            resources = c.get("resources", {})
            for resource in ("cpu", "memory"):
                request = resources.get("requests", {}).get(resource)
                limit = resources.get("limits", {}).get(resource)
                if request is not None and limit is not None and str(request) != str(limit):
                    violations.append(
                        f"{at}: resources.requests.{resource} ({request}) differs from the "
                        f"limit ({limit}): requests must equal limits"
                    )
    return violations
