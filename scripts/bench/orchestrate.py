"""A whole benchmark: render → deploy under bench names → search each → cost → report.

Overlays are measured one at a time, whatever their placement: two overlays loaded
at once would share nodes (or this machine's two cores) and measure each other.
Placement only decides what is *deployed* at once: side by side when the cluster
(or this machine) holds them all, else one after another. Whatever happens —
an error, Ctrl-C, GitHub's cancel (SIGTERM, turned into KeyboardInterrupt by the
command) — every object of the run is removed before returning.
"""

from __future__ import annotations

import os
import platform
import time
import uuid
from dataclasses import asdict, replace
from pathlib import Path

from scripts.bench.api import BenchRequest, Progress, ProgressCallback, Variant, variants
from scripts.bench.results import BenchResult, OverlayResult, Slo, Step
from scripts.bench.search import SearchPlan, find_capacity
from scripts.bench.shapes import shape_of
from scripts.bench.slots import KubernetesSlots, LocalSlots, Slot, SlotHost
from scripts.bench.steps import Generator, StepRunner, StepTiming
from scripts.config import Settings
from scripts.deploy.targets import DEFAULT_NAMESPACE, connect_api, overlay_namespace
from scripts.errors import BenchError, ConfigError, PipelineError, UsageError
from scripts.loadtest.results import TrackResult
from scripts.loadtest.runner import LoadTestRequest
from scripts.log import log
from scripts.manifests.render import Rendered, RenderRequest
from scripts.manifests.render import overlays as available_overlays
from scripts.model_spec import ModelSpec, model_spec_for

DEFAULT_BENCH_NAMESPACE = "tf-bench"


def search_plan(request: BenchRequest) -> SearchPlan:
    start = request.start_rps or (20.0 if request.quick else 10.0)
    return SearchPlan(start_rps=start, max_rps=request.max_rps, repeats=1 if request.quick else 3)


def model_slo(spec: ModelSpec) -> Slo:
    """The model.yaml's SLOs as the bench judges them (min_achieved: the bench's 95 %)."""
    return Slo(p99_ms=spec.slos.latency_p99_ms, error_ratio=spec.slos.error_ratio_max)


def slo_for(request: BenchRequest, spec: ModelSpec) -> Slo:
    return request.slo if request.slo is not None else model_slo(spec)


def stable_namespaces(kustomize_dir: Path) -> set[str]:
    """Where overlays deploy their stable tracks (their ``namespace:``, else `default`)."""
    return {
        overlay_namespace(name, kustomize_dir) or DEFAULT_NAMESPACE
        for name in available_overlays(kustomize_dir)
    }


def open_host(request: BenchRequest, settings: Settings, run_id: str) -> SlotHost:
    config = request.target
    if config.kind == "local":
        return LocalSlots(
            config.state_dir,
            run_id,
            cache_dir=settings.cache_dir / "images",
            docker_config=settings.docker_config,
            timeout_s=config.timeout_s,
            fault_injection=config.fault_injection,
            insecure_registry=config.insecure_registry,
        )
    if config.kind == "k8s":
        return KubernetesSlots(
            connect_api(config, settings),
            config.namespace or DEFAULT_BENCH_NAMESPACE,
            run_id,
            timeout_s=config.timeout_s,
            poll_s=config.poll_s,
        )
    raise UsageError(f"unknown target {config.kind!r}", fix="use --target k8s or local")


def _render(request: BenchRequest, variant: Variant, spec: ModelSpec) -> Rendered:
    """The variant's overlay for its image, named after the variant (objects, results)."""
    from scripts.image.bases import ChosenBase, choose_base, load_catalog, resolve_named
    from scripts.manifests.render import render

    base: ChosenBase
    if variant.base is not None:
        catalog = load_catalog(request.kustomize_dir)
        base = resolve_named(catalog, variant.base, "--bases", require_built=False)
    else:  # the one image's base, as the command chose it
        base = choose_base(
            cli=request.base,
            model_base=spec.base_image,
            overlay=None,
            kustomize_dir=request.kustomize_dir,
            local_build=variant.image.startswith("oci:"),
            require_built=False,
        )
    rendered = render(
        RenderRequest(
            overlay=variant.overlay,
            image=variant.image,
            model=request.model,
            kustomize_dir=request.kustomize_dir,
            allow_ablations=True,  # an ablation is measured, never served
            batching=spec.batching,  # as the model would be delivered on this overlay
            base=base,
        )
    )
    return replace(rendered, overlay=variant.name)


