"""The generator Job spec (kustomize/loadtest): rendered, given the run's fields, validated
strictly against the Kubernetes schemas and the generator policy; and the plan printed
without contacting a cluster."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.errors import PolicyError, RenderError, UsageError
from scripts.loadtest.generator import PLAN_ENV, GeneratorPlan
from scripts.loadtest.job_spec import GeneratorOptions, build_job
from scripts.loadtest.locust_process import Traffic
from scripts.manifests.policy import check_generator_policy
from tests.conftest import REPO_ROOT, CLIResult

IMAGE = "europe-docker.pkg.dev/p/r/tf-loadgen@sha256:" + "a" * 64
TRAFFIC = Traffic(
    {"canary": ["http://digits-c.ns.svc:8501"], "baseline": ["http://digits.ns.svc:8501"]},
    "digits", "rest", 8, 40.0, 50.0, 5.0,
)  # fmt: skip
PLAN = GeneratorPlan(TRAFFIC, {"instances": [[0.0]]})


def job_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "Job")


def test_the_smoke_job_is_one_pod_with_every_safeguard() -> None:
    planned = build_job(PLAN, GeneratorOptions(), image=IMAGE, model="digits",
                        namespace="ml", run_id="12345-1")  # fmt: skip
    assert [o["kind"] for o in planned.objects] == ["Job"]  # no Service without workers
    job = planned.job
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert job["metadata"]["name"].startswith("digits-loadgen-")
    assert job["metadata"]["namespace"] == "ml"
    assert spec["backoffLimit"] == 0
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 1
    # The base's 300 s allowance + the run's own 5 + 50 s, its 1 s schedule margin and at
    # most 2 s for the last answers.
    assert spec["activeDeadlineSeconds"] == 358
    assert spec["ttlSecondsAfterFinished"] == 900
    assert pod["restartPolicy"] == "Never"
    labels = job["metadata"]["labels"]
    assert labels["tf-release-pipeline.dev/run"] == "12345-1"
    assert labels["tf-release-pipeline.dev/model"] == "digits"
    assert spec["template"]["metadata"]["labels"]["tf-release-pipeline.dev/run"] == "12345-1"
    container = pod["containers"][0]
    assert container["image"] == IMAGE
    assert container["command"] == ["python", "-m", "scripts.loadtest.generator"]
    resources = container["resources"]
    assert resources["requests"] == resources["limits"] == {"cpu": "1", "memory": "1Gi"}
    env = {e["name"]: e for e in container["env"]}
    assert GeneratorPlan.from_json(env[PLAN_ENV]["value"]) == PLAN
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term[0]["podAffinityTerm"]["labelSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "tf-serving"
    }
    assert check_generator_policy(planned.objects) == []


def test_workers_make_an_indexed_job_and_the_masters_service() -> None:
    options = GeneratorOptions(
        workers=3, cpu="2", memory="2Gi",
        node_selector={"cloud.google.com/gke-nodepool": "loadgen"},
    )  # fmt: skip
    planned = build_job(PLAN, options, image=IMAGE, model="digits", namespace="ml", run_id="r")
    service, job = planned.objects
    assert service["kind"] == "Service"
    assert service["metadata"]["name"] == job["metadata"]["name"]
    assert service["spec"]["selector"] == {
        "batch.kubernetes.io/job-name": job["metadata"]["name"],
        "batch.kubernetes.io/job-completion-index": "0",
    }
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 4
    plan = GeneratorPlan.from_json(
        job["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"]
    )
    assert plan.workers == 3
    assert plan.master_host == f"{job['metadata']['name']}.ml.svc"
    assert job["spec"]["activeDeadlineSeconds"] == 358 + 60  # + the workers' wait
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-nodepool": "loadgen"}
    resources = pod["containers"][0]["resources"]
    assert resources["requests"] == resources["limits"] == {"cpu": "2", "memory": "2Gi"}


def test_an_image_not_pinned_by_digest_is_refused() -> None:
    with pytest.raises(UsageError, match="not pinned by digest"):
        build_job(PLAN, GeneratorOptions(), image="tf-loadgen:latest", model="digits",
                  namespace="ml", run_id="r")  # fmt: skip


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(job: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = job
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]  # type: ignore[index]
        if value is None:
            del node[last]
        else:
            node[last] = value

    return apply


CONTAINER = "spec.template.spec.containers.0"
VIOLATIONS = {
    "retries": (_set("spec.backoffLimit", 6), "backoffLimit must be 0"),
    "no-deadline": (_set("spec.activeDeadlineSeconds", None), "activeDeadlineSeconds"),
    "no-ttl": (_set("spec.ttlSecondsAfterFinished", None), "ttlSecondsAfterFinished"),
    "restarts": (_set("spec.template.spec.restartPolicy", "OnFailure"), "restartPolicy"),
    "tag": (_set(f"{CONTAINER}.image", "tf-loadgen:v1"), "not pinned by digest"),
    "burstable": (_set(f"{CONTAINER}.resources.limits.cpu", "2"), "requests must equal limits"),
    "writable": (_set(f"{CONTAINER}.securityContext.readOnlyRootFilesystem", False),
                 "readOnlyRootFilesystem"),
    "escalation": (_set(f"{CONTAINER}.securityContext.allowPrivilegeEscalation", True),
                   "allowPrivilegeEscalation"),
    "root": (lambda j: (_set(f"{CONTAINER}.securityContext.runAsNonRoot", None)(j),
                        _set("spec.template.spec.securityContext.runAsNonRoot", None)(j)),
             "runAsNonRoot"),
    "on-serving-nodes": (_set("spec.template.spec.affinity", None), "anti-affinity"),
    "untied": (_set("metadata.labels", {}), "ties it to its run"),
}  # fmt: skip


@pytest.mark.parametrize("case", VIOLATIONS, ids=list(VIOLATIONS))
def test_each_policy_rule_is_enforced(case: str) -> None:
    planned = build_job(PLAN, GeneratorOptions(), image=IMAGE, model="d", namespace="n", run_id="r")
    job = copy.deepcopy(planned.job)
    mutate, message = VIOLATIONS[case]
    mutate(job)
    violations = check_generator_policy([job])
    assert any(message in v for v in violations), violations


def _tree(tmp_path: Path, patch: dict[str, Any]) -> Path:
    tree = tmp_path / "kustomize"
    shutil.copytree(REPO_ROOT / "kustomize", tree)
    path = tree / "loadtest" / "kustomization.yaml"
    data = yaml.safe_load(path.read_text())
    data["patches"] = [{"target": {"kind": "Job"}, "patch": yaml.safe_dump(patch)}]
    path.write_text(yaml.safe_dump(data))
    return tree


def test_a_customised_spec_is_checked_strictly_and_against_the_policy(tmp_path: Path) -> None:
    def job(spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"}, "spec": spec}

    typo = _tree(tmp_path / "a", job({"backofLimit": 0}))
    with pytest.raises(RenderError, match="backofLimit"):
        build_job(PLAN, GeneratorOptions(kustomize_dir=typo), image=IMAGE, model="d",
                  namespace="n", run_id="r")  # fmt: skip
    retried = _tree(tmp_path / "b", job({"backoffLimit": 2}))
    with pytest.raises(PolicyError, match="backoffLimit must be 0"):
        build_job(PLAN, GeneratorOptions(kustomize_dir=retried), image=IMAGE, model="d",
                  namespace="n", run_id="r")  # fmt: skip


def test_the_plan_is_printed_without_a_cluster(
    cli: Callable[..., CLIResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    args = ("loadtest", "--target", "k8s", "--dry-run", "--model", "digits",
            "--endpoint", "http://digits-serving-canary.ml.svc:8501", "--namespace", "ml",
            "--out", tmp_path / "out")  # fmt: skip
    result = cli(*args, "--generator-image", IMAGE, "--json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["dry_run"] is True
    (job,) = data["objects"]  # type: ignore[misc]
    assert job["kind"] == "Job" and job["metadata"]["name"] == data["job"]
    plan = json.loads(job["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"])
    assert plan["traffic"]["tracks"] == {"canary": ["http://digits-serving-canary.ml.svc:8501"]}
    assert plan["traffic"]["rate"] == 40  # the model's smoke profile
    assert not (tmp_path / "out").exists()  # nothing ran
    as_yaml = cli(*args, "--generator-image", IMAGE)
    assert next(iter(yaml.safe_load_all(as_yaml.stdout)))["kind"] == "Job"
    # Without an image there is nothing to plan: a dry run builds and looks up nothing.
    missing = cli(*args, "--json")
    assert missing.exit_code == UsageError.exit_code
    assert "--generator-image" in str(missing.json()["error"])
