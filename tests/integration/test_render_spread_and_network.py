"""The serving overlays' NetworkPolicy and zone spreading, as `render` writes them, and the
policy rule that keeps a Deployment with several replicas spread across zones."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts import errors
from scripts.config import KUSTOMIZE_DIR
from scripts.manifests.render import MODEL_LABEL, RenderRequest, render
from tests.golden.regenerate import GOLDEN_IMAGE

pytestmark = pytest.mark.integration
ZONE = "topology.kubernetes.io/zone"
COMPONENT = KUSTOMIZE_DIR / "components" / "networkpolicy" / "networkpolicy.yaml"


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


@pytest.mark.parametrize("overlay", ["staging", "production"])
def test_the_network_policy_selects_its_model_and_leaves_the_from_selectors_alone(
    overlay: str,
) -> None:
    rendered = render(RenderRequest(overlay=overlay, image=GOLDEN_IMAGE, model="digits"))
    policy = _one(rendered.objects, "NetworkPolicy")
    assert policy["metadata"]["name"] == "digits-serving"
    # teardown finds a model's objects by part-of + instance
    assert policy["metadata"]["labels"]["app.kubernetes.io/part-of"] == "tf-release-pipeline"
    assert policy["metadata"]["labels"][MODEL_LABEL] == "digits"
    assert policy["spec"]["podSelector"] == {
        "matchLabels": {
            "app.kubernetes.io/name": "tf-serving",
            "app.kubernetes.io/part-of": "tf-release-pipeline",
            MODEL_LABEL: "digits",
        }
    }
    # The sources are the component's, untouched by the model label or any other transformer.
    assert policy["spec"]["ingress"] == yaml.safe_load(COMPONENT.read_text())["spec"]["ingress"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    # Both tracks are covered, and only this model's pods.
    for deployment in (o for o in rendered.objects if o["kind"] == "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()


def test_the_network_policy_admits_the_serving_ports_only_and_prometheus_only_metrics() -> None:
    ingress = yaml.safe_load(COMPONENT.read_text())["spec"]["ingress"]
    ports = {p["port"] for rule in ingress for p in rule["ports"]}
    assert ports == {8500, 8501}
    assert all(p["protocol"] == "TCP" for rule in ingress for p in rule["ports"])
    every_rule_names_its_sources = all(rule.get("from") for rule in ingress)
    assert every_rule_names_its_sources  # an empty `from` would admit everyone
    namespaced = [rule for rule in ingress if any("namespaceSelector" in f for f in rule["from"])]
    (prometheus,) = namespaced
    assert [p["port"] for p in prometheus["ports"]] == [8501]  # the metrics path's port
    namespaces = {f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                  for f in prometheus["from"]}  # fmt: skip
    assert namespaces == {"monitoring", "gmp-system"}
    assert all(f.get("podSelector") for f in prometheus["from"])  # not the whole namespace


def test_both_tracks_spread_across_zones_per_model_track_and_revision() -> None:
    rendered = render(RenderRequest(overlay="production", image=GOLDEN_IMAGE, model="digits"))
    for deployment in (o for o in rendered.objects if o["kind"] == "Deployment"):
        constraints = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert [c["topologyKey"] for c in constraints] == [ZONE, "kubernetes.io/hostname"]
        for constraint in constraints:
            assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"  # kind, one zone
            assert constraint["matchLabelKeys"] == [MODEL_LABEL, "track", "pod-template-hash"]
            # matchLabelKeys may not repeat a labelSelector key (the API server refuses it):
            # the canary's `track: canary` label transformer must not have reached it.
            selector = constraint["labelSelector"]
            assert "matchLabels" not in selector
            assert {e["key"] for e in selector["matchExpressions"]} == {"app.kubernetes.io/name"}


def _tree(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """kustomize/ copied, with the base Deployment's pod spec edited, and an overlay
    `hpa-test`: the base at 1 replica, scaled by the `hpa` component (up to 10)."""
    tree = tmp_path / "kustomize"
    shutil.copytree(KUSTOMIZE_DIR, tree)
    path = tree / "base" / "deployment.yaml"
    doc = yaml.safe_load(path.read_text())
    edit(doc["spec"]["template"]["spec"])
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    overlay = tree / "overlays" / "hpa-test"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [../../base]\n"
        "components: [../../components/canary, ../../components/hpa]\n"
    )
    return tree


def _drop_constraints(pod: dict[str, Any]) -> None:
    pod.pop("topologySpreadConstraints")


def _drop_match_label_keys(pod: dict[str, Any]) -> None:
    for constraint in pod["topologySpreadConstraints"]:
        constraint.pop("matchLabelKeys")


def _select_other_pods(pod: dict[str, Any]) -> None:
    for constraint in pod["topologySpreadConstraints"]:
        constraint["labelSelector"]["matchExpressions"][0]["values"] = ["something-else"]


SPREAD_CASES: dict[str, tuple[Callable[[dict[str, Any]], None], str, str]] = {
    # case: (edit of the base pod spec, overlay, expected violation)
    "no-zone-constraint": (
        _drop_constraints,
        "8x-2cpu",
        f"has no {ZONE} constraint, yet it can run 8 replicas",
    ),
    "no-zone-constraint-autoscaled": (
        _drop_constraints,
        "hpa-test",  # spec.replicas 1, but the HPA's maxReplicas 10
        f"has no {ZONE} constraint, yet it can run 10 replicas",
    ),
    "counts-every-model": (
        _drop_match_label_keys,
        "staging",
        f"put {MODEL_LABEL} in matchLabelKeys",
    ),
    "misses-its-own-pods": (
        _select_other_pods,
        "production",
        f"the {ZONE} constraint's labelSelector misses its own pods",
    ),
}


@pytest.mark.parametrize("case", sorted(SPREAD_CASES))
def test_a_deployment_with_several_replicas_that_does_not_spread_across_zones_is_refused(
    tmp_path: Path, case: str
) -> None:
    edit, overlay, expected = SPREAD_CASES[case]
    tree = _tree(tmp_path, edit)
    with pytest.raises(errors.PolicyError) as refused:
        render(
            RenderRequest(overlay=overlay, image=GOLDEN_IMAGE, model="digits", kustomize_dir=tree)
        )
    message = refused.value.what
    assert "Deployment/digits-serving: spec.template.spec.topologySpreadConstraints" in message
    assert expected in message
    assert "Deployment/digits-serving-canary" not in message  # one replica: nothing to spread


def test_a_single_replica_deployment_needs_no_zone_spread(tmp_path: Path) -> None:
    tree = _tree(tmp_path, _drop_constraints)
    rendered = render(
        RenderRequest(overlay="local", image=GOLDEN_IMAGE, model="digits", kustomize_dir=tree)
    )
    assert all(
        "topologySpreadConstraints" not in o["spec"]["template"]["spec"]
        for o in rendered.objects
        if o["kind"] == "Deployment"
    )
