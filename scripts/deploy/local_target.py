"""The local deploy target: the rendered manifests, run as processes on this machine.

Same operations and invariants as the Kubernetes target (scripts/deploy/target.py):
a canary runs beside the stable replicas and never touches them; promote starts the
candidate's stable replicas, waits until they are ready, then stops the old ones
and the canary; rollback stops the canary or restores the previous stable image.

State lives in ``STATE_DIR/NAMESPACE/MODEL/state.json`` (written atomically): one
directory, lock and state per model, so several models share a namespace without
touching each other. A file lock serialises a model's operations; replicas whose
processes died (a crashed run, a reboot) are detected as stale and cleaned up.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.atomic import write_text_atomic
from scripts.deploy.host_cpu import check_host_runs
from scripts.deploy.image_store import image_env, materialise
from scripts.deploy.jobs import JobRun
from scripts.deploy.local_pod import PodSpec, Replica, start_replica, wait_ready
from scripts.deploy.target import (
    BASELINE,
    CANARY,
    STABLE,
    DeployOptions,
    DeployResult,
    StatusResult,
    TrackStatus,
    as_baseline,
    baseline_name,
    canary_objects,
    deployment_of,
    image_of,
    stable_objects,
)
from scripts.errors import DeployError, LockError
from scripts.image.auth import CredentialStore
from scripts.log import log
from scripts.manifests.render import Rendered


@dataclass
class LocalTrack:
    image: str
    deployment: dict[str, Any]
    configmaps: dict[str, dict[str, str]]
    replicas: list[Replica] = field(default_factory=list)
    previous_image: str | None = None
    previous_deployment: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "deployment": self.deployment,
            "configmaps": self.configmaps,
            "replicas": [r.to_json() for r in self.replicas],
            "previous_image": self.previous_image,
            "previous_deployment": self.previous_deployment,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LocalTrack:
        return cls(
            image=data["image"],
            deployment=data["deployment"],
            configmaps=data["configmaps"],
            replicas=[Replica.from_json(r) for r in data["replicas"]],
            previous_image=data.get("previous_image"),
            previous_deployment=data.get("previous_deployment"),
        )

    def endpoints(self) -> list[str]:
        return [f"http://127.0.0.1:{r.rest_port}" for r in self.replicas if r.rest_port]

    def grpc_endpoints(self) -> list[str]:
        return [f"127.0.0.1:{r.grpc_port}" for r in self.replicas if r.grpc_port]


class LocalTarget:
    name = "local"

    def __init__(
        self,
        state_root: Path,
        namespace: str,
        *,
        model: str,
        cache_dir: Path,
        credentials: CredentialStore,
        fault_injection: str = "",
        fault_tracks: tuple[str, ...] = (CANARY,),
        insecure_registry: bool = False,
    ) -> None:
        # Replicas run in their own directories below this one.
        self.dir = model_state_dir(state_root, namespace, model)
        self.namespace = namespace
        self.model = model
        self.cache_dir = cache_dir
        self.credentials = credentials
        self.fault_injection = fault_injection
        self.fault_tracks = fault_tracks  # rehearsals: the canary; bench rehearsals: stable
        self.insecure = insecure_registry

    # -- state -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, LocalTrack]]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / ".lock").open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise LockError(
                    f"another local deploy is running in {self.dir}", fix="wait for it to finish"
                ) from exc
            tracks = self._load()
            try:
                yield tracks
            finally:
                self._save(tracks)

    def _load(self) -> dict[str, LocalTrack]:
        path = self.dir / STATE_FILE
        if not path.is_file():
            return {}
        data = json.loads(path.read_text())
        tracks = {name: LocalTrack.from_json(t) for name, t in data.get("tracks", {}).items()}
        for name, track in list(tracks.items()):
            dead = [r for r in track.replicas if not r.alive()]
            if dead:
                log.warning(
                    "stale state: %d %s replica(s) are gone (a crashed run?); cleaning up",
                    len(dead),
                    name,
                )
                for replica in dead:
                    replica.stop(grace_s=0)
                track.replicas = [r for r in track.replicas if r not in dead]
            if not track.replicas:
                del tracks[name]
        return tracks

    def _save(self, tracks: dict[str, LocalTrack]) -> None:
        if not tracks:  # nothing runs: the model has no state here (served_models)
            (self.dir / STATE_FILE).unlink(missing_ok=True)
            return
        write_text_atomic(
            self.dir / STATE_FILE,
            json.dumps({"tracks": {name: t.to_json() for name, t in tracks.items()}}, indent=2)
            + "\n",
        )

    # -- replicas --------------------------------------------------------------------
    def _start(
        self,
        deployment: dict[str, Any],
        configmaps: dict[str, dict[str, str]],
        options: DeployOptions,
        extra_args: list[str],
    ) -> list[Replica]:
        return self._start_together([(deployment, configmaps, extra_args)], options)[0]

    def _start_together(
        self,
        groups: list[tuple[dict[str, Any], dict[str, dict[str, str]], list[str]]],
        options: DeployOptions,
    ) -> list[list[Replica]]:
        """Start every group's replicas, then wait until all are ready: groups started
        together have the same age (a canary and its fresh baseline)."""
        started: list[tuple[PodSpec, list[Replica]]] = []
        # groups are (canary, baseline): the baseline first unless canary_first
        order = groups if options.canary_first else list(reversed(groups))
        try:
            for deployment, configmaps, extra_args in order:
                image = image_of(deployment) or ""
                check_host_runs(deployment)
                root = materialise(
                    image,
                    deployment["metadata"].get("annotations", {}),
                    self.cache_dir,
                    credentials=self.credentials,
                    insecure=self.insecure,
                )
                spec = PodSpec(
                    deployment=deployment,
                    configmaps=configmaps,
                    image_root=root,
                    namespace=self.namespace,
                    extra_args=extra_args,
                    image_env=image_env(root),
                )
                name = deployment["metadata"]["name"]
                replicas: list[Replica] = []
                started.append((spec, replicas))
                for index in range(int(deployment["spec"].get("replicas", 1))):
                    pod = f"{name}-{uuid.uuid4().hex[:6]}-{index}"
                    replicas.append(start_replica(spec, pod, self.dir / "pods" / pod))
            for spec, replicas in started:
                for replica in replicas:
                    wait_ready(spec, replica, options.timeout_s)
        except BaseException:  # includes Ctrl-C: nothing half-started is left running
            for _spec, replicas in started:
                for replica in replicas:
                    replica.stop(grace_s=2)
            raise
        if not options.canary_first:
            started.reverse()  # the callers' order: the groups as given
        for spec, replicas in started:
            log.info(
                "%s: %d replica(s) ready at %s",
                spec.deployment["metadata"]["name"],
                len(replicas),
                ", ".join(f"127.0.0.1:{r.rest_port}" for r in replicas),
            )
        return [replicas for _spec, replicas in started]

    @staticmethod
    def _configmaps(rendered: Rendered) -> dict[str, dict[str, str]]:
        return {
            o["metadata"]["name"]: dict(o.get("data", {}))
            for o in rendered.objects
            if o["kind"] == "ConfigMap"
        }

    def _result(
        self, action: str, tracks: dict[str, LocalTrack], options: DeployOptions, **kw: Any
    ) -> DeployResult:
        result = DeployResult(
            action=action, target=self.name, namespace=self.namespace, dry_run=options.dry_run, **kw
        )
        for name, track in tracks.items():
            result.endpoints[name] = track.endpoints()
            result.endpoints[f"{name}_grpc"] = track.grpc_endpoints()
        return result

    # -- operations --------------------------------------------------------------------
    def deploy(self, rendered: Rendered, *, canary: bool, options: DeployOptions) -> DeployResult:
        track_name = CANARY if canary else STABLE
        objects = canary_objects(rendered) if canary else stable_objects(rendered)
        deployment = deployment_of(objects, track_name)
        image = image_of(deployment) or ""
        with self._locked() as tracks:
            current = tracks.get(track_name)
            if options.dry_run:
                return self._result(
                    f"{'canary-' if canary else ''}deployed",
                    tracks,
                    options,
                    image=image,
                    applied=[f"Deployment/{deployment['metadata']['name']}"],
                    previous_image=current.image if current else None,
                )
            extra = (
                ["--unsafe_fault_injection=" + self.fault_injection]
                if track_name in self.fault_tracks and self.fault_injection
                else []
            )
            stable = tracks.get(STABLE)
            groups = [(deployment, self._configmaps(rendered), extra)]
            baseline: dict[str, Any] | None = None
            if canary and options.fresh_baseline and stable is not None:
                baseline = as_baseline(
                    stable.deployment,
                    baseline_name(deployment["metadata"]["name"]),
                    replicas=int(deployment["spec"].get("replicas", 1)),
                )
                groups.append((baseline, stable.configmaps, []))
            if canary:
                self._stop_track(tracks, BASELINE)  # an older canary's baseline
            started = self._start_together(groups, options)
            replicas = started[0]
            new = LocalTrack(
                image=image,
                deployment=deployment,
                configmaps=self._configmaps(rendered),
                replicas=replicas,
            )
            if current is not None:  # rolling replacement: new ready first, then old stopped
                new.previous_image = (
                    current.image if current.image != image else current.previous_image
                )
                new.previous_deployment = current.deployment
                for replica in current.replicas:
                    replica.stop()
            tracks[track_name] = new
            if baseline is not None and stable is not None:
                tracks[BASELINE] = LocalTrack(
                    image=stable.image,
                    deployment=baseline,
                    configmaps=stable.configmaps,
                    replicas=started[1],
                )
            return self._result(
                f"{'canary-' if canary else ''}deployed",
                tracks,
                options,
                image=image,
                previous_image=new.previous_image,
                rollout=f"{len(replicas)} replica(s) ready"
                + (f", fresh baseline of {stable.image}" if baseline and stable else ""),
            )

    @staticmethod
    def _stop_track(tracks: dict[str, LocalTrack], name: str) -> list[str]:
        """Stop a track's replicas and forget it; the Deployment names removed."""
        track = tracks.pop(name, None)
        if track is None:
            return []
        for replica in track.replicas:
            replica.stop()
        return [f"Deployment/{track.deployment['metadata']['name']}"]

    def promote(self, rendered: Rendered, options: DeployOptions) -> DeployResult:
        deployment = deployment_of(stable_objects(rendered), STABLE)
        candidate = image_of(deployment) or ""
        with self._locked() as tracks:
            canary = tracks.get(CANARY)
            if canary is None:
                raise DeployError(
                    "no canary is running to promote",
                    fix="deploy --canary the candidate and gate it first",
                )
            if canary.image != candidate:
                raise DeployError(
                    f"the canary runs {canary.image}, not {candidate}",
                    cause="promoting an image that was not the one tested",
                    fix="promote the image the canary runs",
                )
            if options.dry_run:
                return self._result("promoted", tracks, options, image=candidate)
            current = tracks.get(STABLE)
            replicas = self._start(deployment, self._configmaps(rendered), options, [])
            promoted = LocalTrack(
                image=candidate,
                deployment=deployment,
                configmaps=self._configmaps(rendered),
                replicas=replicas,
                previous_image=current.image if current else None,
                previous_deployment=current.deployment if current else None,
            )
            if current is not None:
                for replica in current.replicas:
                    replica.stop()
            for replica in canary.replicas:
                replica.stop()
            del tracks[CANARY]
            removed = self._stop_track(tracks, BASELINE)
            tracks[STABLE] = promoted
            return self._result(
                "promoted",
                tracks,
                options,
                image=candidate,
                previous_image=promoted.previous_image,
                rollout=f"{len(replicas)} replica(s) ready",
                deleted=[f"Deployment/{canary.deployment['metadata']['name']}", *removed],
            )

    def rollback(self, options: DeployOptions) -> DeployResult:
        with self._locked() as tracks:
            canary = tracks.get(CANARY)
            if canary is not None:
                deleted = [f"Deployment/{canary.deployment['metadata']['name']}"]
                baseline = tracks.get(BASELINE)
                if baseline is not None:
                    deleted.append(f"Deployment/{baseline.deployment['metadata']['name']}")
                if not options.dry_run:
                    for replica in canary.replicas:
                        replica.stop()
                    del tracks[CANARY]
                    self._stop_track(tracks, BASELINE)
                return self._result("canary-removed", tracks, options, deleted=deleted)
            stable = tracks.get(STABLE)
            if stable is None or not stable.previous_image or not stable.previous_deployment:
                return self._result(
                    "none",
                    tracks,
                    options,
                    rollout="nothing to roll back: no canary and no previous stable image",
                )
            if options.dry_run:
                return self._result("restored", tracks, options, image=stable.previous_image)
            replicas = self._start(stable.previous_deployment, stable.configmaps, options, [])
            for replica in stable.replicas:
                replica.stop()
            tracks[STABLE] = LocalTrack(
                image=stable.previous_image,
                deployment=stable.previous_deployment,
                configmaps=stable.configmaps,
                replicas=replicas,
            )
            return self._result(
                "restored",
                tracks,
                options,
                image=stable.previous_image,
                previous_image=stable.image,
                rollout=f"{len(replicas)} replica(s) ready",
            )

    def status(self) -> StatusResult:
        tracks = self._load() if (self.dir / STATE_FILE).is_file() else {}

        def describe(track: LocalTrack | None) -> TrackStatus:
            if track is None:
                return TrackStatus(exists=False)
            ready = sum(1 for r in track.replicas if r.alive())
            return TrackStatus(
                exists=True,
                image=track.image,
                replicas=len(track.replicas),
                ready=ready,
                rollout=f"{ready} of {len(track.replicas)} running",
                previous_image=track.previous_image,
                endpoints=track.endpoints(),
                grpc_endpoints=track.grpc_endpoints(),
            )

        return StatusResult(
            target=self.name,
            namespace=self.namespace,
            model=self.model,
            stable=describe(tracks.get(STABLE)),
            canary=describe(tracks.get(CANARY)),
            baseline=describe(tracks.get(BASELINE)),
        )

    def replica_cgroups(self, track: str) -> list[Path]:
        """The track's replicas' cgroup directories holding ``cpu.stat`` (CFS counters)."""
        with self._locked() as tracks:
            current = tracks.get(track)
            paths = [Path(p) for r in (current.replicas if current else []) for p in r.cgroup]
        return [p for p in paths if (p / "cpu.stat").is_file()]

    def run_job(self, objects: list[dict[str, Any]], *, timeout_s: float) -> JobRun:
        from scripts.deploy.local_job import LocalJobRunner

        return LocalJobRunner(self.dir, self.namespace).run(objects, timeout_s=timeout_s)

    def teardown(self, options: DeployOptions) -> DeployResult:
        with self._locked() as tracks:
            deleted = []
            for name, track in list(tracks.items()):
                if not options.dry_run:
                    for replica in track.replicas:
                        replica.stop()
                    del tracks[name]
                deleted.append(f"Deployment/{track.deployment['metadata']['name']}")
            result = self._result("torn-down", tracks, options, deleted=deleted)
        if not options.dry_run:
            shutil.rmtree(self.dir / "pods", ignore_errors=True)
        return result


STATE_FILE = "state.json"


def model_state_dir(state_root: Path, namespace: str, model: str) -> Path:
    return state_root.resolve() / namespace / model


def served_models(state_root: Path, namespace: str) -> list[str]:
    """The models with local state in ``namespace`` (running or stale)."""
    root = state_root.resolve() / namespace
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob(f"*/{STATE_FILE}"))
