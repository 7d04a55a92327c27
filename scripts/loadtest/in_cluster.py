"""The load test through the generator Job: plan → Job on the target → results back → analysis.

Used for ``--target k8s`` (the Job runs next to the Services, so the load never
crosses the runner's network) and ``--target local`` (the same Job as processes).
The pods' results come back through their logs (or GCS), are checked
(:mod:`scripts.loadtest.frames`), written where the local runner writes its raw
files, and analysed by the same code (:func:`scripts.loadtest.runner.analyse`): one
gate, whatever generated the load.

A generator that failed (its image does not pull, its deadline passed, it was
evicted or OOM-killed, its workers never connected, its results do not fit) raises
:class:`~scripts.errors.LoadGeneratorError` with the reason: never a partial pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from scripts.atomic import write_text_atomic
from scripts.deploy.jobs import JobRun
from scripts.errors import IntegrityError, LoadGeneratorError
from scripts.loadtest import frames
from scripts.loadtest.generator import GeneratorPlan
from scripts.loadtest.job_spec import GeneratorJob, GeneratorOptions, build_job, objects_yaml
from scripts.loadtest.results import TrackResult
from scripts.loadtest.runner import LoadTestRequest, analyse, traffic_of
from scripts.log import log

JOB_FILE = "generator-job.yaml"
# The runner's wait beyond the Job's own deadline: the Job controller acts on the
# deadline within seconds; past this, something else is wrong.
WAIT_MARGIN_S = 120.0


class JobTarget(Protocol):
    name: str

    def run_job(self, objects: list[dict[str, Any]], *, timeout_s: float) -> JobRun: ...


@dataclass(frozen=True)
class GeneratorRun:
    job: GeneratorJob
    run: JobRun


def plan_for(request: LoadTestRequest, options: GeneratorOptions) -> GeneratorPlan:
    return GeneratorPlan(
        traffic=traffic_of(request),
        payload=request.payload,
        signature_name=request.signature_name,
        workers=options.workers,
        workers_wait_s=options.workers_wait_s,
        results_uri=options.results_uri,
    )


def plan_job(
    request: LoadTestRequest,
    options: GeneratorOptions,
    *,
    image: str,
    namespace: str,
    run_id: str,
) -> GeneratorJob:
    return build_job(
        plan_for(request, options),
        options,
        image=image,
        model=request.model,
        namespace=namespace,
        run_id=run_id,
    )


def generator_load_test(
    request: LoadTestRequest,
    target: JobTarget,
    options: GeneratorOptions,
    *,
    namespace: str,
    run_id: str,
    cache_dir: Path,
    docker_config: Path | None,
    insecure: bool = False,
    sibling_of: str | None = None,
) -> tuple[str, dict[str, TrackResult]]:
    """The load test as a generator Job on ``target``: the image resolved (or built), the
    Job planned and run. Returns the generator image and the per-track results."""
    from scripts.image.generator_image import resolve_generator_image

    image = resolve_generator_image(
        options,
        target=target.name,
        cache_dir=cache_dir,
        docker_config=docker_config,
        insecure=insecure,
        sibling_of=sibling_of,
    )
    job = plan_job(request, options, image=image, namespace=namespace, run_id=run_id)
    return image, run_in_cluster(request, target, job)


def run_in_cluster(
    request: LoadTestRequest, target: JobTarget, job: GeneratorJob
) -> dict[str, TrackResult]:
    """Run the generator Job on ``target``; the per-track results, as the local runner's."""
    raw = request.out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    write_text_atomic(request.out / JOB_FILE, objects_yaml(job))
    traffic = job.plan.traffic
    log.info(
        "load test (%s, generator Job %s on %s, %d pod(s)): %d users, %.1f req/s per track, "
        "%.0f s (+%.0f s warm-up)",
        traffic.protocol,
        job.name,
        target.name,
        job.pods,
        traffic.users,
        traffic.rate,
        traffic.duration_s,
        traffic.warmup_s,
    )
    run = target.run_job(job.objects, timeout_s=job.deadline_s + WAIT_MARGIN_S)
    for index, text in run.logs.items():
        write_text_atomic(raw / f"pod-{index}.log", text)
    write_text_atomic(raw / "job.json", json.dumps(run.to_dict(), indent=2) + "\n")
    if not run.succeeded:
        raise LoadGeneratorError(
            _failure(run),
            cause=_cause(run),
            fix=f"see {raw}/pod-*.log and job.json; the gate cannot judge a run without "
            "results, so the release is rolled back",
        )
    found = _frames(job, run)
    return _analyse(request, job, found, raw)


