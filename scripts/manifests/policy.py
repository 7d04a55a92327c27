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


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj.get("kind") not in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return []
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    containers: list[dict[str, Any]] = spec.get("containers", [])
    return containers


def _check_container(where: str, c: dict[str, Any], pod: dict[str, Any], model: str) -> list[str]:
    out: list[str] = []
    at = f"{where} container {c.get('name')!r}"
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
    for probe in PROBES:
        spec = c.get(probe)
        if not spec:
            out.append(f"{at}: {probe} is missing")
            continue
        path = spec.get("httpGet", {}).get("path")
        if path is not None and path != f"/v1/models/{model}":
            out.append(f"{at}: {probe}.httpGet.path is {path!r}, expected /v1/models/{model}")
    env = {e.get("name"): e for e in c.get("env", [])}
    for name in THREAD_ENV:
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
    for arg in c.get("args", []):
        if str(arg).startswith(_INTRA_FLAG) and arg != f"{_INTRA_FLAG}$(TF_NUM_INTRAOP_THREADS)":
            out.append(
                f"{at}: args {arg!r} hand-types the intra-op thread count; use "
                f"{_INTRA_FLAG}$(TF_NUM_INTRAOP_THREADS)"
            )
    security = c.get("securityContext", {})
    pod_security = pod.get("securityContext", {})
    if not (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
        out.append(f"{at}: securityContext.runAsNonRoot is not true")
    if security.get("readOnlyRootFilesystem") is not True:
        out.append(f"{at}: securityContext.readOnlyRootFilesystem is not true")
    if security.get("allowPrivilegeEscalation") is not False:
        out.append(f"{at}: securityContext.allowPrivilegeEscalation is not false")
    return out


def check_policy(objects: list[dict[str, Any]], *, model: str) -> list[str]:
    """Return every violation in ``objects`` (empty when all rules hold)."""
    violations: list[str] = []
    deployments = 0
    for obj in objects:
        where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        containers = _containers(obj)
        if obj.get("kind") == "Deployment":
            deployments += 1
            if not obj.get("spec", {}).get("progressDeadlineSeconds"):
                violations.append(f"{where}: spec.progressDeadlineSeconds is not set")
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in containers:
            violations += _check_container(where, container, pod, model)
    if deployments == 0:
        violations.append("no Deployment was rendered")
    return violations
