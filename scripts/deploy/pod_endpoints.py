"""A track's pods as load-test endpoints: each ready pod's own address behind its Service.

Through a Service the load generator cannot tell which pod answered, and its
keep-alive connections may pile onto one pod. With each pod's address the load is
spread evenly (the locustfiles go round the endpoints) and every sample names its pod,
so the gate weighs pods as units (:mod:`scripts.gate.blocks`).

Only what the Service itself would route to: pods its selector matches, Ready, with an
IP, not being deleted; ports resolved as the Service resolves ``targetPort`` (a number,
or a container port's name). Pure functions over the API's objects: the target reads
them (pods ``list``, services ``get``: verbs the shipped Role already grants).
"""

from __future__ import annotations

import ipaddress
from typing import Any

REST_PORT_NAME, GRPC_PORT_NAME = "http", "grpc"


def selector_of(service: dict[str, Any]) -> str | None:
    """The Service's selector as a label selector, or None (a Service without one)."""
    selector = service.get("spec", {}).get("selector") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or None


def serving(pod: dict[str, Any]) -> bool:
    """Would the Service send this pod requests: Ready, addressed, not being deleted."""
    status = pod.get("status", {})
    if pod.get("metadata", {}).get("deletionTimestamp") or not status.get("podIP"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def target_port(service: dict[str, Any], pod: dict[str, Any], name: str) -> int | None:
    """The pod's port behind the Service's port ``name`` (None: no such port, or a
    named targetPort the pod does not declare)."""
    port = next(
        (p for p in service.get("spec", {}).get("ports", []) if p.get("name") == name), None
    )
    if port is None:
        return None
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int):
        return target
    for container in pod.get("spec", {}).get("containers", []):
        for declared in container.get("ports") or []:
            if declared.get("name") == target:
                return int(declared["containerPort"])
    return None


def _host(ip: str) -> str:
    return f"[{ip}]" if ipaddress.ip_address(ip).version == 6 else ip


def pod_endpoints(
    service: dict[str, Any], pods: list[dict[str, Any]]
) -> tuple[list[str], list[str]]:
    """REST base URLs and gRPC HOST:PORTs of the serving pods, by pod name; a pod whose
    ports cannot be resolved is left out."""
    rest: list[str] = []
    grpc: list[str] = []
    for pod in sorted(filter(serving, pods), key=lambda p: p["metadata"]["name"]):
        http_port = target_port(service, pod, REST_PORT_NAME)
        grpc_port = target_port(service, pod, GRPC_PORT_NAME)
        if http_port is None or grpc_port is None:
            continue
        host = _host(pod["status"]["podIP"])
        rest.append(f"http://{host}:{http_port}")
        grpc.append(f"{host}:{grpc_port}")
    return rest, grpc
