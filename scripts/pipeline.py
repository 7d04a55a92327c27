"""The delivery pipeline as a library: one typed request in, one typed result out.

    fetch → validate → build → render → deploy (canary) → loadtest → gate
          → promote on pass | roll back on fail, inconclusive or error → report

``run`` calls :func:`run_pipeline` (every phase in one process). The GitHub
workflows run the phases in separate jobs, through the same :class:`PipelineRun`:
``artifact()`` (fetch, validate, build; or a digest built before), ``canary()``
(render, deploy the canary, load test, gate), then ``promote()`` or
``roll_back()``. Stages are called through their public functions; nothing here
parses flags or reads the environment.

Reruns. The run record (``WORKDIR/run.json``) carries a fingerprint of the request.
A rerun of the same request reuses what is still valid: the fetched model when its
directory is intact, the built image when the registry (or layout) still has its
digest, a canary that already runs the candidate, and a verdict reached on that very
canary against the same baseline. A release that is already stable is a no-op. What
cannot be proven valid is redone: every stage is idempotent.

Safety. A canary deploy never touches the stable track. A canary that fails to roll
out, or whose load test or gate breaks, or that is interrupted, is removed before the
error is reported. Another delivery's canary is never replaced: the run waits its
turn (``turn_wait_s``) and then refuses (exit 41).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scripts.atomic import write_text_atomic
from scripts.config import KUSTOMIZE_DIR, MODELS_DIR, Settings
from scripts.errors import ConfigError, LoadGeneratorError, LockError, PipelineError, UsageError
from scripts.log import log
from scripts.run_record import RunRecord

if TYPE_CHECKING:
    from scripts.artifact.fetch import FetchRequest, FetchResult
    from scripts.artifact.sources import FetchContext
    from scripts.deploy.target import DeployOptions, DeployResult, DeployTarget, StatusResult
    from scripts.deploy.targets import TargetConfig
    from scripts.image.bases import ChosenBase
    from scripts.image.build import BuildOptions
    from scripts.loadtest.options import LoadOptions
    from scripts.loadtest.results import TrackResult
    from scripts.loadtest.runner import LoadTestRequest
    from scripts.manifests.render import Rendered
    from scripts.model_spec import ModelSpec

STOP_AFTER = ("validate", "build", "render", "deploy")
GATE_MODES = ("baseline", "slo-only")
PROMOTED, ROLLED_BACK, ALREADY_STABLE = "promoted", "rolled back", "already stable"
DRY_RUN = "dry-run"


@dataclass(frozen=True)
class GateOptions:
    """How the canary is judged.

    ``baseline``: the SLOs, and a comparison with the stable track loaded at the same
    time (a first deploy has no stable: SLOs only). ``slo-only``: the SLOs alone (a
    deliberate rollback to a known version, or a stable track known to be broken).
    """

    mode: str = "baseline"
    rules_file: Path | None = None  # None: the model.yaml's slos/gate
    canary_endpoints: tuple[str, ...] = ()  # override the target's own addresses
    baseline_endpoints: tuple[str, ...] = ()


@dataclass(frozen=True)
class PipelineRequest:
    """Everything one delivery needs, parsed once from the command line."""

    workdir: Path
    fetch: FetchRequest | None  # None when ``image`` names a digest built before
    fetch_context: FetchContext | None
    build: BuildOptions
    target: TargetConfig
    load: LoadOptions
    gate: GateOptions = field(default_factory=GateOptions)
    image: str | None = None  # REPO@sha256:…: skip fetch and build (needs model, version)
    model: str | None = None  # expected model name (the release tag's); checked
    version: int | None = None  # expected version; checked
    archive_sha256: str | None = None  # of the release archive, when image is given
    model_config: Path | None = None  # default: models/NAME/model.yaml
    image_repo: str | None = None  # REGISTRY/REPO to push to; None: an OCI layout in workdir
    base: str | None = None
    overlay: str = "local"
    kube_version: str = "1.33.0"
    kustomize_dir: Path = KUSTOMIZE_DIR  # base, components and overlays
    dry_run: bool = False
    stop_after: str | None = None
    turn_wait_s: float = 0.0

    def fingerprint(self) -> str:
        """What makes two runs "the same request" (a rerun may resume the other)."""
        fetch = self.fetch
        parts = {
            "source": fetch.source if fetch else None,
            "sha256": fetch.expected_sha256 if fetch else None,
            "image": self.image,
            "model": self.model,
            "version": self.version,
            "image_repo": self.image_repo,
            "base": self.base,
            "overlay": self.overlay,
            "target": [self.target.kind, self.target.namespace, self.target.environment],
            "load": [self.load.profile, self.load.protocol, *self.load.overrides().items()],
            "gate": [self.gate.mode, str(self.gate.rules_file)],
            "dry_run": self.dry_run,
        }
        text = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Artifact:
    """The model, as an image pinned by digest: what the later phases deploy."""

    model: str
    version: int
    image: str  # REPO@sha256:… or oci:DIR@sha256:…
    archive_sha256: str | None
    spec: ModelSpec | None
    reused: bool = False  # True: nothing was fetched or pushed (rerun, or a known digest)


@dataclass(frozen=True)
class CanaryOutcome:
    outcome: str  # pass | fail | inconclusive | error | dry-run
    reasons: list[str]
    verdict: dict[str, Any] | None
    candidate: str  # the image the canary's pods run
    baseline_image: str | None
    first_deploy: bool


@dataclass
class PipelineResult:
    """What one run produced; ``exit_code`` is the gate's (or 0 when it stopped early)."""

    record: RunRecord
    model: str | None = None
    version: int | None = None
    image: str | None = None
    archive_sha256: str | None = None
    outcome: str | None = None
    action: str = "none"
    exit_code: int = 0
    reasons: list[str] = field(default_factory=list)
    text: str = ""
    summary: str = ""
    outputs: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return self.record.to_dict() | {
            "model": self.model,
            "version": self.version,
            "image": self.image,
            "archive_sha256": self.archive_sha256,
            "outcome": self.outcome,
            "action": self.action,
            "reasons": self.reasons,
        }


