"""Overlays deployed for a benchmark, each under its own name, and always removed.

A bench never touches the model's stable or canary: on Kubernetes it runs in its own
namespace (refused when any overlay deploys its stable track there, or a stable or
canary Deployment lives there), and each overlay's stable track is renamed
``bench-<overlay>-<run>`` with its selectors narrowed by two labels
(``tf-release-pipeline.dev/bench-run``, ``…/bench-overlay``), so several overlays,
and benches of several pull requests, sit side by side without selecting each
other's pods. Autoscalers and PDBs are dropped: the shape under test is fixed.

On the local target each overlay gets its own state directory (a namespace of its
own, ``bench-<run>-<overlay>``), so its processes are the local target's usual
replicas, under the same CFS quotas.

``remove_all`` deletes by the run's label (Kubernetes) or every slot's state
(local): the orchestrator calls it in ``finally``, so a cancelled bench leaves
nothing behind.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from scripts.bench.throttling import CadvisorProbe, CgroupProbe, ThrottlingProbe
from scripts.deploy.cgroups import parse_quantity
from scripts.deploy.jobs import JobRun
from scripts.deploy.kube_api import KubeApi
from scripts.deploy.target import (
    FIELD_MANAGER,
    STABLE,
    DeployOptions,
    deployment_of,
    stable_objects,
)
from scripts.errors import ConfigError, PipelineError
from scripts.log import log
from scripts.manifests.render import Rendered

RUN_LABEL = "tf-release-pipeline.dev/bench-run"
OVERLAY_LABEL = "tf-release-pipeline.dev/bench-overlay"
BENCH_TRACK = "bench"
KEPT_KINDS = ("Deployment", "Service", "ConfigMap")
GENERATOR_CPU = 1.0  # what the generator Job requests (kustomize/loadtest)


@dataclass
class Slot:
    overlay: str
    name: str
    rest: list[str]
    grpc: list[str]
    probe: ThrottlingProbe
    replicas: int
    extra: dict[str, Any] = field(default_factory=dict)

    def endpoints(self, protocol: str) -> list[str]:
        return self.grpc if protocol == "grpc" else self.rest


class JobRunner(Protocol):
    name: str

    def run_job(self, objects: list[dict[str, Any]], *, timeout_s: float) -> JobRun: ...


class SlotHost(Protocol):
    name: str  # the target: k8s | local
    namespace: str

    def check_namespace(self, stable_namespaces: set[str]) -> None: ...

    def fits_side_by_side(self, rendered: list[Rendered]) -> tuple[bool, str]: ...

    def deploy(self, rendered: Rendered) -> Slot: ...

    def remove(self, slot: Slot) -> None: ...

    def remove_all(self) -> None: ...

    def job_runner(self) -> JobRunner: ...


def slot_name(overlay: str, run_id: str) -> str:
    """A DNS-1035 name (Services need one) of at most 63 characters."""
    suffix = f"-{run_id[:6]}"
    return f"bench-{overlay}"[: 63 - len(suffix)].rstrip("-") + suffix


def requested(rendered: Rendered) -> tuple[float, float, int]:
    """The stable track's (CPU, memory bytes) per replica, and its replicas."""
    deployment = deployment_of(stable_objects(rendered), STABLE)
    requests = deployment["spec"]["template"]["spec"]["containers"][0].get("resources", {})
    requests = requests.get("requests", {}) or requests.get("limits", {})
    cpu = parse_quantity(str(requests.get("cpu", "0")))
    memory = parse_quantity(str(requests.get("memory", "0")))
    return cpu, memory, int(deployment["spec"].get("replicas", 1))


