"""The Role the docs ship (kustomize/rbac), bound on the test control plane."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.controlplane.cluster import ControlPlane

REPO_ROOT = Path(__file__).resolve().parents[2]


def shipped_rbac(namespace: str, user: str) -> list[dict[str, Any]]:
    """kustomize/rbac, as a user applies it: rendered by kubectl, the subject named."""
    kubectl = str(Path(sys.executable).parent / "kubectl")
    text = subprocess.run(
        [kubectl, "kustomize", str(REPO_ROOT / "kustomize" / "rbac")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    objects = [o for o in yaml.safe_load_all(text) if o]
    for obj in objects:
        obj["metadata"]["namespace"] = namespace
        if obj["kind"] == "RoleBinding":
            obj["subjects"][0]["name"] = user
    return objects


def bind(
    control_plane: ControlPlane, namespace: str, user: str, *, drop: tuple[str, str] | None = None
) -> Path:
    """An identity bound to the shipped Role in ``namespace`` (optionally without one verb
    on one resource), and its kubeconfig."""
    for obj in shipped_rbac(namespace, user):
        if obj["kind"] == "Role" and drop is not None:
            verb, resource = drop
            for rule in obj["rules"]:
                if resource in rule["resources"] and verb in rule["verbs"]:
                    rule["verbs"] = [v for v in rule["verbs"] if v != verb]
        control_plane.apply(obj)
    return control_plane.identity(user)