class _Bench:
    def __init__(
        self, request: BenchRequest, progress: ProgressCallback, settings: Settings
    ) -> None:
        if not request.image and not request.bases:
            raise UsageError(
                "bench needs an image (or a source the command builds first)",
                fix="pass --image REPO@sha256:… or --source URI",
            )
        if not request.overlays:
            raise UsageError("bench needs at least one overlay", fix="pass --overlays A,B")
        self.request = request
        self.image = request.image or request.bases[0][1]
        self.progress = progress
        self.settings = settings
        self.run_id = request.run_id or uuid.uuid4().hex[:12]
        self.spec = model_spec_for(request.model, request.models_dir)
        self.slo = slo_for(request, self.spec)
        self.plan = search_plan(request)
        self.timing = StepTiming.for_mode(request.quick)
        self.family = request.machine_family or (
            "local" if request.target.kind == "local" else "E2"
        )
        self.host = open_host(request, settings, self.run_id)
        self.generator_kind = request.generator or (
            "job" if request.target.kind == "k8s" else "direct"
        )

    # -- generators ------------------------------------------------------------------
    def generator(self) -> Generator:
        if self.generator_kind == "direct":
            from scripts.loadtest.runner import run_load_test

            return run_load_test
        from scripts.image.generator_image import resolve_generator_image
        from scripts.loadtest.in_cluster import plan_job, run_in_cluster

        options = replace(self.request.job, kustomize_dir=self.request.kustomize_dir)
        image = resolve_generator_image(
            options,
            target=self.host.name,
            cache_dir=self.settings.cache_dir,
            docker_config=self.settings.docker_config,
            sibling_of=self.image,
        )
        runner = self.host.job_runner()
        steps = iter(range(1, 10_000))

        def through_job(load: LoadTestRequest) -> dict[str, TrackResult]:
            job = plan_job(
                load,
                options,
                image=image,
                namespace=self.host.namespace,
                run_id=f"{self.run_id}-{next(steps)}",
            )
            return run_in_cluster(load, runner, job)

        return through_job

    # -- one overlay ---------------------------------------------------------------------
    def measure(self, slot: Slot, result: OverlayResult, generator: Generator) -> None:
        request = self.request
        self.progress(Progress(slot.overlay, "measuring", "warm-up"))
        runner = StepRunner(
            model=request.model,
            endpoints=slot.endpoints(request.protocol),
            payload=self.spec.sample_request,
            signature_name=self.spec.signature,
            protocol=request.protocol,
            slo=self.slo,
            timing=self.timing,
            out=request.out / "overlays" / slot.overlay,
            generator=generator,
            probe=slot.probe,
            processes=request.processes,
        )

        def measure(rate: float, phase: str) -> Step:
            step = runner(rate, phase)
            self.progress(
                Progress(
                    slot.overlay,
                    "measuring",
                    f"{phase} {rate:.4g} req/s: {step.verdict}"
                    + (f" (p99 {step.p99_ms:.1f} ms)" if step.samples else ""),
                )
            )
            return step

        try:
            capacity = find_capacity(measure, self.plan)
        finally:
            result.recovery_probes = runner.probes
        result.steps = capacity.steps
        result.capacity_rps = capacity.rps
        result.lower_bound = capacity.lower_bound
        result.at_capacity = capacity.at
        result.repeats = [s.achieved_rps for s in capacity.repeats]
        result.spread = capacity.spread
        result.stopped = capacity.stopped

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> BenchResult:
        request = self.request
        started = time.time()
        results: dict[str, OverlayResult] = {}
        rendered: dict[str, Rendered] = {}
        measured = variants(request)
        for variant in measured:
            self.progress(Progress(variant.name, "queued", "waiting"))
        for variant in measured:
            overlay = variant.name
            try:
                rendered[overlay] = _render(request, variant, self.spec)
                shape = shape_of(rendered[overlay], default_family=self.family)
                results[overlay] = OverlayResult(
                    name=overlay, shape=shape, overlay=variant.overlay, base=variant.base
                )
            except PipelineError as exc:
                results[overlay] = _failed(overlay, f"render: {exc.what}")
                results[overlay].overlay, results[overlay].base = variant.overlay, variant.base
                self.progress(Progress(overlay, "failed", exc.what, results[overlay]))
        self.host.check_namespace(stable_namespaces(request.kustomize_dir))
        together, why = self._placement(list(rendered.values()))
        log.info(
            "bench %s: %d overlay(s) on %s (%s), deployed %s: %s",
            self.run_id,
            len(rendered),
            self.host.name,
            self.host.namespace,
            "side by side" if together else "one after another",
            why,
        )
        generator = self.generator() if rendered else None
        slots: dict[str, Slot] = {}
        try:
            if together:
                for overlay, objects in rendered.items():
                    self._deploy(overlay, objects, results, slots)
            for overlay, objects in rendered.items():
                if not together:
                    self._deploy(overlay, objects, results, slots)
                slot = slots.get(overlay)
                if slot is None or generator is None:
                    continue
                try:
                    self.measure(slot, results[overlay], generator)
                    self.progress(
                        Progress(overlay, "done", results[overlay].stopped, results[overlay])
                    )
                except PipelineError as exc:
                    results[overlay].error = f"measure: {exc.what}"
                    self.progress(Progress(overlay, "failed", exc.what, results[overlay]))
                if not together:
                    self.host.remove(slots.pop(overlay))
        finally:
            self.host.remove_all()
        ordered = [results[v.name] for v in measured]
        if all(r.error for r in ordered):
            raise BenchError(
                "no overlay could be measured: "
                + "; ".join(f"{r.name}: {r.error}" for r in ordered),
                cause="the overlays do not render or deploy on this target",
                fix="fix the first error above; `python -m scripts render --overlay NAME` "
                "shows what renders",
            )
        return self._result(ordered, rendered, started, together)

    def _placement(self, rendered: list[Rendered]) -> tuple[bool, str]:
        placement = self.request.placement
        if placement == "side-by-side":
            return True, "asked for"
        if placement == "sequential":
            return False, "asked for"
        return self.host.fits_side_by_side(rendered)

    def _deploy(
        self,
        overlay: str,
        rendered: Rendered,
        results: dict[str, OverlayResult],
        slots: dict[str, Slot],
    ) -> None:
        self.progress(Progress(overlay, "deploying", rendered.overlay))
        try:
            slots[overlay] = self.host.deploy(rendered)
        except PipelineError as exc:
            results[overlay].error = f"deploy: {exc.what}"
            self.progress(Progress(overlay, "failed", exc.what, results[overlay]))

    def _result(
        self,
        overlays: list[OverlayResult],
        rendered: dict[str, Rendered],
        started: float,
        together: bool,
    ) -> BenchResult:
        from scripts.bench.cost import choose_winner, overlay_cost
        from scripts.bench.prices import load_prices
        from scripts.bench.report import config_digest, summary_line, write_report

        request = self.request
        table = load_prices(request.prices)
        for result in overlays:
            if result.error and result.capacity_rps is None:
                continue
            try:
                result.cost = overlay_cost(
                    result.shape,
                    table,
                    request.region,
                    result.capacity_rps,
                    target_rps=request.target_rps,
                    headroom=HEADROOM,
                )
            except ConfigError as exc:  # e.g. a family the table does not price (C2)
                result.cost_note = f"{exc.what}; {exc.fix}" if exc.fix else exc.what
        winner, note = choose_winner(overlays)
        shapes = {o.name: o.shape for o in overlays}  # read once, at render
        config = {
            "model": request.model,
            "image": self.image,
            "bases": dict(request.bases),
            "target": request.target.kind,
            "namespace": self.host.namespace,
            "protocol": request.protocol,
            "generator": self.generator_kind,
            "quick": request.quick,
            "slo": asdict(self.slo),
            "search": asdict(self.plan),
            "timing": asdict(self.timing),
            "placement": "side by side" if together else "one after another",
            "region": request.region,
            "overlays": {
                name: {
                    "manifests_sha256": r.sha256,
                    "shape": asdict(shapes[name]),
                }
                for name, r in rendered.items()
            },
            "node": node_shape(request.target.kind),
        }
        bench = BenchResult(
            model=request.model,
            image=self.image,
            target=request.target.kind,
            slo=self.slo,
            quick=request.quick,
            prices=table.to_dict(
                used={(o.shape.machine_family, request.region) for o in overlays if o.cost}
            ),
            overlays=overlays,
            winner=winner,
            winner_note=note,
            summary="",
            config=config,
            config_digest=config_digest(config),
            started=started,
            finished=time.time(),
            target_rps=request.target_rps,
            headroom=HEADROOM,
        )
        bench.summary = summary_line(bench)
        write_report(bench, request.out)
        return bench


HEADROOM = 0.3


def node_shape(target: str) -> dict[str, object]:
    """This machine's shape (local); on Kubernetes the overlays' node selectors say it."""
    if target != "local":
        return {}
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "machine": platform.machine()}


def _failed(overlay: str, error: str) -> OverlayResult:
    from scripts.bench.results import Shape

    shape = Shape(
        replicas=0,
        cpu=0.0,
        memory_gib=0.0,
        intra_op="",
        inter_op="",
        batching=False,
        machine_family="",
    )
    return OverlayResult(name=overlay, shape=shape, error=error)


def run(request: BenchRequest, progress: ProgressCallback, settings: Settings) -> BenchResult:
    return _Bench(request, progress, settings).run()