def bench_objects(rendered: Rendered, run_id: str) -> list[dict[str, Any]]:
    """The overlay's stable track, renamed and relabelled for the bench (see module doc)."""
    name = slot_name(rendered.overlay, run_id)
    labels = {RUN_LABEL: run_id, OVERLAY_LABEL: rendered.overlay}
    kept = [copy.deepcopy(o) for o in stable_objects(rendered) if o["kind"] in KEPT_KINDS]
    renamed = {
        o["metadata"]["name"]: f"{o['metadata']['name']}-{run_id[:6]}"
        for o in kept
        if o["kind"] == "ConfigMap"
    }
    for obj in kept:
        meta = obj["metadata"]
        meta.pop("namespace", None)
        meta["labels"] = {**meta.get("labels", {}), **labels, "track": BENCH_TRACK}
        if obj["kind"] == "ConfigMap":
            meta["name"] = renamed[meta["name"]]
        elif obj["kind"] == "Service":
            meta["name"] = name
            obj["spec"]["selector"] = {**obj["spec"].get("selector", {}), **labels}
            obj["spec"]["selector"]["track"] = BENCH_TRACK
        else:
            meta["name"] = name
            spec = obj["spec"]
            spec["selector"]["matchLabels"] = {
                **spec["selector"].get("matchLabels", {}),
                **labels,
                "track": BENCH_TRACK,
            }
            template = spec["template"]
            template["metadata"]["labels"] = {
                **template["metadata"].get("labels", {}),
                **labels,
                "track": BENCH_TRACK,
            }
            for volume in template["spec"].get("volumes", []):
                config = volume.get("configMap")
                if config and config.get("name") in renamed:
                    config["name"] = renamed[config["name"]]
    return kept


