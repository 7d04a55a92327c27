"""Render never schedules an image where its CPU cannot run it (scripts/manifests/placement.py).

The pure rules on pod specs shaped like the API's, then real renders (kubectl kustomize,
the Kubernetes schemas) of copies of the shipped tree.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts import errors
from scripts.image.bases import GKE_FAMILY_LABEL, load_catalog, nfd_label, resolve_named
from scripts.manifests.placement import judge, node_selection
from scripts.manifests.render import RenderRequest, render
from tests.conftest import REPO_ROOT, CLIResult

IMAGE = "reg.example/digits@sha256:" + "c" * 64
CATALOG = load_catalog()
KNOWN = set(CATALOG.families)
C2 = resolve_named(CATALOG, "c2-cascadelake", "test", require_built=False)
STOCK = resolve_named(CATALOG, "stock", "test")


def _terms(*terms: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": t} for t in terms]
                }
            }
        }
    }


def _family(op: str, *values: str) -> dict[str, Any]:
    return {"key": GKE_FAMILY_LABEL, "operator": op, "values": list(values)}


@pytest.mark.parametrize(
    ("pod", "families"),
    [
        ({}, None),
        ({"nodeSelector": {"cloud.google.com/gke-nodepool": "p"}}, None),
        ({"nodeSelector": {GKE_FAMILY_LABEL: "c2"}}, {"c2"}),
        (_terms([_family("In", "c2", "n2")]), {"c2", "n2"}),
        (_terms([_family("In", "c2")], [_family("In", "e2")]), {"c2", "e2"}),  # ORed
        (_terms([_family("In", "c2")], [{"key": "x", "operator": "Exists"}]), None),
        (_terms([_family("NotIn", *sorted(KNOWN - {"c3"}))]), {"c3"}),
        (
            {**_terms([_family("In", "c2", "e2")]), "nodeSelector": {GKE_FAMILY_LABEL: "c2"}},
            {"c2"},
        ),
    ],
)
def test_the_families_a_node_selection_allows(
    pod: dict[str, Any], families: set[str] | None
) -> None:
    got = node_selection(pod, GKE_FAMILY_LABEL, KNOWN, C2.cpu_features).families
    assert got == (None if families is None else frozenset(families))


def test_nfd_labels_guarantee_features_in_every_term_or_the_node_selector() -> None:
    vnni = nfd_label("avx512_vnni")
    exists = {"key": vnni, "operator": "Exists"}
    both = _terms([exists], [{"key": vnni, "operator": "In", "values": ["true"]}])
    assert node_selection(both, GKE_FAMILY_LABEL, KNOWN, C2.cpu_features).features == {
        "avx512_vnni"
    }
    one = _terms([exists], [_family("In", "c2")])
    assert node_selection(one, GKE_FAMILY_LABEL, KNOWN, C2.cpu_features).features == set()
    every = {"nodeSelector": {nfd_label(f): "true" for f in C2.cpu_features}}
    selection = node_selection(every, GKE_FAMILY_LABEL, KNOWN, C2.cpu_features)
    assert (
        judge(selection, C2, CATALOG).pin is False and judge(selection, C2, CATALOG).problem is None
    )


def test_the_verdicts() -> None:
    def verdict(pod: dict[str, Any], base: Any = C2) -> tuple[bool, str | None]:
        v = judge(node_selection(pod, GKE_FAMILY_LABEL, KNOWN, base.cpu_features), base, CATALOG)
        return v.pin, v.problem

    assert verdict({}) == (True, None)  # no family chosen: pinned to c2
    assert verdict({"nodeSelector": {GKE_FAMILY_LABEL: "n2"}}) == (False, None)  # n2 has them
    pin, problem = verdict(_terms([_family("In", "c2", "e2", "zz9")]))
    assert not pin and problem is not None
    assert "e2 (lacks" in problem and "zz9 (not in" in problem and "c2" not in problem.split(";")[0]
    assert verdict({}, STOCK) == (False, None)  # stock is not family-specific: never pinned
    assert verdict({"nodeSelector": {GKE_FAMILY_LABEL: "zz9"}}, STOCK) == (False, None)


# -- real renders ------------------------------------------------------------------------
@pytest.fixture
def tree(tmp_path: Path) -> Path:
    copy = tmp_path / "kustomize"
    shutil.copytree(REPO_ROOT / "kustomize", copy)
    return copy


def _serving_pods(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["name"]: o["spec"]["template"] for o in objects if o["kind"] == "Deployment"
    }


def _patch_overlay(tree: Path, overlay: str, spec: dict[str, Any]) -> None:
    path = tree / "overlays" / overlay / "kustomization.yaml"
    data = yaml.safe_load(path.read_text())
    data.setdefault("patches", []).append(
        {
            "target": {"kind": "Deployment", "labelSelector": "app.kubernetes.io/name=tf-serving"},
            "patch": yaml.safe_dump(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "serving"},
                    "spec": {"template": {"spec": spec}},
                }
            ),
        }
    )
    path.write_text(yaml.safe_dump(data))


def test_the_c2_overlay_is_pinned_and_annotated_on_both_tracks() -> None:
    rendered = render(RenderRequest(overlay="4x-4cpu-c2", image=IMAGE, model="digits"))
    pods = _serving_pods(rendered.objects)
    assert set(pods) == {"digits-serving", "digits-serving-canary"}
    for template in pods.values():
        assert template["spec"]["nodeSelector"] == {GKE_FAMILY_LABEL: "c2"}
        annotations = template["metadata"]["annotations"]
        assert annotations["tf-release-pipeline.dev/serving-base"] == "c2-cascadelake"
        assert "avx512_vnni" in annotations["tf-release-pipeline.dev/cpu-features"]
        assert annotations["tf-release-pipeline.dev/machine-families"] == "c2"
    # The same overlay on the stock base is not pinned.
    stock = render(RenderRequest(overlay="4x-4cpu-c2", image=IMAGE, model="digits", base=STOCK))
    for template in _serving_pods(stock.objects).values():
        assert "nodeSelector" not in template["spec"]


def test_a_base_built_for_two_families_is_pinned_by_affinity_within_the_overlays_terms(
    tree: Path,
) -> None:
    data = yaml.safe_load((tree / "bases.yaml").read_text())
    data["bases"]["c2-cascadelake"]["families"] = ["c2", "n2"]
    (tree / "bases.yaml").write_text(yaml.safe_dump(data))
    zone = {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["us-central1-a"]}
    _patch_overlay(tree, "4x-4cpu-c2", _terms([zone]))
    rendered = render(
        RenderRequest(overlay="4x-4cpu-c2", image=IMAGE, model="digits", kustomize_dir=tree)
    )
    for template in _serving_pods(rendered.objects).values():
        terms = template["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
        assert terms == [{"matchExpressions": [zone, _family("In", "c2", "n2")]}]


def test_nodes_labelled_by_nfd_need_no_pin(tree: Path) -> None:
    base = resolve_named(load_catalog(tree), "c2-cascadelake", "test", require_built=False)
    _patch_overlay(
        tree, "4x-4cpu-c2", {"nodeSelector": {nfd_label(f): "true" for f in base.cpu_features}}
    )
    rendered = render(
        RenderRequest(overlay="4x-4cpu-c2", image=IMAGE, model="digits", kustomize_dir=tree)
    )
    for template in _serving_pods(rendered.objects).values():
        assert GKE_FAMILY_LABEL not in template["spec"]["nodeSelector"]


def test_an_overlay_that_selects_nodes_which_cannot_run_its_base_is_refused(
    cli: Callable[..., CLIResult], tree: Path, tmp_path: Path
) -> None:
    _patch_overlay(tree, "4x-4cpu-c2", {"nodeSelector": {GKE_FAMILY_LABEL: "e2"}})
    result = cli(
        "render", "--overlay", "4x-4cpu-c2", "--model", "digits", "--image", IMAGE,
        "--kustomize-dir", tree, "--out", tmp_path / "out.yaml", "--json",
    )  # fmt: skip
    assert result.exit_code == errors.PlacementError.exit_code == 32, result.stdout
    error = result.json()["error"]
    assert "cannot run base c2-cascadelake" in str(error["message"])  # type: ignore[index]
    assert "e2 (lacks" in str(error["message"])  # type: ignore[index]
    assert "SIGILL" in str(error["cause"])  # type: ignore[index]
    assert "c2" in str(error["fix"])  # type: ignore[index]
    assert not (tmp_path / "out.yaml").exists()
    # --base stock renders the same overlay: e2 runs the stock build.
    ok = cli(
        "render", "--overlay", "4x-4cpu-c2", "--model", "digits", "--image", IMAGE,
        "--kustomize-dir", tree, "--out", tmp_path / "out.yaml", "--base", "stock",
    )  # fmt: skip
    assert ok.exit_code == 0, ok.stderr
