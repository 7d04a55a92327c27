"""A container that died with SIGILL: which CPU features its base needs that its node lacks.

A base compiled for a CPU family (``-march=cascadelake``) dies at once with SIGILL
("illegal instruction", exit code 132 = 128 + 4) on a CPU without those instructions.
Render annotates the pods with their base, its CPU features and the families it is
built for (scripts/image/bases.py); the node's family comes from its family label, and
what that family's CPUs guarantee from ``kustomize/bases.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scripts.deploy.kube_api import KubeApi
from scripts.errors import AuthError, PipelineError
from scripts.image.bases import (
    BASE_ANNOTATION,
    CPU_FEATURES_ANNOTATION,
    FAMILIES_ANNOTATION,
    GKE_FAMILY_LABEL,
    NODE_FAMILY_LABEL_ANNOTATION,
    BaseCatalog,
    families_guaranteeing,
)

SIGILL_EXIT_CODE = 132  # 128 + SIGILL (4)
_SIGILL = 4


def is_sigill(terminated: Mapping[str, Any]) -> bool:
    """Does a ``ContainerStateTerminated`` say the process died of SIGILL?"""
    if str(terminated.get("exitCode")) == str(SIGILL_EXIT_CODE):
        return True
    if str(terminated.get("signal")) == str(_SIGILL):
        return True
    text = f"{terminated.get('reason') or ''} {terminated.get('message') or ''}".lower()
    return "illegal instruction" in text or "sigill" in text


def sigill_of(container_status: Mapping[str, Any]) -> dict[str, Any] | None:
    """The container's SIGILL termination (current state first, then the last one)."""
    for where in ("state", "lastState"):
        terminated = (container_status.get(where) or {}).get("terminated")
        if terminated and is_sigill(terminated):
            return dict(terminated)
    return None


@dataclass(frozen=True)
class NodeFamily:
    node: str | None
    family: str | None
    why_unknown: str = ""  # when family is None
    forbidden: bool = False  # the deployer may not read Nodes


def read_node_family(api: KubeApi, node: str | None, label: str) -> NodeFamily:
    """The node's machine family from its label; unknown (and why) when it cannot be read."""
    if not node:
        return NodeFamily(None, None, "the pod names no node")
    try:
        obj = api.request("GET", f"/api/v1/nodes/{node}", allow_404=True)
    except AuthError:
        return NodeFamily(
            node,
            None,
            "the deployer may not read Nodes (the Role of kustomize/rbac grants none; "
            "kustomize/rbac/bench's ClusterRole grants nodes get)",
            forbidden=True,
        )
    except PipelineError as exc:
        return NodeFamily(node, None, f"node {node} could not be read: {exc.what}")
    if obj is None:
        return NodeFamily(node, None, f"node {node} no longer exists")
    family = (obj.get("metadata", {}).get("labels") or {}).get(label)
    if not family:
        return NodeFamily(node, None, f"node {node} has no {label} label")
    return NodeFamily(node, str(family))


def family_label(annotations: Mapping[str, str], catalog: BaseCatalog | None) -> str:
    """The node label naming a node's family, as render saw it."""
    if annotations.get(NODE_FAMILY_LABEL_ANNOTATION):
        return annotations[NODE_FAMILY_LABEL_ANNOTATION]
    return catalog.node_family_label if catalog is not None else GKE_FAMILY_LABEL


@dataclass(frozen=True)
class CpuCrash:
    """One container's SIGILL, as a finding, a likely cause and a fix."""

    finding: str
    cause: str
    fix: str


