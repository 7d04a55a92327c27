"""A fake Kubernetes API server on loopback, for the failures a real one will not produce
on demand (the Kubernetes tests run on the real control plane of tests/controlplane).

It implements what the deploy stage calls, with the real shapes:

* server-side apply (``PATCH`` ``application/apply-patch+yaml`` with ``fieldManager``,
  ``force`` and ``dryRun=All``), ``GET``, ``LIST`` (label and field selectors),
  ``DELETE``, ``POST`` and ``PUT`` with ``resourceVersion`` checks (Leases);
* a Deployment controller: ``generation`` / ``observedGeneration``, updated and
  available replicas that progress over time, pods and events;
* failures: images whose name contains ``imagepull`` never become ready (pods in
  ``ImagePullBackOff`` with the kubelet's "Failed to pull image" event, which kwok does
  not emit, then ``ProgressDeadlineExceeded`` after ``deadline_s``); queued 409s on
  apply; 503s (``unavailable``); 401 for a wrong token; ``Status`` bodies on every error.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

TOKEN = "fake-token"
_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?$"
)
KINDS = {
    "deployments": "Deployment",
    "services": "Service",
    "configmaps": "ConfigMap",
    "poddisruptionbudgets": "PodDisruptionBudget",
    "leases": "Lease",
    "pods": "Pod",
    "events": "Event",
    "horizontalpodautoscalers": "HorizontalPodAutoscaler",
    "scaledobjects": "ScaledObject",
    "ingresses": "Ingress",
}


def _status(code: int, reason: str, message: str) -> Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return Response(json.dumps(body), status=code, content_type="application/json")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class _Rollout:
    started: float
    generation: int


@dataclass
class FakeKubeApi:
    step_s: float = 0.05  # one replica becomes updated/available per step
    deadline_s: float = 1.0  # progressDeadlineSeconds, scaled down for tests
    objects: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    conflicts: dict[str, int] = field(default_factory=dict)  # "<plural>/<name>" → 409s to send
    reject_token: bool = False
    unavailable: int = 0  # the next N requests are answered 503
    _rollouts: dict[tuple[str, str], _Rollout] = field(default_factory=dict)
    _version: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.server = HTTPServer(host="127.0.0.1", port=0)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> FakeKubeApi:
        self.server.expect_request(re.compile(".*")).respond_with_handler(self._handle)
        self.server.start()
        return self

    def stop(self) -> None:
        if self.server.is_running():
            self.server.clear()
            self.server.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def kubeconfig(self, path: Path, token: str = TOKEN) -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "deployer", "user": {"token": token}}],
                    "contexts": [
                        {"name": "fake", "context": {"cluster": "fake", "user": "deployer"}}
                    ],
                }
            )
        )
        return path

    # -- inspection helpers for tests -------------------------------------------------
    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        for (_group_version, p, ns, n), obj in self.objects.items():
            if p == plural and ns == namespace and n == name:
                return obj
        return None

    def image(self, namespace: str, name: str) -> str | None:
        obj = self.get("deployments", namespace, name)
        if obj is None:
            return None
        return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])

    def mutations(self) -> list[str]:
        return [r for r in self.requests if not r.startswith("GET")]

    # -- the controller ---------------------------------------------------------------
    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def _reconcile(self, ns: str, obj: dict[str, Any]) -> None:
        if obj["kind"] != "Deployment":
            return
        name = obj["metadata"]["name"]
        rollout = self._rollouts.get((ns, name))
        generation = obj["metadata"]["generation"]
        if rollout is None or rollout.generation != generation:
            rollout = self._rollouts[(ns, name)] = _Rollout(time.monotonic(), generation)
        elapsed = time.monotonic() - rollout.started
        replicas = obj["spec"].get("replicas", 1)
        image = obj["spec"]["template"]["spec"]["containers"][0]["image"]
        broken = "imagepull" in image
        steps = int(elapsed / self.step_s)
        updated = min(replicas, steps)
        available = 0 if broken else max(0, min(replicas, steps - 1))
        status = obj.setdefault("status", {})
        status.update(
            {
                "observedGeneration": generation,
                "replicas": updated,
                "updatedReplicas": updated,
                "readyReplicas": available,
                "availableReplicas": available,
            }
        )
        progressing = {
            "type": "Progressing",
            "status": "True",
            "reason": "NewReplicaSetAvailable" if available == replicas else "ReplicaSetUpdated",
        }
        deadline = min(obj["spec"].get("progressDeadlineSeconds", 600), self.deadline_s)
        if broken and elapsed > deadline:
            progressing = {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": f'ReplicaSet "{name}" has timed out progressing.',
            }
        status["conditions"] = [progressing]

    def _pods(self, ns: str) -> list[dict[str, Any]]:
        pods = []
        for (_, plural, namespace, name), dep in list(self.objects.items()):
            if plural != "deployments" or namespace != ns:
                continue
            self._reconcile(ns, dep)
            image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
            labels = dep["spec"]["template"]["metadata"].get("labels", {})
            template_hash = hashlib.sha256(image.encode()).hexdigest()[:10]
            ready = dep["status"].get("readyReplicas", 0)
            for index in range(dep["status"].get("replicas", 0)):
                state: dict[str, Any] = {"running": {"startedAt": _now()}}
                last: dict[str, Any] = {}
                if "imagepull" in image:
                    state = {
                        "waiting": {
                            "reason": "ImagePullBackOff",
                            "message": f'Back-off pulling image "{image}"',
                        }
                    }
                pods.append(
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {
                            "name": f"{name}-{template_hash}-{index}",
                            "namespace": ns,
                            "labels": labels,
                        },
                        "status": {
                            "phase": "Running" if "running" in state else "Pending",
                            "conditions": [
                                {
                                    "type": "Ready",
                                    "status": "True" if index < ready else "False",
                                    "reason": None if index < ready else "ContainersNotReady",
                                    "message": "containers with unready status",
                                }
                            ],
                            "containerStatuses": [
                                {
                                    "name": "tf-serving",
                                    "image": image,
                                    "ready": index < ready,
                                    "state": state,
                                    "lastState": last,
                                    "restartCount": 0,
                                }
                            ],
                        },
                    }
                )
        return pods

    def _events(self, ns: str, involved: str | None) -> list[dict[str, Any]]:
        events = []
        for pod in self._pods(ns):
            waiting = pod["status"]["containerStatuses"][0]["state"].get("waiting")
            if waiting and (involved is None or pod["metadata"]["name"] == involved):
                image = pod["status"]["containerStatuses"][0]["image"]
                message = (
                    f'Failed to pull image "{image}": not found'
                    if waiting["reason"] == "ImagePullBackOff"
                    else "Back-off restarting failed container"
                )
                events.append(
                    {
                        "apiVersion": "v1",
                        "kind": "Event",
                        "type": "Warning",
                        "reason": "Failed" if "pull" in message else "BackOff",
                        "message": message,
                        "involvedObject": {"kind": "Pod", "name": pod["metadata"]["name"]},
                    }
                )
        return events

    # -- HTTP --------------------------------------------------------------------------
    def _handle(self, request: Request) -> Response:
        with self._lock:
            self.requests.append(f"{request.method} {request.path}")
            if self.reject_token or request.headers.get("Authorization") != f"Bearer {TOKEN}":
                return _status(401, "Unauthorized", "Unauthorized")
            if self.unavailable > 0:
                self.unavailable -= 1
                return _status(
                    503,
                    "ServiceUnavailable",
                    "the server is currently unable to handle the request",
                )
            match = _PATH.match(request.path)
            if not match:
                return _status(404, "NotFound", f"the server could not find {request.path}")
            group_version = match["core"] or f"{match['group']}/{match['version']}"
            ns, plural, name = match["ns"], match["plural"], match["name"]
            key = (group_version, plural, ns, name or "")
            handler = getattr(self, f"_{request.method.lower()}", None)
            if handler is None:
                return _status(405, "MethodNotAllowed", request.method)
            response: Response = handler(request, key)
            return response

    def _json(self, obj: Any, status: int = 200) -> Response:
        return Response(json.dumps(obj), status=status, content_type="application/json")

    def _get(self, request: Request, key: tuple[str, str, str, str]) -> Response:
        group_version, plural, ns, name = key
        if plural in ("pods", "events") and not name:
            items = (
                self._pods(ns)
                if plural == "pods"
                else self._events(
                    ns, _field(request.args.get("fieldSelector"), "involvedObject.name")
                )
            )
            items = [i for i in items if _matches(i, request.args.get("labelSelector"))]
            return self._json({"kind": "List", "items": items})
        if not name:
            items = [
                copy.deepcopy(o)
                for (gv, p, n, _), o in self.objects.items()
                if gv == group_version
                and p == plural
                and n == ns
                and _matches(o, request.args.get("labelSelector"))
            ]
            return self._json(
                {
                    "kind": f"{KINDS.get(plural, plural)}List",
                    "items": items,
                    "metadata": {"resourceVersion": str(self._version)},
                }
            )
        obj = self.objects.get(key)
        if obj is None:
            return _status(404, "NotFound", f'{plural} "{name}" not found')
        self._reconcile(ns, obj)
        return self._json(obj)

    def _patch(self, request: Request, key: tuple[str, str, str, str]) -> Response:
        if request.content_type != "application/apply-patch+yaml":
            return _status(415, "UnsupportedMediaType", str(request.content_type))
        if not request.args.get("fieldManager"):
            return _status(422, "Invalid", "fieldManager is required for apply patch")
        _group_version, plural, ns, name = key
        pending = self.conflicts.get(f"{plural}/{name}", 0)
        if pending:
            self.conflicts[f"{plural}/{name}"] = pending - 1
            return _status(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}"')
        applied = yaml.safe_load(request.get_data(as_text=True))
        existing = self.objects.get(key)
        merged = copy.deepcopy(applied)
        meta = merged.setdefault("metadata", {})
        meta["namespace"] = ns
        if existing is None:
            meta.update({"uid": f"uid-{name}", "creationTimestamp": _now(), "generation": 1})
        else:
            old_meta = existing["metadata"]
            meta.update(
                {
                    "uid": old_meta["uid"],
                    "creationTimestamp": old_meta["creationTimestamp"],
                    "generation": old_meta["generation"],
                }
            )
            if existing.get("spec") != merged.get("spec"):
                meta["generation"] += 1
            merged["status"] = existing.get("status", {})
        if request.args.get("dryRun") == "All":
            meta["resourceVersion"] = existing["metadata"]["resourceVersion"] if existing else "0"
            return self._json(merged)
        meta["resourceVersion"] = self._next_version()
        meta["managedFields"] = [{"manager": request.args["fieldManager"], "operation": "Apply"}]
        self.objects[key] = merged
        self._reconcile(ns, merged)
        return self._json(merged, 201 if existing is None else 200)

    def _delete(self, request: Request, key: tuple[str, str, str, str]) -> Response:
        if self.objects.pop(key, None) is None:
            return _status(404, "NotFound", f'{key[1]} "{key[3]}" not found')
        self._rollouts.pop((key[2], key[3]), None)
        return self._json({"kind": "Status", "apiVersion": "v1", "status": "Success"})

    def _post(self, request: Request, key: tuple[str, str, str, str]) -> Response:
        obj = json.loads(request.get_data(as_text=True))
        full = (key[0], key[1], key[2], obj["metadata"]["name"])
        if full in self.objects:
            return _status(409, "AlreadyExists", f'{key[1]} "{full[3]}" already exists')
        obj["metadata"].update(
            {"resourceVersion": self._next_version(), "uid": "u", "creationTimestamp": _now()}
        )
        self.objects[full] = obj
        return self._json(obj, 201)

    def _put(self, request: Request, key: tuple[str, str, str, str]) -> Response:
        obj = json.loads(request.get_data(as_text=True))
        existing = self.objects.get(key)
        if existing is None:
            return _status(404, "NotFound", f'{key[1]} "{key[3]}" not found')
        if obj["metadata"].get("resourceVersion") != existing["metadata"]["resourceVersion"]:
            return _status(
                409,
                "Conflict",
                "the object has been modified; please apply your "
                "changes to the latest version and try again",
            )
        obj["metadata"]["resourceVersion"] = self._next_version()
        self.objects[key] = obj
        return self._json(obj)


def _field(selector: str | None, name: str) -> str | None:
    for part in (selector or "").split(","):
        key, _, value = part.partition("=")
        if key == name:
            return value
    return None


def _matches(obj: dict[str, Any], selector: str | None) -> bool:
    labels = obj.get("metadata", {}).get("labels", {}) or {}
    for part in (selector or "").split(","):
        if not part:
            continue
        key, _, value = part.partition("=")
        if labels.get(key) != value:
            return False
    return True
