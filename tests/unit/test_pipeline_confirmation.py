"""The pipeline's confirmation run is independent of the first: on a borderline latency
failure the canary and its fresh baseline are replaced by new ones (the baseline started
first), the second load test reaches the new ones, and stable is never touched; a clear
verdict deploys nothing more."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from scripts.config import MODELS_DIR, Settings
from scripts.deploy.target import DeployOptions, DeployResult, StatusResult, TrackStatus
from scripts.deploy.targets import TargetConfig
from scripts.image.build import BuildOptions
from scripts.loadtest.options import LoadOptions
from scripts.loadtest.runner import LoadTestRequest
from scripts.model_spec import load_model_spec
from scripts.pipeline import Artifact, PipelineRequest, PipelineRun
from tests.unit.test_gate import lognormal, make_run

CANDIDATE = "oci:/x@sha256:" + "c" * 64
STABLE_IMAGE = "oci:/x@sha256:" + "5" * 64


class FakeTarget:
    """A target that records what the pipeline asks of it; each deploy gets new ports."""

    name = "local"

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.generation = 0
        self.canary = True

    def _endpoints(self) -> dict[str, list[str]]:
        g = self.generation
        return {
            "canary": [f"http://canary-{g}"],
            "baseline": [f"http://baseline-{g}"],
            "canary_grpc": [],
            "baseline_grpc": [],
        }

    def status(self) -> StatusResult:
        return StatusResult(
            target="local",
            namespace="default",
            model="digits",
            stable=TrackStatus(True, STABLE_IMAGE, 1, 1, endpoints=["http://stable"]),
            canary=TrackStatus(self.canary, CANDIDATE if self.canary else None),
        )

    def rollback(self, options: DeployOptions) -> DeployResult:
        self.calls.append(("rollback", options))
        assert self.canary, "rollback without a canary would restore the previous stable"
        self.canary = False
        return DeployResult(action="canary-removed", target="local", namespace="default")

    def deploy(self, rendered: object, *, canary: bool, options: DeployOptions) -> DeployResult:
        self.calls.append(("deploy", options))
        assert canary, "the stable track is never deployed by a confirmation"
        self.canary = True
        self.generation += 1
        return DeployResult(
            action="canary-deployed",
            target="local",
            namespace="default",
            endpoints=self._endpoints(),
        )

    def promote(self, *args: object) -> DeployResult:
        raise AssertionError("never promoted here")

    def teardown(self, *args: object) -> DeployResult:
        raise AssertionError("never torn down here")


def _run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ratios: list[float]
) -> tuple[dict[str, Any], FakeTarget, list[LoadTestRequest]]:
    loads: list[LoadTestRequest] = []

    def load_test(request: LoadTestRequest) -> None:
        ratio = ratios[len(loads)]
        # As the request was when this load test ran (the pipeline reuses its tracks).
        loads.append(replace(request, tracks={k: list(v) for k, v in request.tracks.items()}))
        make_run(request.out / "canary", lognormal(8 * ratio, seed=len(loads)))
        make_run(request.out / "baseline", lognormal(8, seed=50 + len(loads)), track="baseline")

    monkeypatch.setattr("scripts.loadtest.runner.run_load_test", load_test)
    request = PipelineRequest(
        workdir=tmp_path / "work",
        fetch=None,
        fetch_context=None,
        build=BuildOptions(),
        target=TargetConfig(),
        load=LoadOptions(generator="direct"),
    )
    run = PipelineRun(request, Settings())
    run._rendered = object()  # type: ignore[assignment]  # the fake target ignores it
    target = FakeTarget()
    first = DeployResult(
        action="canary-deployed",
        target="local",
        namespace="default",
        endpoints=target._endpoints(),
    )
    spec = load_model_spec(MODELS_DIR / "digits" / "model.yaml")
    artifact = Artifact("digits", 2, CANDIDATE, None, spec)
    verdict = run._load_and_judge(artifact, target, first, CANDIDATE, False)  # type: ignore[arg-type]
    return verdict, target, loads


def test_a_borderline_failure_is_confirmed_on_a_new_canary_and_a_new_baseline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    verdict, target, loads = _run(tmp_path, monkeypatch, [1.17, 1.0])
    assert verdict["outcome"] == "pass" and verdict["first_run"]["outcome"] == "fail"
    assert [c[0] for c in target.calls] == ["rollback", "deploy"]  # exactly one new pair
    deploy_options = target.calls[1][1]
    assert deploy_options.fresh_baseline and deploy_options.canary_first  # the other order
    # The first run loaded the first pair; the confirmation the new one.
    assert loads[0].tracks == {"canary": ["http://canary-0"], "baseline": ["http://baseline-0"]}
    assert loads[1].tracks == {"canary": ["http://canary-1"], "baseline": ["http://baseline-1"]}
    assert loads[1].out == tmp_path / "work" / "loadtest" / "confirmation"
    assert verdict["confirmation_deploy"]["endpoints"]["canary"] == ["http://canary-1"]


def test_a_clear_verdict_deploys_nothing_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for ratios, outcome in (([1.0], "pass"), ([1.6], "fail")):
        verdict, target, loads = _run(tmp_path / outcome, monkeypatch, ratios)
        assert verdict["outcome"] == outcome and verdict["first_run"] is None
        assert target.calls == [] and len(loads) == 1
        assert verdict["confirmation_deploy"] is None


def test_a_canary_removed_before_its_confirmation_is_an_error_not_a_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scripts.errors import LoadGeneratorError

    original = FakeTarget.status

    def gone_after_first_load(self: FakeTarget) -> StatusResult:
        status = original(self)
        if (tmp_path / "work" / "loadtest" / "canary").is_dir():
            self.canary = False  # someone removed it during the first run
            status.canary = TrackStatus(False)
        return status

    monkeypatch.setattr(FakeTarget, "status", gone_after_first_load)
    with pytest.raises(LoadGeneratorError, match="removed or replaced before its confirmation"):
        _run(tmp_path, monkeypatch, [1.17, 1.0])


@pytest.mark.parametrize("canary_first", [False, True])
def test_the_local_target_starts_the_baseline_first_unless_asked_and_keeps_the_tracks_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, canary_first: bool
) -> None:
    """The confirmation's swapped placement on the local target: the processes start in
    the other order, and each track still gets its own replicas."""
    from scripts.deploy import local_target
    from scripts.image.auth import CredentialStore

    started: list[str] = []

    class Started:
        rest_port = 0

        def __init__(self, pod: str) -> None:
            self.pod = pod

    def start(spec: object, pod: str, directory: Path) -> Started:
        started.append(pod.split("-", maxsplit=1)[0])
        return Started(pod)

    monkeypatch.setattr(local_target, "start_replica", start)
    monkeypatch.setattr(local_target, "wait_ready", lambda spec, replica, timeout: None)
    monkeypatch.setattr(local_target, "materialise", lambda *a, **k: tmp_path)
    monkeypatch.setattr(local_target, "image_env", lambda root: {})
    monkeypatch.setattr(local_target, "check_host_runs", lambda deployment: None)
    target = local_target.LocalTarget(
        tmp_path, "default", model="digits", cache_dir=tmp_path, credentials=CredentialStore(None)
    )

    def deployment(name: str) -> dict[str, Any]:
        return {"metadata": {"name": name}, "spec": {"replicas": 2}}

    groups = [(deployment("canary"), {}, []), (deployment("baseline"), {}, [])]
    options = DeployOptions(fresh_baseline=True, canary_first=canary_first)
    replicas = target._start_together(groups, options)  # type: ignore[arg-type]
    first, second = ("canary", "baseline") if canary_first else ("baseline", "canary")
    assert started == [first, first, second, second]
    tracks = [[r.pod.split("-", maxsplit=1)[0] for r in group] for group in replicas]  # type: ignore[attr-defined]
    assert tracks == [["canary", "canary"], ["baseline", "baseline"]]  # the callers' order