# -- Kubernetes ---------------------------------------------------------------------------
class KubernetesSlots:
    name = "k8s"

    def __init__(
        self, api: KubeApi, namespace: str, run_id: str, *, timeout_s: float, poll_s: float
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.run_id = run_id
        self.timeout_s = timeout_s
        self.poll_s = poll_s

    def check_namespace(self, stable_namespaces: set[str]) -> None:
        if self.namespace in stable_namespaces:
            raise ConfigError(
                f"the bench namespace {self.namespace!r} is where an overlay deploys its "
                "stable track",
                cause="a benchmark beside production would steal its nodes and its Services' "
                "selectors could pick the bench pods",
                fix="pass --namespace NAME of a namespace kept for benchmarks (the workflow "
                "reads the repository variable BENCH_NAMESPACE)",
            )
        for track in ("stable", "canary"):
            found = self.api.list("apps/v1", "Deployment", self.namespace, labels=f"track={track}")
            if found:
                raise ConfigError(
                    f"namespace {self.namespace!r} holds a {track} Deployment "
                    f"({found[0]['metadata']['name']})",
                    cause="a benchmark never shares a namespace with a deployment that serves",
                    fix="pass --namespace NAME of a namespace kept for benchmarks",
                )

    def fits_side_by_side(self, rendered: list[Rendered]) -> tuple[bool, str]:
        try:
            nodes = self.api.list("v1", "Node", "")
        except PipelineError as exc:  # nodes are cluster-scoped: the bench ClusterRole
            return False, f"cannot list nodes ({exc.what}): one after another, to be safe"
        allocatable = sum(
            parse_quantity(str(n.get("status", {}).get("allocatable", {}).get("cpu", "0")))
            for n in nodes
        )
        needed = sum(cpu * replicas for cpu, _m, replicas in map(requested, rendered))
        needed += GENERATOR_CPU
        verdict = needed <= allocatable
        return verdict, (
            f"{needed:g} CPU requested (generator included) of {allocatable:g} allocatable "
            f"on {len(nodes)} node(s)"
        )

    def deploy(self, rendered: Rendered) -> Slot:
        from scripts.deploy.rollout import wait_for_rollout

        objects = bench_objects(rendered, self.run_id)
        objects.sort(key=lambda o: (o["kind"] != "ConfigMap", o["kind"] == "Deployment"))
        for obj in objects:
            self.api.apply(obj, self.namespace, FIELD_MANAGER)
        name = slot_name(rendered.overlay, self.run_id)
        wait_for_rollout(self.api, self.namespace, name, self.timeout_s, poll=self.poll_s)
        host = f"{name}.{self.namespace}.svc"
        _cpu, _memory, replicas = requested(rendered)
        return Slot(
            overlay=rendered.overlay,
            name=name,
            rest=[f"http://{host}:8501"],
            grpc=[f"{host}:8500"],
            probe=CadvisorProbe(
                self.api,
                self.namespace,
                f"{RUN_LABEL}={self.run_id},{OVERLAY_LABEL}={rendered.overlay}",
            ),
            replicas=replicas,
        )

    def _delete(self, selector: str) -> list[str]:
        deleted = []
        for api_version, kind in (
            ("apps/v1", "Deployment"),
            ("v1", "Service"),
            ("v1", "ConfigMap"),
            ("batch/v1", "Job"),
        ):
            for obj in self.api.list(api_version, kind, self.namespace, labels=selector):
                if self.api.delete(
                    api_version, kind, self.namespace, obj["metadata"]["name"],
                    propagation="Background",
                ):  # fmt: skip
                    deleted.append(f"{kind}/{obj['metadata']['name']}")
        return deleted

    def remove(self, slot: Slot) -> None:
        deleted = self._delete(f"{RUN_LABEL}={self.run_id},{OVERLAY_LABEL}={slot.overlay}")
        log.info("bench %s removed: %s", slot.overlay, ", ".join(deleted) or "nothing left")

    def remove_all(self) -> None:
        deleted = self._delete(f"{RUN_LABEL}={self.run_id}")
        if deleted:
            log.info("bench run %s cleaned up: %s", self.run_id, ", ".join(deleted))

    def job_runner(self) -> JobRunner:
        from scripts.deploy.kubernetes_job import KubernetesJobRunner

        api, namespace, poll = self.api, self.namespace, self.poll_s

        class _Runner:
            name = "k8s"

            def run_job(self, objects: list[dict[str, Any]], *, timeout_s: float) -> JobRun:
                return KubernetesJobRunner(api, namespace, poll_s=poll).run(
                    objects, timeout_s=timeout_s
                )

        return _Runner()


# -- this machine ---------------------------------------------------------------------------
class LocalSlots:
    name = "local"

    def __init__(
        self,
        state_root: Path,
        run_id: str,
        *,
        cache_dir: Path,
        docker_config: Path | None,
        timeout_s: float,
        fault_injection: str = "",
        insecure_registry: bool = False,
    ) -> None:
        self.state_root = state_root
        self.run_id = run_id
        self.namespace = f"bench-{run_id[:6]}"
        self.cache_dir = cache_dir
        self.docker_config = docker_config
        self.timeout_s = timeout_s
        self.fault_injection = fault_injection
        self.insecure = insecure_registry
        self.slots: dict[str, Any] = {}

    def check_namespace(self, stable_namespaces: set[str]) -> None:
        """Every slot has a state directory of its own: nothing to share."""

    def fits_side_by_side(self, rendered: list[Rendered]) -> tuple[bool, str]:
        needed = sum(memory * replicas for _c, memory, replicas in map(requested, rendered))
        available = _mem_available()
        verdict = needed <= 0.8 * available
        return verdict, (
            f"{needed / 2**30:.1f} GiB requested of {available / 2**30:.1f} GiB available"
        )

    def _target(self, rendered: Rendered) -> Any:
        from scripts.deploy.local_target import LocalTarget
        from scripts.image.auth import CredentialStore

        return LocalTarget(
            self.state_root,
            f"{self.namespace}-{rendered.overlay}",
            model=rendered.model,
            cache_dir=self.cache_dir,
            credentials=CredentialStore(self.docker_config),
            fault_injection=self.fault_injection,
            fault_tracks=(STABLE,),
            insecure_registry=self.insecure,
        )

    def deploy(self, rendered: Rendered) -> Slot:
        target = self._target(rendered)
        self.slots[rendered.overlay] = target
        result = target.deploy(
            rendered, canary=False, options=DeployOptions(timeout_s=self.timeout_s)
        )
        _cpu, _memory, replicas = requested(rendered)
        return Slot(
            overlay=rendered.overlay,
            name=target.namespace,
            rest=result.endpoints.get(STABLE, []),
            grpc=result.endpoints.get(f"{STABLE}_grpc", []),
            probe=CgroupProbe(target.replica_cgroups(STABLE)),
            replicas=replicas,
        )

    def remove(self, slot: Slot) -> None:
        target = self.slots.pop(slot.overlay, None)
        if target is not None:
            target.teardown(DeployOptions())
            shutil.rmtree(target.dir.parent, ignore_errors=True)  # the slot's namespace

    def remove_all(self) -> None:
        for overlay in list(self.slots):
            target = self.slots.pop(overlay)
            try:
                target.teardown(DeployOptions())
            finally:
                shutil.rmtree(target.dir.parent, ignore_errors=True)  # the slot's namespace

    def job_runner(self) -> JobRunner:
        from scripts.deploy.local_job import LocalJobRunner

        directory = self.state_root.resolve() / self.namespace
        namespace = self.namespace

        class _Runner:
            name = "local"

            def run_job(self, objects: list[dict[str, Any]], *, timeout_s: float) -> JobRun:
                return LocalJobRunner(directory, namespace).run(objects, timeout_s=timeout_s)

        return _Runner()


def _mem_available() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 0.0
