"""Never schedule an image where its CPU cannot run it.

A base compiled for a CPU family (``-march=cascadelake``) dies with SIGILL on a CPU
without the instructions it uses. After kustomize has rendered the overlay, every
Deployment whose pods run the model image is checked against the base's needs
(``kustomize/bases.yaml``):

* the families its node selection allows: ``nodeSelector`` and the required
  ``nodeAffinity`` terms on the family label (``cloud.google.com/machine-family`` on
  GKE) — terms are ORed, expressions within a term ANDed;
* the features that Node Feature Discovery labels in that selection guarantee
  (``feature.node.kubernetes.io/cpu-cpuid.AVX512VNNI: "true"``).

Outcomes: the selection guarantees every feature → nothing to do; it selects no family
and the base is built for some → render *pins* it (a ``nodeSelector`` for one family,
a required node affinity for several, added to the overlay's own terms); it selects a
family whose CPUs lack a feature (or one the catalog does not know) → PlacementError.
A base that is not family-specific (stock: AVX) is never pinned, but an explicit family
that cannot run it is still refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scripts.errors import PlacementError
from scripts.image.bases import (
    GKE_FAMILY_LABEL,
    NODE_FAMILY_LABEL_ANNOTATION,
    BaseCatalog,
    ChosenBase,
    nfd_label,
)

SERVING_SELECTOR = "app.kubernetes.io/name=tf-serving"
TRACK_LABEL = "track"


@dataclass(frozen=True)
class NodeSelection:
    """What a pod spec's required node selection says about CPUs."""

    families: frozenset[str] | None  # None: any family may be chosen
    features: frozenset[str]  # guaranteed by NFD labels


def _term_families(term: dict[str, Any], label: str, known: set[str]) -> set[str] | None:
    allowed: set[str] | None = None
    for expression in term.get("matchExpressions") or []:
        if expression.get("key") != label:
            continue
        values = set(expression.get("values") or [])
        operator = expression.get("operator")
        here = values if operator == "In" else known - values if operator == "NotIn" else None
        if here is not None:
            allowed = here if allowed is None else allowed & here
    return allowed


def _term_features(term: dict[str, Any], features: tuple[str, ...]) -> set[str]:
    keys = {
        e.get("key")
        for e in term.get("matchExpressions") or []
        if e.get("operator") == "Exists"
        or (e.get("operator") == "In" and set(e.get("values") or []) == {"true"})
    }
    return {f for f in features if nfd_label(f) in keys}


def _required_terms(pod: dict[str, Any]) -> list[dict[str, Any]]:
    required = (
        pod.get("affinity", {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
    )
    return list(required.get("nodeSelectorTerms") or [])


def node_selection(
    pod: dict[str, Any], label: str, known: set[str], features: tuple[str, ...]
) -> NodeSelection:
    """The families and NFD-guaranteed ``features`` of a pod spec's node selection."""
    selector = pod.get("nodeSelector") or {}
    families: set[str] | None = {selector[label]} if label in selector else None
    guaranteed = {f for f in features if selector.get(nfd_label(f)) == "true"}
    terms = _required_terms(pod)
    if terms:
        per_term = [_term_families(t, label, known) for t in terms]
        if all(t is not None for t in per_term):
            union = set().union(*(t for t in per_term if t is not None))
            families = union if families is None else families & union
        guaranteed |= set.intersection(*(_term_features(t, features) for t in terms))
    return NodeSelection(None if families is None else frozenset(families), frozenset(guaranteed))


def _runs_image(deployment: dict[str, Any], image: str) -> bool:
    pod = deployment.get("spec", {}).get("template", {}).get("spec", {})
    return any(c.get("image") == image for c in pod.get("containers", []))


@dataclass(frozen=True)
class Verdict:
    pin: bool
    problem: str | None


def judge(selection: NodeSelection, base: ChosenBase, catalog: BaseCatalog) -> Verdict:
    needed = set(base.cpu_features) - selection.features
    if not needed:
        return Verdict(False, None)
    if selection.families is None:
        return Verdict(bool(base.families), None)
    problems = []
    for family in sorted(selection.families):
        if family not in catalog.families:
            if base.families:  # a family-specific base must know where it lands
                problems.append(f"{family} (not in kustomize/bases.yaml's families)")
            continue
        lacking = needed - set(catalog.families[family])
        if lacking:
            problems.append(f"{family} (lacks {', '.join(sorted(lacking))})")
    return Verdict(False, "; ".join(problems) or None)


def _pin_patch(pod: dict[str, Any], base: ChosenBase, label: str) -> dict[str, Any]:
    """The pod spec fields that pin it to the base's families."""
    if len(base.families) == 1 and not _required_terms(pod):
        return {"nodeSelector": {label: base.families[0]}}
    ours = {"key": label, "operator": "In", "values": list(base.families)}
    terms = [
        {**t, "matchExpressions": [*(t.get("matchExpressions") or []), ours]}
        for t in _required_terms(pod)
    ] or [{"matchExpressions": [ours]}]
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
            }
        }
    }


