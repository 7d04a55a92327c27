"""The deployment policy every rendered manifest must meet.

Each violation names the object and the field. The rules (docs/manifests.md):

* images are pinned by digest, never ``:latest`` (pods must roll, and run what was tested);
* CPU and memory requests and limits are set (Guaranteed QoS; HPA needs requests);
* startup, readiness and liveness probes exist and ask for this model;
* thread env (OMP/MKL/OPENBLAS/TF_NUM_INTRAOP) comes from the Downward API
  (``resourceFieldRef: requests.cpu``) and TF Serving's intra-op flag uses it:
  never a hand-typed number (seed 000: mismatched threads throttle the pod);
* containers run as non-root, read-only, without privilege escalation;
* the local server's fault injection never appears in a manifest.
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