def _generator_errors(run: JobRun) -> list[str]:
    reasons = []
    for index, text in sorted(run.logs.items()):
        for message in frames.messages(text, frames.ERROR):
            reasons.append(f"index {index}: {message.get('reason', message)}")
    return reasons


def _failure(run: JobRun) -> str:
    said = _generator_errors(run)
    return run.failure + (f"; the generator said: {'; '.join(said)}" if said else "")


def _cause(run: JobRun) -> str:
    text = _failure(run)
    for needle, cause in (
        ("cannot be pulled", "the generator image is missing, private without a pull secret, "
         "or its digest is wrong (python -m scripts generator-image builds and pushes it)"),
        ("deadline", "the run took longer than planned: pods waited for a node or an image, "
         "or the generator stalled"),
        ("OOMKilled", "the generator ran out of memory: raise --generator-memory, or spread "
         "the load over --workers"),
        ("Evicted", "the node ran short of resources and evicted the generator: give it a "
         "dedicated pool (--generator-node-selector)"),
        ("workers connected", "worker pods did not start in time (no room, image pull) or "
         "cannot reach the master's Service (a NetworkPolicy?)"),
        ("do not fit", "too many samples for the pod log: pass --results-uri gs://… "
         "or shorten the run"),
        ("does not answer", "the Services have no ready endpoints, or a NetworkPolicy blocks "
         "the generator (kustomize/components/networkpolicy admits it)"),
    ):  # fmt: skip
        if needle in text:
            return cause
    return "the generator Job did not complete"


def _frames(job: GeneratorJob, run: JobRun) -> list[frames.Frame]:
    found = []
    for index in range(job.pods):
        source = f"generator pod {job.name}-{index}"
        text = run.logs.get(index)
        if text is None:
            raise IntegrityError(
                f"{source}: its log could not be read",
                cause="the pod was removed before its log was read (ttlSecondsAfterFinished, "
                "a node that went away)",
                fix="rerun the load test",
            )
        at = frames.messages(text, frames.AT)
        if at:
            found.append(_from_store(at[-1], source))
            continue
        frame = frames.decode(text, source=source)
        if frame is None:
            raise IntegrityError(
                f"{source}: its log holds no results ({frames.BEGIN} missing)",
                cause="the log was rotated or cut before the results were written, or the "
                "generator image comes from another commit",
                fix="rerun; for long runs pass --results-uri gs://…",
            )
        found.append(frame)
    return found


def _from_store(at: dict[str, object], source: str) -> frames.Frame:
    from scripts.loadtest.results_store import download

    blob = download(str(at["uri"]), str(at["sha256"]), int(str(at["bytes"])))
    return frames.checked_frame(frames.unpack(blob), dict(at), source)


def _analyse(
    request: LoadTestRequest, job: GeneratorJob, found: list[frames.Frame], raw: Path
) -> dict[str, TrackResult]:
    for frame in found:
        for name, data in frame.files.items():
            if name.startswith(("samples-", "sent-")):
                (raw / name).write_bytes(data)
            elif name in ("locust.json", "locust.html") and frame.index == 0:
                (request.out / name).write_bytes(data)
            else:
                (raw / f"{Path(name).stem}-{frame.index}{Path(name).suffix}").write_bytes(data)
    senders = [f for f in found if f.meta.get("role") != "master"]
    broken = "; ".join(str(f.meta["broken"]) for f in found if f.meta.get("broken"))
    cpu = max((float(f.meta.get("cpu_peak") or 0.0) for f in found), default=0.0)
    starts = [float(f.meta["wall_start"]) for f in senders if f.meta.get("wall_start")]
    return analyse(
        request,
        raw,
        min(starts, default=0.0),
        cpu,
        broken,
        cpu_warning=any(f.meta.get("cpu_warning") for f in found),
    )
