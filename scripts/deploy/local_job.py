"""A rendered Job run as local processes, the way the Job controller and a kubelet would.

One process per completion index (``JOB_COMPLETION_INDEX`` set as the Job controller
sets it), started from the Job's pod template by the same code that runs a
Deployment's replicas (:mod:`scripts.deploy.local_pod`: env with the Downward API,
``$(VAR)`` args, emptyDir volumes, the CPU quota and memory limit of its resources).
Index 0 starts first; its Service is this machine's loopback: the other pods get
index 0's port as ``--master-host``/``--master-port``. Like the Job controller with
``backoffLimit: 0``, the first pod that fails fails the Job and the others are stopped;
``activeDeadlineSeconds`` stops them all. Each pod's stdout and stderr is its log.
The processes and their directories are gone afterwards, also on Ctrl-C.
"""

from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path
from typing import Any

from scripts.deploy.jobs import JobRun, PodEnd
from scripts.deploy.local_pod import PodSpec, Replica, start_replica
from scripts.log import log

INDEX_ENV = "JOB_COMPLETION_INDEX"


def _exit_code(replica: Replica) -> int | None:
    """The exit status of a finished replica process (None while it runs)."""
    import os

    from scripts.deploy import local_pod

    for child in local_pod._CHILDREN:  # the Popen objects of our replicas
        if child.pid == replica.pid:
            code = child.poll()
            if code is None:
                return None
            return 128 - code if code < 0 else code  # -9 → 137, as a kubelet reports it
    try:
        pid, status = os.waitpid(replica.pid, os.WNOHANG)
    except ChildProcessError:
        return 0 if not replica.alive() else None
    return None if pid == 0 else os.waitstatus_to_exitcode(status)


def _container(job: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = job["spec"]["template"]["spec"]["containers"]
    return containers[0]


class LocalJobRunner:
    def __init__(self, root: Path, namespace: str, *, poll_s: float = 0.5) -> None:
        self.root = root
        self.namespace = namespace
        self.poll_s = poll_s

    def _spec(
        self, job: dict[str, Any], index: int, extra_args: list[str], run_dir: Path
    ) -> PodSpec:
        body = copy.deepcopy(job)
        container = _container(body)
        container["args"] = [*container.get("args", []), *extra_args]
        return PodSpec(
            deployment=body,
            configmaps={},
            image_root=run_dir / "image",  # the container runs this checkout's code
            namespace=self.namespace,
            extra_env={INDEX_ENV: str(index)},
        )

    def run(self, objects: list[dict[str, Any]], *, timeout_s: float) -> JobRun:
        job = next(o for o in objects if o["kind"] == "Job")
        name = job["metadata"]["name"]
        spec = job["spec"]
        pods = int(spec.get("completions") or 1)
        deadline_s = min(float(spec.get("activeDeadlineSeconds") or timeout_s), timeout_s)
        job_dir = self.root / "jobs" / name
        started = time.monotonic()
        replicas: dict[int, Replica] = {}
        ends: dict[int, PodEnd] = {}
        try:
            for index in range(pods):
                pod = f"{name}-{index}"
                run_dir = job_dir / pod
                (run_dir / "image").mkdir(parents=True, exist_ok=True)
                # The Service of index 0 is loopback here: its own port for index 0 to bind.
                extra = ["--master-port=5557"]
                if index > 0:
                    extra = [
                        "--master-host=127.0.0.1",
                        f"--master-port={replicas[0].ports.get('master')}",
                    ]
                replicas[index] = start_replica(
                    self._spec(job, index, extra, run_dir), pod, run_dir
                )
            log.info("generator Job %s: %d local pod(s) running", name, pods)
            failure = self._wait(name, replicas, ends, started, deadline_s)
            logs = {
                i: (Path(r.run_dir) / "server.log").read_text(errors="replace")
                for i, r in replicas.items()
            }
            return JobRun(
                name,
                not failure,
                failure,
                [ends.get(i) or PodEnd(r.pod, i, "Running") for i, r in replicas.items()],
                logs,
                time.monotonic() - started,
            )
        finally:
            for replica in replicas.values():
                replica.stop(grace_s=5)
            shutil.rmtree(job_dir, ignore_errors=True)

    def _wait(
        self,
        name: str,
        replicas: dict[int, Replica],
        ends: dict[int, PodEnd],
        started: float,
        deadline_s: float,
    ) -> str:
        while True:
            for index, replica in replicas.items():
                if index in ends:
                    continue
                code = _exit_code(replica)
                if code is None:
                    continue
                reason = "Completed" if code == 0 else "OOMKilled" if code == 137 else "Error"
                ends[index] = PodEnd(
                    replica.pod, index, "Succeeded" if code == 0 else "Failed", reason, code
                )
                if code != 0:  # backoffLimit 0: the first failed pod fails the Job
                    return (
                        f"the generator Job failed (BackoffLimitExceeded): {ends[index].describe()}"
                    )
            if len(ends) == len(replicas):
                return ""
            if time.monotonic() - started > deadline_s:
                for index, replica in replicas.items():
                    if index not in ends:
                        replica.stop(grace_s=2)
                        ends[index] = PodEnd(replica.pod, index, "Failed", "DeadlineExceeded")
                return (
                    f"the generator Job exceeded its deadline (activeDeadlineSeconds "
                    f"{deadline_s:.0f}): {name} was stopped"
                )
            time.sleep(self.poll_s)