def annotation_patch(base: ChosenBase, catalog: BaseCatalog) -> dict[str, Any]:
    """The wrapper patch that records the base on every serving pod template."""
    annotations = base.pod_annotations()
    if base.name is not None and catalog.node_family_label != GKE_FAMILY_LABEL:
        annotations[NODE_FAMILY_LABEL_ANNOTATION] = catalog.node_family_label
    return {
        "target": {"kind": "Deployment", "labelSelector": SERVING_SELECTOR},
        "patch": yaml.safe_dump(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "serving"},
                "spec": {"template": {"metadata": {"annotations": annotations}}},
            }
        ),
    }


def apply_placement(
    text: str,
    wrapper: Path,
    *,
    overlay: str,
    image: str,
    base: ChosenBase,
    catalog: BaseCatalog,
    rerender: Callable[[], str],
) -> str:
    """``text`` checked (PlacementError) and, where needed, pinned and rendered again."""
    if not base.cpu_features:
        return text
    label = catalog.node_family_label
    known = set(catalog.families)
    patches: dict[str, dict[str, Any]] = {}
    problems = []
    for obj in yaml.safe_load_all(text):
        if not obj or obj.get("kind") != "Deployment" or not _runs_image(obj, image):
            continue
        pod = obj["spec"]["template"]["spec"]
        verdict = judge(node_selection(pod, label, known, base.cpu_features), base, catalog)
        name = obj["metadata"]["name"]
        if verdict.problem:
            problems.append(f"{name} selects {verdict.problem}")
        elif verdict.pin:
            track = obj["metadata"].get("labels", {}).get(TRACK_LABEL, "")
            patches[track] = _pin_patch(pod, base, label)
    if problems:
        families = ", ".join(base.families) or "none named"
        raise PlacementError(
            f"overlay {overlay} cannot run base {base.display}: it needs "
            f"{', '.join(base.cpu_features)}, but " + "; ".join(problems),
            cause="the overlay's nodeSelector or node affinity picks nodes whose CPUs lack "
            "instructions the base was compiled for (its pods would die with SIGILL)",
            fix=f"remove the overlay's family selection (render then pins the base's "
            f"families: {families}), or serve this overlay with a base those nodes can run "
            "(kustomize/overlays/NAME/serving-base.yaml, model.yaml base_image or --base; "
            "docs/images.md)",
        )
    if not patches:
        return text
    path = wrapper / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text())
    for track, fields in sorted(patches.items()):
        selector = SERVING_SELECTOR + (f",{TRACK_LABEL}={track}" if track else "")
        kustomization.setdefault("patches", []).append(
            {
                "target": {"kind": "Deployment", "labelSelector": selector},
                "patch": yaml.safe_dump(
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "metadata": {"name": "serving"},
                        "spec": {"template": {"spec": fields}},
                    }
                ),
            }
        )
    path.write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return rerender()