def release_row(
    version: int | None, outcome: str, action: str, verdict: dict[str, Any] | None
) -> dict[str, Any]:
    """One row of ``report``: the release, its verdict, what was done, key figures."""
    figures = (verdict or {}).get("candidate") or {}
    latency = figures.get("latency_ms") or {}
    return {
        "version": version,
        "verdict": outcome,
        "action": action,
        "p95_ms": latency.get("p95"),
        "p99_ms": latency.get("p99"),
        "error_ratio": figures.get("error_ratio"),
        "req_per_s": figures.get("achieved_rate"),
    }


def _is_registry(image: str | None) -> bool:
    return image is not None and not image.startswith("oci:")


class PipelineRun:
    """One delivery's phases over one run record (``WORKDIR/run.json``)."""

    def __init__(self, request: PipelineRequest, settings: Settings) -> None:
        self.request = request
        self.settings = settings
        self.workdir = request.workdir
        fingerprint = request.fingerprint()
        path = self.workdir / "run.json"
        earlier = RunRecord.load(path)
        self.earlier = (
            earlier
            if earlier is not None and earlier.fingerprint == fingerprint and earlier.stages
            else None
        )
        source = request.fetch.source if request.fetch else (request.image or "")
        self.record = RunRecord(path=path, source=source, fingerprint=fingerprint)
        if self.earlier is not None:
            self.record.resumed_from = self.earlier.started_at
            log.info(
                "an earlier run of this request (%s, %s) is recorded in %s: reusing what is "
                "still valid",
                self.earlier.started_at,
                self.earlier.status,
                path,
            )
        self.text: list[str] = []
        self.summary: list[str] = []
        self.outputs: dict[str, str] = {"run_record": str(path)}
        self._target: DeployTarget | None = None
        self._rendered: Rendered | None = None

    # -- phase 1: the image ----------------------------------------------------------
    def artifact(self) -> Artifact:
        """fetch → validate → build, or check a digest built before (``request.image``)."""
        request = self.request
        if request.image is not None:
            return self._known_image(request.image)
        if request.fetch is None or request.fetch_context is None:
            raise UsageError("a delivery needs a source to fetch, or an image digest")
        fetched = self._fetch(request.fetch, request.fetch_context)
        self._check_expected(fetched.model_name, fetched.version)
        with self.record.stage("validate") as stage:
            from scripts.artifact.validate import validate

            spec = self._spec(fetched.model_name)
            validated = validate(fetched.version_path, request.fetch.signature, spec)
            stage.result = validated.to_dict()
        self.text.append(
            f"  validated: {validated.version_dir}"
            + (" (sample request fits)" if validated.sample_checked else "")
        )
        self.outputs |= {
            "model_dir": str(fetched.path),
            "model": fetched.model_name,
            "version": str(fetched.version),
            "archive_sha256": fetched.sha256,
        }
        if request.stop_after == "validate":
            return Artifact(fetched.model_name, fetched.version, "", fetched.sha256, spec)
        image = self._build(fetched, spec)
        return Artifact(fetched.model_name, fetched.version, image, fetched.sha256, spec)

    def _fetch(self, fetch: FetchRequest, ctx: FetchContext) -> FetchResult:
        from scripts.artifact.fetch import describe_result, result_from_record
        from scripts.artifact.fetch import fetch as fetch_archive

        earlier = self.earlier.result_of("fetch") if self.earlier else None
        if earlier and Path(str(earlier.get("version_path", "")), "saved_model.pb").is_file():
            result = result_from_record(earlier)
            self.record.reuse("fetch", earlier, f"{result.version_path} is intact")
        else:
            with self.record.stage("fetch") as stage:
                result = fetch_archive(fetch, ctx)
                stage.result = result.to_dict()
        text, summary = describe_result(result)
        self.text.append(text)
        self.summary.append(summary)
        return result

    def _check_expected(self, model: str, version: int) -> None:
        request = self.request
        if request.model and model != request.model:
            raise ConfigError(
                f"the archive holds model {model!r}, but the release names {request.model!r}",
                cause="the wrong archive was attached to the release, or a typo in the tag",
                fix="attach the archive of the model the tag names (NAME-VERSION.tar.gz)",
            )
        if request.version is not None and version != request.version:
            raise ConfigError(
                f"the archive holds {model} v{version}, but the release names v{request.version}",
                cause="the archive of another version was attached to the release",
                fix=f"attach {model}-{request.version}.tar.gz, packaged from version "
                f"{request.version}",
            )

    def _spec(self, model: str) -> ModelSpec | None:
        from scripts.model_spec import load_model_spec

        if self.request.model_config:
            return load_model_spec(self.request.model_config)
        default = MODELS_DIR / model / "model.yaml"
        if default.is_file():
            return load_model_spec(default)
        log.warning("no %s: the sample request is not checked", default)
        return None

    def base_for(
        self, model: str, spec: ModelSpec | None, *, require_built: bool = True
    ) -> ChosenBase:
        """The serving base (scripts/image/bases.py gives the order); render asks for the
        same one the build used. Local runs build on an empty base unless one is named:
        the local runtime serves with this checkout's server."""
        from scripts.image.bases import choose_base

        request = self.request
        return choose_base(
            cli=request.base,
            model_base=spec.base_image if spec else None,
            overlay=request.overlay,
            kustomize_dir=request.kustomize_dir,
            local_build=not request.image_repo and not _is_registry(request.image),
            require_built=require_built,
        )

    def _image_and_base(self, model: str, spec: ModelSpec | None) -> tuple[str, ChosenBase]:
        from scripts.image.defaults import DEFAULT_BASE

        base = self.base_for(model, spec)
        if base.source == "local default":
            log.info(
                "local image: the model layer on an empty base (production builds use %s)",
                DEFAULT_BASE,
            )
        log.info("serving base %s (from %s)", base.display, base.source)
        image = self.request.image_repo or f"oci:{self.workdir / 'images'}:{model}"
        return image, base

    def _build(self, fetched: FetchResult, spec: ModelSpec | None) -> str:
        from scripts.image.build import BuildResult, build, describe_result
        from scripts.image.lookup import image_exists

        earlier = self.earlier.result_of("build") if self.earlier else None
        if earlier and not earlier.get("dry_run"):
            image = str(earlier["image"])
            try:
                there = image_exists(
                    image, self.settings.docker_config, insecure=self.request.build.insecure
                )
            except PipelineError as exc:  # cannot tell: build again (it is idempotent)
                log.warning("cannot check the earlier build %s (%s): building again", image, exc)
                there = False
            if there:
                self.record.reuse("build", earlier, f"{image} is still there")
                self.text.append(f"image: {image} (reused)")
                self.outputs |= {"image": image, "digest": str(earlier["digest"])}
                return image
        with self.record.stage("build") as stage:
            image, base = self._image_and_base(fetched.model_name, spec)
            built: BuildResult = build(
                self.request.build.request(fetched.path, image, base, archive_sha256=fetched.sha256)
            )
            stage.result = built.to_dict()
        text, summary = describe_result(built)
        self.text.append("image: " + text)
        self.summary.append(summary)
        self.outputs |= {"image": built.image, "digest": built.digest}
        return built.image

    def _known_image(self, image: str) -> Artifact:
        """A digest built before: check it still exists, and who it is."""
        from scripts.image.lookup import image_exists

        request = self.request
        if request.model is None or request.version is None:
            raise UsageError(
                f"delivering the known image {image} needs --model and --model-version",
                fix="pass the model and version the image was built from",
            )
        with self.record.stage("image") as stage:
            if not request.dry_run and not image_exists(
                image, self.settings.docker_config, insecure=request.build.insecure
            ):
                from scripts.errors import ArtifactNotFoundError

                raise ArtifactNotFoundError(
                    f"the image {image} no longer exists",
                    cause="it was deleted from the registry (a cleanup policy?) or never pushed",
                    fix="deliver the release again from its archive, which rebuilds the image",
                )
            stage.result = {"image": image, "model": request.model, "version": request.version}
        self.text.append(f"image: {image} (built before)")
        self.summary.append(
            f"### Image `{request.model}` v{request.version}: delivered before\n\n"
            f"`{image}` — nothing to fetch or build"
        )
        self.outputs |= {
            "image": image,
            "digest": image.rsplit("@", 1)[-1],
            "model": request.model,
            "version": str(request.version),
        }
        if request.archive_sha256:
            self.outputs["archive_sha256"] = request.archive_sha256
        return Artifact(
            request.model,
            request.version,
            image,
            request.archive_sha256,
            self._spec(request.model),
            reused=True,
        )

    # -- phase 2: the canary ---------------------------------------------------------
    def render(self, artifact: Artifact) -> Rendered:
        from scripts.manifests.render import RenderRequest, render
        from scripts.manifests.render import write as write_manifests

        with self.record.stage("render") as stage:
            rendered = render(
                RenderRequest(
                    overlay=self.request.overlay,
                    image=artifact.image,
                    model=artifact.model,
                    kube_version=self.request.kube_version,
                    kustomize_dir=self.request.kustomize_dir,
                    batching=artifact.spec.batching if artifact.spec else None,
                    base=self.base_for(artifact.model, artifact.spec, require_built=False),
                )
            )
            manifests = self.workdir / "manifests" / f"{self.request.overlay}.yaml"
            write_manifests(rendered, manifests)
            stage.result = rendered.to_dict() | {"path": str(manifests)}
        self.text.append(f"manifests: {manifests} ({len(rendered.objects)} objects, valid)")
        self.outputs["manifests"] = str(manifests)
        self._rendered = rendered
        return rendered

    def target(self, rendered: Rendered | None = None) -> DeployTarget:
        if self._target is None:
            from scripts.deploy.targets import open_target

            self._target = open_target(
                self.request.target,
                self.settings,
                overlay=self.request.overlay,
                model=rendered.model if rendered is not None else self.request.model,
                rendered_namespace=rendered.namespace if rendered is not None else None,
            )
        return self._target

    def _options(self, *, dry_run: bool = False) -> DeployOptions:
        from scripts.deploy.target import DeployOptions

        return DeployOptions(wait=True, timeout_s=self.request.target.timeout_s, dry_run=dry_run)

    def canary(self, artifact: Artifact) -> CanaryOutcome | None:
        """render → deploy the canary → load test → gate. None: stopped, or already stable."""
        from scripts.deploy.target import STABLE, deployment_of, image_of, stable_objects

        request = self.request
        rendered = self.render(artifact)
        if request.stop_after == "render":
            return None
        candidate = image_of(deployment_of(stable_objects(rendered), STABLE)) or ""
        target = self.target(rendered)
        if request.dry_run:
            with self.record.stage("deploy") as stage:
                planned = target.deploy(rendered, canary=True, options=self._options(dry_run=True))
                stage.result = planned.to_dict()
            self.text.append("dry run: the canary would be deployed; nothing changed")
            if planned.diff:
                self.text.append(planned.diff)
            return CanaryOutcome(DRY_RUN, ["dry run"], None, candidate, None, False)
        status = self._wait_for_turn(target, candidate)
        if status.stable.exists and status.stable.image == candidate and not status.canary.exists:
            with self.record.stage("deploy") as stage:
                stage.result = {"action": "none", "reason": "already stable", "image": candidate}
            self.text.append(f"{candidate} is already the stable image: nothing to do")
            return None
        first_deploy = not status.stable.exists
        deployed = self._deploy_canary(target, rendered, candidate, status)
        if request.stop_after == "deploy":
            return None
        return self._test(artifact, target, candidate, deployed, first_deploy)

    def _wait_for_turn(self, target: DeployTarget, candidate: str) -> StatusResult:
        """Never replace another delivery's canary: wait for it to end, then refuse."""
        deadline = time.monotonic() + self.request.turn_wait_s
        delay = 2.0
        while True:
            status = target.status()
            busy = status.canary.exists and status.canary.image != candidate
            if not busy:
                return status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockError(
                    f"another canary ({status.canary.image}) is under test in "
                    f"{status.namespace}; refusing to replace it",
                    cause="another delivery is running, or one died before removing its canary",
                    fix="wait for it (--turn-wait SECONDS), or, when no delivery is running, "
                    "remove it with `python -m scripts rollback`",
                )
            log.info(
                "waiting for the canary of %s to finish (%.0f s left)",
                status.canary.image,
                remaining,
            )
            time.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 15.0)

    def _deploy_canary(
        self,
        target: DeployTarget,
        rendered: Rendered,
        candidate: str,
        status: StatusResult,
    ) -> DeployResult:
        from scripts.deploy.target import DeployResult

        if status.canary.exists and status.canary.image == candidate:
            # A rerun after a runner died: the canary is ours and already running.
            with self.record.stage("deploy") as stage:
                deployed = DeployResult(
                    action="none",
                    target=status.target,
                    namespace=status.namespace,
                    image=candidate,
                    rollout=f"reused: the canary already runs {candidate}",
                    endpoints={
                        "canary": status.canary.endpoints,
                        "canary_grpc": status.canary.grpc_endpoints,
                        "baseline": status.baseline.endpoints,
                        "baseline_grpc": status.baseline.grpc_endpoints,
                    },
                )
                stage.result = deployed.to_dict()
            self.text.append(f"canary: already running {candidate} (reused)")
            return deployed
        try:
            with self.record.stage("deploy") as stage:
                # A fresh baseline of the stable image beside the canary, for the gate to
                # compare with (unless there is no stable yet, or endpoints are given).
                fresh = (
                    status.stable.exists
                    and self.request.gate.mode == "baseline"
                    and not self.request.gate.baseline_endpoints
                )
                options = replace(self._options(), fresh_baseline=fresh)
                deployed = target.deploy(rendered, canary=True, options=options)
                stage.result = deployed.to_dict()
        except LockError:
            raise  # someone else's deploy: nothing of ours to clean up
        except BaseException:
            log.error("the canary did not come up: removing it (the stable track is untouched)")
            self._remove_canary(target)
            raise
        canary = ", ".join(deployed.endpoints.get("canary", [])) or "(no endpoints)"
        self.text.append(f"canary: {canary}")
        return deployed

    def _remove_canary(self, target: DeployTarget) -> None:
        try:
            with self.record.stage("rollback") as stage:
                stage.result = target.rollback(self._options()).to_dict()
        except PipelineError as exc:
            log.error("could not remove the canary: %s", exc)

    def _test(
        self,
        artifact: Artifact,
        target: DeployTarget,
        candidate: str,
        deployed: DeployResult,
        first_deploy: bool,
    ) -> CanaryOutcome:
        from scripts.gate.verdict import ERROR

        request = self.request
        baseline_image = None
        if not first_deploy and request.gate.mode == "baseline":
            baseline_image = target.status().stable.image
        # A verdict is reused only for the very canary it judged (one already running
        # when this run started): a canary deployed again is tested again.
        earlier = (
            self._earlier_verdict(candidate, baseline_image) if deployed.action == "none" else None
        )
        if earlier is not None:
            return earlier
        try:
            verdict = self._load_and_judge(artifact, target, deployed, candidate, first_deploy)
        except KeyboardInterrupt:
            log.error("interrupted during the load test: removing the canary")
            self._remove_canary(target)
            raise
        except Exception as exc:  # noqa: BLE001 - a broken load test or gate must roll back
            log.error("the load test or the gate broke (%s): the canary will be rolled back", exc)
            self.record.status = "running"  # the run goes on to roll back, then reports
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return CanaryOutcome(
                ERROR, [f"the load test or the gate broke: {reason}"], None, candidate,
                baseline_image, first_deploy,
            )  # fmt: skip
        return CanaryOutcome(
            str(verdict["outcome"]),
            list(verdict["reasons"]),
            verdict,
            candidate,
            baseline_image,
            first_deploy,
        )

    def _earlier_verdict(self, candidate: str, baseline_image: str | None) -> CanaryOutcome | None:
        """A verdict reached on this very canary, against the same baseline, before a crash."""
        if self.earlier is None:
            return None
        gate = self.earlier.result_of("gate")
        if not gate or gate.get("candidate_image") != candidate:
            return None
        if gate.get("baseline_image") != baseline_image:
            return None
        self.record.reuse("gate", gate, "the canary and the baseline are the ones it judged")
        self.summary.append(str(gate.get("markdown", "")))
        return CanaryOutcome(
            str(gate["outcome"]),
            list(gate.get("reasons", [])),
            gate,
            candidate,
            baseline_image,
            baseline_image is None,
        )

    def _load_and_judge(
        self,
        artifact: Artifact,
        target: DeployTarget,
        deployed: DeployResult,
        candidate: str,
        first_deploy: bool,
    ) -> dict[str, Any]:
        from scripts.gate.confirm import confirm_if_borderline
        from scripts.gate.report import charts, markdown, mermaid_charts
        from scripts.gate.verdict import Verdict, decide, load_rules
        from scripts.loadtest.options import load_test_request
        from scripts.loadtest.results import load
        from scripts.loadtest.runner import run_load_test

        request = self.request
        spec = artifact.spec
        with self.record.stage("loadtest") as stage:
            if spec is None:
                raise ConfigError(
                    f"model {artifact.model} has no model.yaml: no sample request, SLOs or "
                    "load profile for the gate",
                    fix="add models/NAME/model.yaml or pass --model-config",
                )
            grpc = request.load.protocol == "grpc"
            tracks = {
                "canary": list(request.gate.canary_endpoints)
                or deployed.endpoints.get("canary_grpc" if grpc else "canary", [])
            }
            with_baseline = not first_deploy and request.gate.mode == "baseline"
            stable = target.status().stable
            if with_baseline:
                # The fresh baseline created with the canary; the stable pods only when
                # the target made none (a canary found running from before it existed).
                fresh = deployed.endpoints.get("baseline_grpc" if grpc else "baseline", [])
                tracks["baseline"] = (
                    list(request.gate.baseline_endpoints)
                    or fresh
                    or (stable.grpc_endpoints if grpc else stable.endpoints)
                )
            results_dir = self.workdir / "loadtest"
            overridden = bool(request.gate.canary_endpoints or request.gate.baseline_endpoints)

            def load_test(out: Path) -> None:
                load_request = load_test_request(
                    request.load,
                    spec,
                    tracks,
                    out,
                    overlay=request.overlay,
                    model=artifact.model,
                    kustomize_dir=request.kustomize_dir,
                )
                if request.load.uses_job(with_target=not overridden):
                    self._generator_job(load_request, target, candidate)
                else:
                    run_load_test(load_request)

            load_test(results_dir)
            stage.result = {
                t: load(results_dir / t).to_dict() for t in tracks if (results_dir / t).is_dir()
            }
        with self.record.stage("gate") as stage:
            rules = load_rules(
                request.gate.rules_file
                or request.model_config
                or MODELS_DIR / artifact.model / "model.yaml",
                request.overlay,
            )

            def judge(run_dir: Path) -> Verdict:
                baseline = run_dir / "baseline"
                return decide(run_dir / "canary", rules, baseline if baseline.is_dir() else None)

            redeployed: dict[str, Any] = {}
            rendered = self._rendered
            fresh_pair = with_baseline and not overridden and deployed.endpoints.get("baseline")

            def confirm(out: Path) -> None:
                # Independent of the first run: a new canary and a new fresh baseline
                # (new pods; locally new processes, the baseline started first).
                if fresh_pair and rendered is not None:
                    again = self._fresh_pair_again(target, rendered, candidate, tracks, grpc)
                    redeployed.update(again)
                load_test(out)

            verdict, results_dir = confirm_if_borderline(
                judge(results_dir), confirm, judge, rules, results_dir
            )
            baseline_dir = results_dir / "baseline" if (results_dir / "baseline").is_dir() else None
            report = self.workdir / "report"
            pngs = charts(results_dir / "canary", baseline_dir, report)
            note = (
                " (first deploy: SLOs only)"
                if first_deploy
                else " (SLOs only)"
                if request.gate.mode == "slo-only"
                else ""
            )
            shown = [p.relative_to(self.workdir) for p in pngs]  # where they are in the report
            gate_md = markdown(
                verdict, f"Gate for {artifact.model} v{artifact.version}{note}", shown
            )
            gate_md += "\n" + mermaid_charts(results_dir / "canary", baseline_dir) + "\n"
            data = verdict.to_dict()
            write_text_atomic(report / "verdict.json", json.dumps(data, indent=2) + "\n")
            stage.result = data | {
                "confirmation_deploy": redeployed or None,
                "charts": [str(p) for p in pngs],
                "candidate_image": candidate,
                "baseline_image": stable.image if with_baseline else None,
                "markdown": gate_md,
            }
        self.summary.append(gate_md)
        self.outputs["report_dir"] = str(report)
        return stage.result

    def _fresh_pair_again(
        self,
        target: DeployTarget,
        rendered: Rendered,
        candidate: str,
        tracks: dict[str, list[str]],
        grpc: bool,
    ) -> dict[str, Any]:
        """Replace the canary and its fresh baseline with new ones (for a confirmation
        run); ``tracks`` gets their endpoints. Stable is not touched."""
        from scripts.deploy.target import remove_canary_of

        if not remove_canary_of(target, self._options(), candidate):
            raise LoadGeneratorError(
                f"the canary ({candidate}) was removed or replaced before its confirmation run",
                cause="someone or something deleted it (a manual rollback, another delivery)",
                fix="find who removed it, then deliver again",
            )
        again = target.deploy(
            rendered,
            canary=True,
            options=replace(self._options(), fresh_baseline=True, canary_first=True),
        )
        for track in ("canary", "baseline"):
            tracks[track] = again.endpoints.get(f"{track}_grpc" if grpc else track, [])
        log.info("confirmation: a new canary and a new fresh baseline (%s)", again.rollout)
        return again.to_dict()

    def _generator_job(
        self, load_request: LoadTestRequest, target: DeployTarget, candidate: str
    ) -> dict[str, TrackResult]:
        """The load test through the generator Job on the target (kustomize/loadtest)."""
        from dataclasses import replace

        from scripts.loadtest.in_cluster import generator_load_test

        request = self.request
        options = replace(
            request.load.job,
            kustomize_dir=request.kustomize_dir,
            kube_version=request.kube_version,
        )
        image, results = generator_load_test(
            load_request,
            target,
            options,
            namespace=target.status().namespace,
            run_id=self.settings.run_id or self.workdir.name,
            cache_dir=self.settings.cache_dir,
            docker_config=self.settings.docker_config,
            insecure=request.build.insecure,
            sibling_of=request.image_repo,
        )
        self.outputs["generator_image"] = image
        canary = target.status().canary
        if not canary.exists or canary.image != candidate:
            raise LoadGeneratorError(
                f"the canary ({candidate}) was removed or replaced during the load test",
                cause="someone or something deleted it (a manual rollback, another delivery, "
                "a namespace clean-up); its samples cannot be judged",
                fix="find who removed it (kubectl get events), then deliver again",
            )
        return results

    # -- phase 3: the decision -------------------------------------------------------
    def promote(self, artifact: Artifact) -> str:
        """Move the stable track to the canary's image (it must be the candidate)."""
        from scripts.deploy.target import STABLE, deployment_of, image_of, stable_objects

        rendered = self._rendered or self.render(artifact)
        candidate = image_of(deployment_of(stable_objects(rendered), STABLE))
        target = self.target(rendered)
        status = target.status()
        if status.stable.image == candidate and not status.canary.exists:
            with self.record.stage("promote") as stage:
                stage.result = {"action": "none", "reason": "already stable", "image": candidate}
            return ALREADY_STABLE
        with self.record.stage("promote") as stage:
            promoted = target.promote(rendered, self._options())
            stage.result = promoted.to_dict()
        self.text.append(f"promoted: the stable track runs {candidate}")
        self.summary.append(
            f"### Promoted `{artifact.model}` v{artifact.version}\n\n"
            f"The stable track runs `{candidate}`"
            + (f" (it ran `{promoted.previous_image}`)" if promoted.previous_image else "")
            + f"; {promoted.rollout or 'rolled out'}."
        )
        return PROMOTED

    def roll_back(self, candidate: str | None = None) -> str:
        """Remove the canary; and when a promotion of ``candidate`` was cut short, restore
        the stable track's previous image. Never waits for anyone."""
        target = self.target(self._rendered)
        with self.record.stage("rollback") as stage:
            steps = [target.rollback(self._options()).to_dict()]
            stable = target.status().stable
            digest = candidate.rsplit("@", 1)[-1] if candidate else None
            if digest and (stable.image or "").endswith(digest) and stable.previous_image:
                log.warning(
                    "the stable track already runs %s: restoring the previous image", candidate
                )
                steps.append(target.rollback(self._options()).to_dict())
            stage.result = {"steps": steps, "action": steps[-1]["action"]}
        done = ", ".join(str(step["action"]) for step in steps)
        self.text.append(f"rolled back: {done}")
        stable_note = (
            "the stable track is back on its previous image"
            if any(step["action"] == "restored" for step in steps)
            else "the stable track was not touched"
        )
        self.summary.append(f"### Rolled back\n\n{done}; {stable_note}.")
        return ROLLED_BACK

    def decide(self, artifact: Artifact, canary: CanaryOutcome) -> str:
        from scripts.gate.verdict import PASS

        if canary.outcome == PASS:
            return self.promote(artifact)
        return self.roll_back(canary.candidate)

    # -- the result ------------------------------------------------------------------
    def result(
        self,
        artifact: Artifact | None,
        *,
        outcome: str | None = None,
        action: str = "none",
        reasons: list[str] | None = None,
        verdict: dict[str, Any] | None = None,
    ) -> PipelineResult:
        from scripts.gate.verdict import EXIT_CODES, PASS

        exit_code = EXIT_CODES.get(outcome, 52) if outcome and outcome != DRY_RUN else 0
        if outcome is not None:
            self.record.releases = [
                release_row(artifact.version if artifact else None, outcome, action, verdict)
            ]
            self.text.append(f"verdict: {outcome} → {action}")
            self.outputs |= {"verdict": outcome, "action": action}
        elif action == ALREADY_STABLE:
            self.record.releases = [
                release_row(artifact.version if artifact else None, PASS, action, None)
            ]
            self.outputs |= {"verdict": PASS, "action": action}
        if (self.workdir / "report").is_dir():
            self.text.append(
                f"report: {self.workdir / 'summary.md'}, {self.workdir / 'report'}, "
                f"{self.workdir / 'loadtest' / 'locust.html'}"
            )
        self.record.finish("ok" if exit_code == 0 else "failed")
        summary = "\n\n".join(s for s in self.summary if s)
        write_text_atomic(self.workdir / "summary.md", summary + "\n")
        return PipelineResult(
            record=self.record,
            model=artifact.model if artifact else None,
            version=artifact.version if artifact else None,
            image=artifact.image if artifact and artifact.image else None,
            archive_sha256=artifact.archive_sha256 if artifact else None,
            outcome=outcome,
            action=action,
            exit_code=exit_code,
            reasons=reasons or [],
            text="\n".join(self.text) + f"\nrun record: {self.record.path}",
            summary=summary,
            outputs=self.outputs,
        )


def run_pipeline(request: PipelineRequest, settings: Settings) -> PipelineResult:
    """Every phase in one process: the ``run`` command."""
    run = PipelineRun(request, settings)
    artifact = run.artifact()
    if request.stop_after in ("validate", "build"):
        return run.result(artifact)
    canary = run.canary(artifact)
    if canary is None:
        stopped = request.stop_after in ("render", "deploy")
        return run.result(artifact, action="none" if stopped else ALREADY_STABLE)
    if canary.outcome == DRY_RUN:
        return run.result(artifact, outcome=DRY_RUN, action="none", reasons=canary.reasons)
    action = run.decide(artifact, canary)
    return run.result(
        artifact,
        outcome=canary.outcome,
        action=action,
        reasons=canary.reasons,
        verdict=canary.verdict,
    )


__all__ = [
    "GATE_MODES",
    "STOP_AFTER",
    "Artifact",
    "CanaryOutcome",
    "GateOptions",
    "PipelineRequest",
    "PipelineResult",
    "PipelineRun",
    "run_pipeline",
]
