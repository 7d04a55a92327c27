"""The kubelet's part for the load generator's pods on the test control plane.

kwok plays every kubelet, but it runs no containers. For the generator Job's pods the
tests need the real program to run, so this plays the rest of a kubelet for them:

* it watches the namespace for the generator's pods (``app.kubernetes.io/component:
  loadgen``) that kwok has started (phase Running);
* runs each pod's container as a local process: the pod's own ``TFRP_PLAN`` and its
  ``JOB_COMPLETION_INDEX`` label, the container's command (``python -m
  scripts.loadtest.generator``) with this checkout's interpreter;
* stands in for cluster DNS and Services: the Services' names in the plan
  (``tf-serving-canary.NS.svc:8501``) are rewritten to the local servers the test
  gives, and so are pods' own addresses (``http://POD_IP:8501``, a track of several
  pods), each pod of a ``track`` label to one of that track's servers in turn
  (``track_hosts``); workers reach the master's port on 127.0.0.1;
* writes the process's output as the container's log, in the CRI format, and points
  kwok's ``Logs`` at it, so the pipeline reads it through ``pods/log`` as on a cluster;
* then ends the pod through kwok's stages: annotation ``complete=true`` (exit 0) or
  ``fail=true`` with the exit code (tests/controlplane/stages.yaml).

A test decides per completion index what happens instead (:class:`PodScript`): hold the
pod (it never ends), fail it with an exit code and reason (``OOMKilled``), evict it, run
a hook first (delete the canary), or alter the log (cut it, flip a byte).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.controlplane.cluster import ControlPlane

REPO_ROOT = Path(__file__).resolve().parents[2]
ANNOTATION = "test.tf-release-pipeline.dev/"
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"


@dataclass
class PodScript:
    """What happens to the pod of one completion index (default: it runs)."""

    action: str = "run"  # run | hold | fail | evict
    exit_code: int = 1
    reason: str = "Error"
    message: str = ""
    before: Callable[[], None] | None = None  # e.g. delete the canary
    log_filter: Callable[[str], str] | None = None  # e.g. truncate the output


@dataclass
class GeneratorKubelet:
    control_plane: ControlPlane
    namespace: str
    hosts: dict[str, str]  # "SERVICE.NS.svc:PORT" → "127.0.0.1:PORT"
    workdir: Path
    scripts: dict[int, PodScript] = field(default_factory=dict)
    # track label → local servers ("127.0.0.1:PORT"), given to the track's pods in name order
    track_hosts: dict[str, list[str]] = field(default_factory=dict)
    handled: dict[str, int] = field(default_factory=dict)  # pod → exit code (or -1 held)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _master_ports: dict[str, int] = field(default_factory=dict)  # job → master port
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> GeneratorKubelet:
        watcher = threading.Thread(target=self._watch, daemon=True)
        watcher.start()
        self._threads.append(watcher)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    # -- the API -------------------------------------------------------------------------
    def _pods(self) -> list[dict[str, Any]]:
        path = (
            f"/api/v1/namespaces/{self.namespace}/pods"
            "?labelSelector=app.kubernetes.io%2Fcomponent%3Dloadgen"
        )
        items: list[dict[str, Any]] = (self.control_plane.get(path) or {}).get("items", [])
        return items

    def _pod_hosts(self) -> dict[str, str]:
        """Serving pods' IPs → a local server of their track (``track_hosts``, in turn)."""
        if not self.track_hosts:
            return {}
        items = (self.control_plane.get(f"/api/v1/namespaces/{self.namespace}/pods") or {}).get(
            "items", []
        )
        found: dict[str, str] = {}
        for track, local in self.track_hosts.items():
            pods = sorted(
                (
                    p
                    for p in items
                    if p.get("status", {}).get("podIP")
                    and p["metadata"].get("labels", {}).get("track") == track
                ),
                key=lambda p: p["metadata"]["name"],
            )
            for i, pod in enumerate(pods):
                found[pod["status"]["podIP"]] = local[i % len(local)]
        return found

    def _annotate(self, pod: str, annotations: dict[str, str]) -> None:
        self.control_plane.merge_patch(
            f"/api/v1/namespaces/{self.namespace}/pods/{pod}",
            {"metadata": {"annotations": annotations}},
        )

    # -- the loop ------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                pods = self._pods()
            except Exception as exc:
                self.errors.append(f"list pods: {exc}")
                time.sleep(0.5)
                continue
            for pod in pods:
                name = pod["metadata"]["name"]
                if name in self.handled or pod.get("status", {}).get("phase") != "Running":
                    continue
                if pod["metadata"].get("deletionTimestamp"):
                    continue
                self.handled[name] = -1
                thread = threading.Thread(target=self._handle, args=(pod,), daemon=True)
                thread.start()
                self._threads.append(thread)
            time.sleep(0.2)

    def _handle(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        index = int(pod["metadata"].get("labels", {}).get(INDEX_LABEL, "0"))
        script = self.scripts.get(index, PodScript())
        try:
            if script.before is not None:
                script.before()
            if script.action == "hold":
                return
            if script.action == "evict":
                self._annotate(name, {ANNOTATION + "evict": "true"})
                return
            if script.action == "fail":
                self._annotate(name, self._failure(script.exit_code, script.reason, script.message))
                return
            code, output = self._run(pod, index)
            if script.log_filter is not None:
                output = script.log_filter(output)
            self._serve_log(name, output)
            self.handled[name] = code
            self._annotate(
                name,
                {ANNOTATION + "complete": "true"}
                if code == 0
                else self._failure(code, "Error", output.strip().splitlines()[-1][:200]),
            )
        except Exception as exc:
            self.errors.append(f"{name}: {exc!r}")

    @staticmethod
    def _failure(code: int, reason: str, message: str) -> dict[str, str]:
        return {
            ANNOTATION + "fail": "true",
            ANNOTATION + "fail-after-ms": "0",
            ANNOTATION + "exit-code": str(code),
            ANNOTATION + "reason": reason,
            ANNOTATION + "message": message,
        }

    # -- the container ---------------------------------------------------------------------
    def _master_port(self, job: str) -> int:
        with self._lock:
            if job not in self._master_ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    self._master_ports[job] = s.getsockname()[1]
            return self._master_ports[job]

    def _run(self, pod: dict[str, Any], index: int) -> tuple[int, str]:
        container = pod["spec"]["containers"][0]
        env = {e["name"]: e.get("value", "") for e in container.get("env", []) if "value" in e}
        plan = env["TFRP_PLAN"]
        for service, local in self.hosts.items():  # cluster DNS and the Services
            plan = plan.replace(service, local)
        for ip, local in self._pod_hosts().items():  # the pod network
            plan = plan.replace(f"//{ip}:8501", f"//{local}")
        job = pod["metadata"]["labels"]["batch.kubernetes.io/job-name"]
        workdir = self.workdir / pod["metadata"]["name"]
        workdir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            *container["command"][1:],  # python → this interpreter
            f"--workdir={workdir}",
            "--master-host=127.0.0.1",
            f"--master-port={self._master_port(job)}",
        ]
        proc = subprocess.run(
            command,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "PYTHONPATH": str(REPO_ROOT),
                "HOME": str(workdir),
                "TFRP_PLAN": plan,
                "JOB_COMPLETION_INDEX": str(index),
                "TFRP_CPU_LIMIT": "1000",
            },
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        return proc.returncode, proc.stdout + proc.stderr

    def _serve_log(self, pod: str, output: str) -> None:
        """The output as the container's CRI log file, served by kwok through pods/log."""
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
        path = self.workdir / f"{pod}.log"
        path.write_text("".join(f"{now} stdout F {line}\n" for line in output.splitlines()))
        self.control_plane.apply(
            {
                "apiVersion": "kwok.x-k8s.io/v1alpha1",
                "kind": "Logs",
                "metadata": {"name": pod, "namespace": self.namespace},
                "spec": {"logs": [{"containers": ["locust"], "logsFile": str(path)}]},
            }
        )
        # kwok serves the file once it has seen the Logs object: wait for that, so the
        # pod never ends before its log can be read (as a kubelet's log outlives its run).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = self.control_plane.text(
                f"/api/v1/namespaces/{self.namespace}/pods/{pod}/log?container=locust"
            )
            if text:
                return
            time.sleep(0.2)
        raise TimeoutError(f"kwok did not serve the log of {pod}")
