"""An overlay's stable track as rendered → the ``Shape`` a bench costs and reports."""

from __future__ import annotations

from typing import Any

from scripts.bench.results import Shape
from scripts.deploy.cgroups import parse_quantity
from scripts.deploy.target import STABLE, deployment_of, stable_objects
from scripts.manifests.render import Rendered

FAMILY_LABELS = ("cloud.google.com/machine-family", "node.kubernetes.io/instance-type")


def _env(container: dict[str, Any], name: str) -> str | None:
    for item in container.get("env", []):
        if item.get("name") == name:
            if "value" in item:
                return str(item["value"])
            if "valueFrom" in item:
                return "from request"
    return None


def _thread_setting(container: dict[str, Any], flag: str, env: str) -> str:
    """What the server is told: a number, the request (Downward API), or its default."""
    for arg in container.get("args", []):
        if arg.startswith(f"--{flag}="):
            value = arg.split("=", 1)[1]
            if value == f"$({env})":
                return _env(container, env) or "default"
            return "default" if value in ("", "0") else value
    return "default"


def family_of(node_selector: dict[str, str], default: str) -> str:
    """The price table's family: GKE's machine-family label, or the instance type's prefix."""
    for label in FAMILY_LABELS:
        value = node_selector.get(label)
        if value:
            return value.split("-", 1)[0].upper()
    return default


def shape_of(rendered: Rendered, *, default_family: str) -> Shape:
    deployment = deployment_of(stable_objects(rendered), STABLE)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    resources = container.get("resources", {})
    requests = resources.get("requests") or resources.get("limits") or {}
    selector = dict(pod.get("nodeSelector", {}))
    return Shape(
        replicas=int(deployment["spec"].get("replicas", 1)),
        cpu=parse_quantity(str(requests.get("cpu", "0"))),
        memory_gib=parse_quantity(str(requests.get("memory", "0"))) / 2**30,
        intra_op=_thread_setting(
            container, "tensorflow_intra_op_parallelism", "TF_NUM_INTRAOP_THREADS"
        ),
        inter_op=_thread_setting(
            container, "tensorflow_inter_op_parallelism", "TF_NUM_INTEROP_THREADS"
        ),
        batching=any(
            a.startswith("--enable_batching") and not a.endswith("=false")
            for a in container.get("args", [])
        ),
        machine_family=family_of(selector, default_family),
        node_selector=selector,
    )
