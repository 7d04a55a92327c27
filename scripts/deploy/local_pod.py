"""Turning one rendered Deployment replica into a local process, the way a kubelet would.

* env: literal values (with ``$(VAR)`` expansion), Downward API ``resourceFieldRef``
  computed from the container's resources (rounded up, as Kubernetes does),
  ``fieldRef`` for the pod's name, namespace and IP, ``configMapKeyRef``;
* args: ``$(VAR)`` expanded from that env (``$$`` escapes);
* ports: each containerPort remapped to a free loopback port, in the args too;
* volumes: ConfigMaps written to files, emptyDirs created; the image's ``/models`` and
  ``/etc/tf-serving``; container paths in args and serving config files mapped to
  the host directories;
* limits: a CFS quota and memory limit cgroup when permitted;
* readiness: the readiness (and startup) probe's ``httpGet`` polled until 2xx.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scripts.config import REPO_ROOT
from scripts.deploy import cgroups
from scripts.errors import DeployError, PipelineTimeoutError
from scripts.log import log

_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
TF_SERVING_BINARY = "tensorflow_model_server"
_cgroup_warning_shown: list[bool] = []
# Replicas outlive the command that starts them (like pods outlive kubectl); keeping the
# Popen objects referenced stops Python from warning that they are "still running".
_CHILDREN: list[subprocess.Popen[bytes]] = []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: unknown references stay as written, ``$$`` → ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR.sub(replace, text)


def resource_value(resources: dict[str, Any], resource: str, divisor: str | None) -> str:
    """The Downward API value of ``requests.cpu``/``limits.memory``/…: ceil(value / divisor)."""
    section, _, name = resource.partition(".")
    raw = resources.get(section, {}).get(name)
    if raw is None and section == "requests":
        raw = resources.get("limits", {}).get(name)  # requests default to limits
    if raw is None:  # a kubelet reports node allocatable for unset limits
        raw = (
            str(os.cpu_count() or 1)
            if name == "cpu"
            else str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        )
    quantity = cgroups.parse_quantity(str(raw))
    unit = cgroups.parse_quantity(divisor or "1")
    return str(max(1, math.ceil(quantity / unit - 1e-9)))


@dataclass
class Replica:
    pod: str
    pid: int
    run_dir: str
    ports: dict[str, int]  # container port name (or number) → host port
    rest_port: int | None
    grpc_port: int | None
    cgroup: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Replica:
        return cls(**data)

    def alive(self) -> bool:
        """Running (not a zombie) and still ours: its working directory is our run dir."""
        try:
            os.kill(self.pid, 0)
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
            cwd = Path(f"/proc/{self.pid}/cwd").readlink()
        except (ProcessLookupError, PermissionError, OSError):
            return False
        return state != "Z" and cwd == Path(self.run_dir).resolve()

    def stop(self, grace_s: float = 10.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self.alive():
            _reap(self.pid)
            time.sleep(0.05)
        if self.alive():
            log.warning("replica %s did not stop in %.0f s; killing it", self.pod, grace_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
        _reap(self.pid, wait_s=5)
        # An exited task can linger in the cgroup until it is reaped: retry briefly.
        deadline = time.monotonic() + 3
        pending = [Path(p) for p in self.cgroup]
        while pending and time.monotonic() < deadline:
            for path in list(pending):
                try:
                    path.rmdir()
                    pending.remove(path)
                except FileNotFoundError:
                    pending.remove(path)
                except OSError:
                    time.sleep(0.05)
        for path in pending:
            log.warning("cgroup %s could not be removed", path)


def _reap(pid: int, wait_s: float = 0.0) -> None:
    """Collect an exited child (through its Popen object when this process started it)."""
    for child in list(_CHILDREN):
        if child.pid == pid:
            try:
                child.wait(timeout=wait_s) if wait_s else child.poll()
            except subprocess.TimeoutExpired:
                return
            if child.returncode is not None:
                _CHILDREN.remove(child)
            return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@dataclass
class PodSpec:
    """What a replica needs, resolved from the rendered objects."""

    deployment: dict[str, Any]
    configmaps: dict[str, dict[str, str]]
    image_root: Path  # holds models/ and etc/tf-serving/ from the image
    namespace: str
    extra_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)  # what the control plane adds
    image_env: dict[str, str] = field(default_factory=dict)  # the image config's Env

    @property
    def container(self) -> dict[str, Any]:
        container: dict[str, Any] = self.deployment["spec"]["template"]["spec"]["containers"][0]
        return container


def _env(spec: PodSpec, pod_name: str) -> dict[str, str]:
    container = spec.container
    resources = container.get("resources", {})
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        name = entry["name"]
        if "value" in entry:
            env[name] = expand(str(entry["value"]), env)
            continue
        source = entry.get("valueFrom", {})
        if "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            env[name] = resource_value(resources, ref["resource"], ref.get("divisor"))
        elif "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            env[name] = {
                "metadata.name": pod_name,
                "metadata.namespace": spec.namespace,
                "status.podIP": "127.0.0.1",
                "spec.nodeName": socket.gethostname(),
            }.get(path, "")
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[name] = spec.configmaps.get(ref["name"], {}).get(ref["key"], "")
        else:
            raise DeployError(
                f"env {name}: {sorted(source)} is not supported by the local target",
                fix="use values, resourceFieldRef, fieldRef or configMapKeyRef",
            )
    return env


def _path_map(spec: PodSpec, run_dir: Path) -> list[tuple[str, Path]]:
    pod = spec.deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mapping: list[tuple[str, Path]] = []
    for mount in spec.container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        host = run_dir / "volumes" / mount["name"]
        host.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            for key, value in spec.configmaps.get(volume["configMap"]["name"], {}).items():
                (host / key).write_text(value)
        mapping.append((mount["mountPath"].rstrip("/"), host))
    mounted = {container for container, _ in mapping}
    # The image's own directories, unless a volume is mounted over them (as in a pod).
    for container, host in (
        ("/models", spec.image_root / "models"),
        ("/etc/tf-serving", spec.image_root / "etc" / "tf-serving"),
    ):
        if container not in mounted:
            mapping.append((container, host))
    mapping.sort(key=lambda item: -len(item[0]))
    # Serving config files name container paths (models.config base_path): map them too.
    for _, host in mapping:
        if host.is_dir() and str(host).startswith(str(run_dir)):
            for file in host.glob("*.config"):
                file.write_text(map_paths(file.read_text(), mapping))
    return mapping


def map_paths(text: str, mapping: list[tuple[str, Path]]) -> str:
    """Replace container path prefixes with host paths in one pass (never remapping output)."""
    if not mapping:
        return text
    hosts = dict(mapping)
    pattern = "|".join(re.escape(c) for c, _ in sorted(mapping, key=lambda m: -len(m[0])))
    return re.sub(rf"(?<![\w/])({pattern})(?=/|\"|$|\s)", lambda m: str(hosts[m.group(1)]), text)


def _program(container: dict[str, Any]) -> tuple[list[str], bool]:
    """The real TF Serving binary when installed, else our compatible server; ``python``
    is this interpreter (the image's Python and its packages are this checkout's venv)."""
    command = container.get("command") or [TF_SERVING_BINARY]
    if command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]], False
    binary = shutil.which(command[0])
    if command[0] == TF_SERVING_BINARY and binary is None:
        return [sys.executable, "-m", "scripts", "serve"], True
    return [binary or command[0], *command[1:]], False


def start_replica(spec: PodSpec, pod_name: str, run_dir: Path) -> Replica:
    """Start one replica; it is not ready yet (see wait_ready)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    container = spec.container
    env = {**_env(spec, pod_name), **spec.extra_env}
    ports: dict[str, int] = {}
    by_number: dict[int, int] = {}
    for port in container.get("ports", []):
        host = free_port()
        by_number[int(port["containerPort"])] = host
        ports[str(port.get("name") or port["containerPort"])] = host
        ports[str(port["containerPort"])] = host
    mapping = _path_map(spec, run_dir)
    args = []
    for arg in container.get("args", []):
        value = map_paths(expand(str(arg), env), mapping)
        flag, sep, rest = value.partition("=")
        if sep and "port" in flag and rest.isdigit() and int(rest) in by_number:
            value = f"{flag}={by_number[int(rest)]}"
        args.append(value)
    program, ours = _program(container)
    command = [*program, *args]
    if ours:
        command.append("--bind_address=127.0.0.1")
        command += spec.extra_args
    resources = container.get("resources", {})
    limits = resources.get("limits", {})
    cpu_limit = cgroups.parse_quantity(limits["cpu"]) if "cpu" in limits else None
    memory_limit = int(cgroups.parse_quantity(limits["memory"])) if "memory" in limits else None
    group = None
    try:
        group = cgroups.create(f"tfrp-{pod_name}", cpu_limit, memory_limit)
    except OSError as exc:
        if not _cgroup_warning_shown:
            log.warning("cannot set CPU/memory limits (%s); replicas run without them", exc)
            _cgroup_warning_shown.append(True)
    process_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(run_dir),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(REPO_ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **spec.image_env,  # under the container's env, as in a pod
        **env,
    }
    log_file = (run_dir / "server.log").open("ab")
    try:
        process = subprocess.Popen(
            command,
            cwd=run_dir,
            env=process_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Joins the cgroup between fork and exec, so the server never runs unlimited.
            preexec_fn=cgroups.preexec_joiner(group),  # noqa: PLW1509
        )
    finally:
        log_file.close()
    _CHILDREN.append(process)
    return Replica(
        pod=pod_name,
        pid=process.pid,
        run_dir=str(run_dir),
        ports=ports,
        rest_port=by_number.get(8501) or ports.get("http"),
        grpc_port=by_number.get(8500) or ports.get("grpc"),
        cgroup=[str(p) for p in group.paths] if group else [],
        command=command,
    )


