"""The generator Job on the local target: the spec GKE gets, run as processes.

Real Locust, real CFS quotas (when this machine lets us write cgroups), the GCS emulator
for results too large for a log. The server under load is a trivial one: these tests
are about the generator, not the model.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.deploy.local_target import LocalTarget
from scripts.errors import LoadGeneratorError
from scripts.image.auth import CredentialStore
from scripts.loadtest.in_cluster import plan_for, run_in_cluster
from scripts.loadtest.job_spec import GeneratorJob, GeneratorOptions, build_job
from scripts.loadtest.runner import LoadTestRequest
from scripts.model_spec import LoadProfile
from tests.conftest import REPO_ROOT
from tests.fakes.ok_server import ok_server

pytestmark = pytest.mark.integration
IMAGE = "oci:/nowhere@sha256:" + "0" * 64  # the local target runs this checkout's code


@pytest.fixture
def endpoint() -> Iterator[str]:
    with ok_server() as url:
        yield url


@pytest.fixture
def target(tmp_path: Path) -> LocalTarget:
    return LocalTarget(
        tmp_path / "state", "default", model="digits", cache_dir=tmp_path / "cache",
        credentials=CredentialStore(None),
    )  # fmt: skip


# 90 samples a track by default, as 3 s at 30 req/s gave, in 2 s: these judge the plumbing.
def request(endpoint: str, out: Path, duration: float = 2.0, rate: float = 45.0) -> LoadTestRequest:
    return LoadTestRequest(
        tracks={"canary": [endpoint], "baseline": [endpoint]},
        model="digits",
        payload={"instances": [[1.0]]},
        profile=LoadProfile(users=2, rate=rate, duration_s=duration, warmup_s=0),
        out=out,
    )


def job(req: LoadTestRequest, options: GeneratorOptions | None = None, **plan: Any) -> GeneratorJob:
    options = options or GeneratorOptions()
    return build_job(
        dataclasses.replace(plan_for(req, options), **plan), options, image=IMAGE,
        model="digits", namespace="default", run_id="local-test",
    )  # fmt: skip


def tree(tmp_path: Path, spec: dict[str, Any], env: dict[str, str] | None = None) -> Path:
    """kustomize/ with the generator Job patched (a shorter allowance, extra env)."""
    copy = tmp_path / "kustomize"
    shutil.copytree(REPO_ROOT / "kustomize", copy)
    if env:
        spec = {**spec, "template": {"spec": {"containers": [
            {"name": "locust", "env": [{"name": k, "value": v} for k, v in env.items()]}
        ]}}}  # fmt: skip
    path = copy / "loadtest" / "kustomization.yaml"
    data = yaml.safe_load(path.read_text())
    patch = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"}, "spec": spec}
    data["patches"] = [{"target": {"kind": "Job"}, "patch": yaml.safe_dump(patch)}]
    path.write_text(yaml.safe_dump(data))
    return copy


def generators_running(marker: str) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    return [line for line in ps.stdout.splitlines() if "generator" in line and marker in line]


def test_the_same_job_runs_here_and_its_results_come_back_through_the_log(
    endpoint: str, target: LocalTarget, tmp_path: Path
) -> None:
    req = request(endpoint, tmp_path / "out")
    results = run_in_cluster(req, target, job(req))
    for track in ("canary", "baseline"):
        assert results[track].samples >= 80
        assert results[track].errors == 0
        assert not results[track].broken
    assert "TFRP-RESULTS-BEGIN" in (tmp_path / "out" / "raw" / "pod-0.log").read_text()
    assert yaml.safe_load((tmp_path / "out" / "generator-job.yaml").read_text())["kind"] == "Job"
    jobs = target.dir / "jobs"  # STATE/default/digits/jobs: nothing is left there
    assert target.dir == tmp_path.resolve() / "state" / "default" / "digits"
    assert not jobs.exists() or not any(jobs.iterdir())


def test_a_job_past_its_deadline_is_stopped_and_fails(
    endpoint: str, target: LocalTarget, tmp_path: Path
) -> None:
    req = request(endpoint, tmp_path / "out", duration=60)
    options = GeneratorOptions(kustomize_dir=tree(tmp_path, {"activeDeadlineSeconds": 1}))
    planned = job(req, options)
    assert planned.deadline_s == 1 + 63  # 60 s + the schedule margin + the last answers
    # The local runner honours activeDeadlineSeconds: shorten it after the policy check.
    planned.job["spec"]["activeDeadlineSeconds"] = 4
    started = time.monotonic()
    with pytest.raises(LoadGeneratorError, match="exceeded its deadline"):
        run_in_cluster(req, target, planned)
    assert time.monotonic() - started < 30
    assert generators_running(str(tmp_path)) == []


def test_results_too_large_for_the_log_fail_the_run(
    endpoint: str, target: LocalTarget, tmp_path: Path
) -> None:
    req = request(endpoint, tmp_path / "out")
    with pytest.raises(LoadGeneratorError, match="do not fit the pod log") as caught:
        run_in_cluster(req, target, job(req, log_budget=2000))
    assert "--results-uri" in caught.value.cause


def test_results_too_large_for_the_log_go_to_gcs_when_given_a_place(
    endpoint: str, target: LocalTarget, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fakes.gcs_server import GCSEmulator

    with GCSEmulator() as gcs:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
        from scripts.loadtest.results_store import _client

        _client().create_bucket("loadgen-results")
        options = GeneratorOptions(
            results_uri="gs://loadgen-results/runs/r1",
            kustomize_dir=tree(tmp_path, {}, env={"STORAGE_EMULATOR_HOST": gcs.url}),
        )
        req = request(endpoint, tmp_path / "out")
        results = run_in_cluster(req, target, job(req, options, log_budget=2000))
        assert results["canary"].samples >= 80
        names = [b.name for b in _client().list_blobs("loadgen-results")]
        assert names == ["runs/r1/results-0.tar.zst"]


def test_an_endpoint_the_generator_cannot_reach_fails_it(
    target: LocalTarget, tmp_path: Path
) -> None:
    req = request("http://127.0.0.1:9", tmp_path / "out")  # discard: nothing listens
    with pytest.raises(LoadGeneratorError, match="does not answer") as caught:
        run_in_cluster(req, target, job(req))
    assert "exit code 6" in caught.value.what


@pytest.mark.skipif(os.geteuid() != 0, reason="CFS quotas need root (cgroups) on this machine")
def test_a_generator_starved_by_its_cpu_limit_is_saturated_not_a_pass(
    endpoint: str, target: LocalTarget, tmp_path: Path
) -> None:
    from scripts.deploy import cgroups

    try:
        cgroups.create(f"tfrp-probe-{os.getpid()}", 0.5, None).remove()
    except OSError as exc:
        pytest.skip(f"cgroups are not writable here ({exc})")
    req = request(endpoint, tmp_path / "out", duration=3, rate=150)
    results = run_in_cluster(req, target, job(req, GeneratorOptions(cpu="100m")))
    assert results["canary"].saturated
    reasons = results["canary"].saturation_reasons
    # Measured against its 100m limit, not against a core it never had.
    assert any("of its CPU" in r for r in reasons), reasons


def test_grpc_through_the_job_builds_its_request_in_the_pod(
    digits_export: Path, target: LocalTarget, tmp_path: Path
) -> None:
    from scripts.model_spec import load_model_spec
    from tests.integration.serving_fixtures import running_server

    spec = load_model_spec(REPO_ROOT / "models" / "digits" / "model.yaml")
    with running_server([f"--model_base_path={digits_export}", "--model_name=digits"]) as server:
        req = dataclasses.replace(
            request(server.grpc_target, tmp_path / "out"),
            tracks={"canary": [server.grpc_target]},
            payload=spec.sample_request,
            protocol="grpc",
        )
        results = run_in_cluster(req, target, job(req))
    assert results["canary"].samples >= 80
    assert results["canary"].errors == 0
    # The PredictRequest was made in the pod, against the served signature (GetModelMetadata).
    assert (tmp_path / "out" / "raw" / "request-0.json").is_file()