def _split(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _bases_for(catalog: BaseCatalog, family: str | None, current: str | None) -> list[str]:
    """Usable cluster bases the family's CPUs can run (any family's, when unknown)."""
    have = (
        [set(catalog.families[family])]
        if family in catalog.families
        else [set(f) for f in catalog.families.values()]
    )
    return [
        name
        for name, base in catalog.bases.items()
        if name != current
        and base.image is not None
        and (base.build is None or base.digest is not None)
        and all(set(base.cpu_features) <= h for h in have)
    ]


def describe(
    pod: Mapping[str, Any],
    container: str,
    terminated: Mapping[str, Any],
    node: NodeFamily,
    catalog: BaseCatalog | None,
) -> CpuCrash:
    """The finding, cause and fix for a container of ``pod`` that died with SIGILL."""
    annotations: Mapping[str, str] = pod.get("metadata", {}).get("annotations") or {}
    pod_name = pod.get("metadata", {}).get("name", "?")
    name = annotations.get(BASE_ANNOTATION)
    base = f"base {name}" if name else "the image's base"
    its = "its " if name else ""
    needs = _split(annotations.get(CPU_FEATURES_ANNOTATION))
    code = terminated.get("exitCode")
    how = f"exit {code}" if code not in (None, 0) else f"signal {terminated.get('signal', 4)}"
    where = node.node or "?"
    family = node.family
    about = f"machine family {family}" if family else f"machine family unknown: {node.why_unknown}"
    finding = (
        f"pod {pod_name}: container {container} died with SIGILL (illegal instruction, {how}) "
        f"on node {where} ({about})"
    )
    if needs is None:
        outside = "an image reference outside kustomize/bases.yaml"
        finding += f": {its}{base}'s CPU needs are unknown ({outside})"
        return CpuCrash(
            finding,
            cause=f"the image's binary uses CPU instructions node {where}'s CPU lacks; "
            f"{base}'s CPU needs are unknown, so render could not pin it to nodes that "
            "have them",
            fix=f"add {base} to kustomize/bases.yaml with its cpu_features (and the families "
            "it is built for), so that render pins it to nodes whose CPUs have them; or "
            "build this model on a catalog base (e.g. stock: --base stock)",
        )
    needed = ", ".join(needs) or "no CPU features (per the catalog)"
    finding += f": {its}{base} needs {needed}"
    guaranteed = catalog.families.get(family) if catalog is not None and family else None
    lacking: list[str] | None = None  # None: not known
    if catalog is None:
        finding += "; kustomize/bases.yaml could not be read"
    elif family and guaranteed is None:
        finding += f"; kustomize/bases.yaml does not say what {family} CPUs guarantee"
    elif family and guaranteed is not None:
        lacking = [f for f in needs if f not in guaranteed]
        finding += f"; {family} CPUs guarantee {', '.join(guaranteed)} — lacking: " + (
            ", ".join(lacking) or f"none (the catalog's cpu_features for {name} may be incomplete)"
        )
    others = _bases_for(catalog, family, name) if catalog is not None else []
    target = family or "the node's family"
    alternative = (
        f"e.g. {others[0]}: --base {others[0]}, or model.yaml base_image: {others[0]}"
        if others
        else "--base NAME, or model.yaml base_image"
    )
    if lacking == []:  # the catalog says this node can run the base: the catalog is wrong
        return CpuCrash(
            finding,
            cause=f"the image's binary uses CPU instructions beyond the ones kustomize/bases.yaml "
            f"records for {base} ({needed}), which {family} CPUs all have",
            fix=f"record in {base}'s cpu_features every feature its -march (or a custom op "
            "of the model) uses, so that render pins it to nodes that have them; or build "
            f"this model on another base for {family} ({alternative})",
        )
    declared = list(_split(annotations.get(FAMILIES_ANNOTATION)) or ())
    built_for = declared or (families_guaranteeing(catalog, needs) if catalog else [])
    on = " or ".join(built_for) or "a family whose CPUs have them"
    how = (
        "render pins an overlay to them unless its own node selection overrides it: remove "
        f"the overlay's nodeSelector/affinity for {target}"
        if declared
        else f"select them in the overlay's nodeSelector or node affinity, or give {base} "
        "its families: in kustomize/bases.yaml so that render pins it"
    )
    fix = f"serve it on nodes of {on} ({how}), "
    fix += f"or build this model on a base for {target} ({alternative})"
    if node.forbidden:
        fix += "; to name the node's family, let the deployer read Nodes (kustomize/rbac/bench)"
    what = f"is built for {on}" if declared else f"needs {needed}"
    return CpuCrash(
        finding,
        cause=f"the image's binary uses CPU instructions node {where}'s CPU lacks (SIGILL): "
        f"{base} {what}" + (f", the node is {family}" if family else ""),
        fix=fix,
    )


class CpuDiagnosis:
    """SIGILL findings for one rollout diagnosis: the catalog and each node read once."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self.crashes: list[CpuCrash] = []
        self._catalog: BaseCatalog | None = None
        self._catalog_read = False
        self._nodes: dict[tuple[str | None, str], NodeFamily] = {}

    @property
    def catalog(self) -> BaseCatalog | None:
        if not self._catalog_read:
            from scripts.image.bases import load_catalog

            self._catalog_read = True
            try:
                self._catalog = load_catalog()
            except PipelineError:  # an invalid catalog: diagnose without it
                self._catalog = None
        return self._catalog

    def check(self, pod: dict[str, Any], container_status: dict[str, Any]) -> str | None:
        """The SIGILL finding for this container (None: it did not die of SIGILL)."""
        terminated = sigill_of(container_status)
        if terminated is None:
            return None
        annotations = pod.get("metadata", {}).get("annotations") or {}
        node_name = pod.get("spec", {}).get("nodeName")
        key = (node_name, family_label(annotations, self.catalog))
        if key not in self._nodes:
            self._nodes[key] = read_node_family(self.api, *key)
        crash = describe(
            pod, container_status.get("name", "?"), terminated, self._nodes[key], self.catalog
        )
        self.crashes.append(crash)
        return crash.finding