def wait_ready(spec: PodSpec, replica: Replica, timeout_s: float) -> None:
    """Honour the readiness (after the startup) probe: poll its httpGet until 2xx."""
    container = spec.container
    probe = container.get("readinessProbe") or container.get("startupProbe") or {}
    http = probe.get("httpGet")
    startup = container.get("startupProbe") or {}
    budget = min(
        timeout_s,
        startup.get("periodSeconds", 10) * startup.get("failureThreshold", 30)
        if startup
        else timeout_s,
    )
    deadline = time.monotonic() + budget
    if http is None:  # no HTTP probe: running is ready
        return
    port = replica.ports.get(str(http["port"]))
    url = f"http://127.0.0.1:{port}{http.get('path', '/')}"
    while time.monotonic() < deadline:
        if not replica.alive():
            tail = _tail(Path(replica.run_dir) / "server.log")
            raise DeployError(
                f"replica {replica.pod} exited before becoming ready: {tail}",
                cause="the server failed to start (a model that does not load?)",
                fix=f"see {replica.run_dir}/server.log",
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if 200 <= response.status < 400:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise PipelineTimeoutError(
        f"replica {replica.pod} not ready after {budget:.0f} s ({url})",
        cause="the model loads slowly or the probe path is wrong",
        fix=f"see {replica.run_dir}/server.log; raise --timeout",
    )


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"
