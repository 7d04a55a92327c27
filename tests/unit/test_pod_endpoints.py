"""A track's pods as load-test endpoints (scripts/deploy/pod_endpoints.py): only what the
Service would route to, ports resolved as the Service resolves them."""

from __future__ import annotations

from typing import Any

from scripts.deploy.pod_endpoints import pod_endpoints, selector_of, target_port

SERVICE: dict[str, Any] = {
    "spec": {
        "selector": {"track": "canary", "app.kubernetes.io/instance": "digits"},
        "ports": [
            {"name": "grpc", "port": 8500, "targetPort": "grpc"},
            {"name": "http", "port": 8501, "targetPort": "http"},
        ],
    }
}


def pod(name: str, ip: str | None, *, ready: bool = True, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if deleting:
        metadata["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    status: dict[str, Any] = {
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]
    }
    if ip:
        status["podIP"] = ip
    return {
        "metadata": metadata,
        "spec": {
            "containers": [
                {"name": "tf-serving", "ports": [
                    {"name": "grpc", "containerPort": 9500},
                    {"name": "http", "containerPort": 9501},
                ]}
            ]
        },
        "status": status,
    }  # fmt: skip


def test_only_ready_addressed_pods_not_being_deleted_in_name_order() -> None:
    pods = [
        pod("b", "10.0.0.2"),
        pod("a", "10.0.0.1"),
        pod("unready", "10.0.0.3", ready=False),
        pod("going", "10.0.0.4", deleting=True),
        pod("pending", None),
    ]
    rest, grpc = pod_endpoints(SERVICE, pods)
    assert rest == ["http://10.0.0.1:9501", "http://10.0.0.2:9501"]  # named targetPorts
    assert grpc == ["10.0.0.1:9500", "10.0.0.2:9500"]


def test_numeric_and_missing_target_ports_and_ipv6() -> None:
    service = {
        "spec": {
            "ports": [
                {"name": "http", "port": 8501},
                {"name": "grpc", "port": 8500, "targetPort": 7000},
            ]
        }
    }
    assert target_port(service, pod("a", "10.0.0.1"), "http") == 8501  # no targetPort: the port
    assert target_port(service, pod("a", "10.0.0.1"), "grpc") == 7000
    assert target_port(service, pod("a", "10.0.0.1"), "metrics") is None
    undeclared = {"spec": {"ports": [{"name": "http", "port": 8501, "targetPort": "web"}]}}
    assert target_port(undeclared, pod("a", "10.0.0.1"), "http") is None
    assert pod_endpoints(undeclared, [pod("a", "10.0.0.1")]) == ([], [])
    rest, grpc = pod_endpoints(SERVICE, [pod("a", "fd00::5")])
    assert rest == ["http://[fd00::5]:9501"] and grpc == ["[fd00::5]:9500"]


def test_the_selector_as_a_label_selector() -> None:
    assert selector_of(SERVICE) == "app.kubernetes.io/instance=digits,track=canary"
    assert selector_of({"spec": {}}) is None
