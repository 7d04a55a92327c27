"""Rendering overlays with kubectl's kustomize, schema validation and the policy."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts import errors
from scripts.config import KUSTOMIZE_DIR
from scripts.manifests.render import RenderRequest, overlays, render
from tests.conftest import CLIResult
from tests.golden.regenerate import GOLDEN_DIR, GOLDEN_IMAGE, GOLDEN_MODEL

pytestmark = pytest.mark.integration
KUBECTL = str(Path(sys.executable).parent / "kubectl")
ALL_OVERLAYS = overlays()


def test_the_experiment_matrix_and_environments_exist() -> None:
    assert set(ALL_OVERLAYS) >= {
        "8x-2cpu",
        "4x-4cpu",
        "2x-8cpu-interop2",
        "2x-8cpu-interop4",
        "2x-8cpu-interop8",
        "2x-8cpu-batching",
        "local",
        "staging",
        "production",
    }


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_overlay_renders_with_plain_kubectl_kustomize(overlay: str) -> None:
    out = subprocess.run(
        [KUBECTL, "kustomize", str(KUSTOMIZE_DIR / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    kinds = [d["kind"] for d in yaml.safe_load_all(out) if d]
    assert kinds.count("Deployment") == 2  # stable and canary


SERVING_OVERLAYS = [o for o in ALL_OVERLAYS if o != "local-threads-default"]


def test_an_ablation_overlay_is_never_rendered_to_serve_only_to_bench(
    cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    """local-threads-default breaks the thread rules on purpose (seed reproduction 1)."""
    refused = cli(
        "render", "--overlay", "local-threads-default", "--model", GOLDEN_MODEL,
        "--image", GOLDEN_IMAGE, "--out", tmp_path / "x.yaml", "--json",
    )  # fmt: skip
    assert refused.exit_code == 31, refused.stderr
    assert "ablation" in str(refused.json()["error"])
    rendered = render(
        RenderRequest(
            overlay="local-threads-default",
            image=GOLDEN_IMAGE,
            model=GOLDEN_MODEL,
            allow_ablations=True,
        )
    )
    assert rendered.yaml_text == (GOLDEN_DIR / "local-threads-default.yaml").read_text()
    for deployment in (o for o in rendered.objects if o["kind"] == "Deployment"):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert "--tensorflow_intra_op_parallelism=0" in container["args"]
        assert not any("valueFrom" in e for e in container["env"])


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_render_matches_the_golden_file(
    cli: Callable[..., CLIResult], overlay: str, tmp_path: Path
) -> None:
    out = tmp_path / f"{overlay}.yaml"
    result = cli(
        "render",
        "--overlay",
        overlay,
        "--model",
        GOLDEN_MODEL,
        "--image",
        GOLDEN_IMAGE,
        "--out",
        out,
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    assert out.read_text() == (GOLDEN_DIR / f"{overlay}.yaml").read_text(), (
        "rendered output changed: review it, then run `make golden`"
    )


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_render_pins_the_digest_and_model_without_editing_the_tree(
    cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    before = _tree_digest(KUSTOMIZE_DIR)
    image = "europe-docker.pkg.dev/p/r/mnist@sha256:" + "ab" * 32
    out = tmp_path / "m.yaml"
    result = cli(
        "render",
        "--overlay",
        "2x-8cpu-batching",
        "--model",
        "mnist",
        "--image",
        image,
        "--out",
        out,
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    assert _tree_digest(KUSTOMIZE_DIR) == before
    docs = [d for d in yaml.safe_load_all(out.read_text()) if d]
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    for deployment in deployments:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == image
        assert container["readinessProbe"]["httpGet"]["path"] == "/v1/models/mnist"
        assert "--enable_batching=true" in container["args"]
        env = {e["name"]: e for e in container["env"]}
        assert env["TF_NUM_INTRAOP_THREADS"]["valueFrom"]["resourceFieldRef"] == {
            "containerName": "tf-serving",
            "resource": "requests.cpu",
            "divisor": "1",
        }
        assert env["TF_NUM_INTEROP_THREADS"]["value"] == "4"
        assert container["resources"]["requests"]["cpu"] == "7500m"
    config = next(
        d
        for d in docs
        if d["kind"] == "ConfigMap"
        and d["metadata"]["name"].startswith("mnist-serving-config-")
        and "canary" not in d["metadata"]["name"]
    )
    assert 'name: "mnist"' in config["data"]["models.config"]
    assert 'base_path: "/models/mnist"' in config["data"]["models.config"]
    tracks = {d["metadata"]["name"]: d["metadata"]["labels"]["track"] for d in deployments}
    assert tracks == {"mnist-serving": "stable", "mnist-serving-canary": "canary"}
    replicas = {d["metadata"]["name"]: d["spec"]["replicas"] for d in deployments}
    assert replicas == {"mnist-serving": 2, "mnist-serving-canary": 1}


def _edited_tree(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    tree = tmp_path / "kustomize"
    shutil.copytree(KUSTOMIZE_DIR, tree)
    # The local overlay sets requests and limits itself; keep only its requests so that
    # edits of the base's resources show through.
    local = tree / "overlays" / "local" / "kustomization.yaml"
    local.write_text(
        "\n".join(line for line in local.read_text().splitlines() if "limits:" not in line) + "\n"
    )
    path = tree / "base" / "deployment.yaml"
    doc = yaml.safe_load(path.read_text())
    edit(doc["spec"]["template"]["spec"]["containers"][0])
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return tree


def _env(container: dict[str, Any], name: str) -> dict[str, Any]:
    entry: dict[str, Any] = next(e for e in container["env"] if e["name"] == name)
    return entry


POLICY_CASES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "missing-limits": (lambda c: c["resources"].pop("limits"), "resources.limits.cpu is not set"),
    "hand-typed-thread-env": (
        lambda c: (
            _env(c, "OMP_NUM_THREADS").update({"value": "4"})
            or _env(c, "OMP_NUM_THREADS").pop("valueFrom")
        ),
        "env OMP_NUM_THREADS is hand-typed",
    ),
    "hand-typed-intra-op-flag": (
        lambda c: c["args"].__setitem__(
            c["args"].index("--tensorflow_intra_op_parallelism=$(TF_NUM_INTRAOP_THREADS)"),
            "--tensorflow_intra_op_parallelism=8",
        ),
        "hand-types the intra-op thread count",
    ),
    "missing-readiness-probe": (lambda c: c.pop("readinessProbe"), "readinessProbe is missing"),
    "writable-root": (
        lambda c: c["securityContext"].update({"readOnlyRootFilesystem": False}),
        "readOnlyRootFilesystem is not true",
    ),
}


@pytest.mark.parametrize("case", sorted(POLICY_CASES))
def test_policy_violations_are_rejected_naming_object_and_field(
    cli: Callable[..., CLIResult], tmp_path: Path, case: str
) -> None:
    edit, expected = POLICY_CASES[case]
    tree = _edited_tree(tmp_path, edit)
    result = cli(
        "render",
        "--overlay",
        "local",
        "--model",
        "digits",
        "--image",
        GOLDEN_IMAGE,
        "--kustomize-dir",
        tree,
        "--out",
        tmp_path / "o.yaml",
        "--json",
    )
    assert result.exit_code == errors.PolicyError.exit_code, result.stderr
    message = str(result.json()["error"])
    assert expected in message
    assert "Deployment/digits-serving container 'tf-serving'" in message
    assert "Deployment/digits-serving-canary" in message  # the canary copy is checked too
    assert not (tmp_path / "o.yaml").exists()


def test_unpinned_and_latest_images_are_refused(
    cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    for image in ("registry.example/models/digits:latest", "registry.example/models/digits:v3"):
        result = cli(
            "render", "--overlay", "local", "--image", image, "--out", tmp_path / "o.yaml", "--json"
        )
        assert result.exit_code == errors.UsageError.exit_code
        assert "not pinned by digest" in str(result.json()["error"])


def test_schema_violation_names_object_and_field(
    cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    tree = _edited_tree(tmp_path, lambda c: c.update({"imagePullPolicyy": "Always"}))
    result = cli(
        "render",
        "--overlay",
        "local",
        "--image",
        GOLDEN_IMAGE,
        "--kustomize-dir",
        tree,
        "--out",
        tmp_path / "o.yaml",
        "--json",
    )
    assert result.exit_code == errors.RenderError.exit_code
    message = str(result.json()["error"])
    assert "Deployment/model-serving" in message and "imagePullPolicyy" in message


def test_keda_component_renders_and_its_scaledobject_is_validated(
    cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    tree = tmp_path / "kustomize"
    shutil.copytree(KUSTOMIZE_DIR, tree)
    overlay = tree / "overlays" / "keda-test"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [../../base]\ncomponents: [../../components/canary, "
        "../../components/monitoring, ../../components/keda]\n"
    )
    ok = cli(
        "render",
        "--overlay",
        "keda-test",
        "--image",
        GOLDEN_IMAGE,
        "--kustomize-dir",
        tree,
        "--out",
        tmp_path / "o.yaml",
        "--json",
    )
    assert ok.exit_code == 0, ok.stderr
    scaled_object = next(
        d
        for d in yaml.safe_load_all((tmp_path / "o.yaml").read_text())
        if d and d["kind"] == "ScaledObject"
    )
    # Named after the model, pointing at its Deployment, counting its requests only.
    assert scaled_object["metadata"]["name"] == "model-serving"
    assert scaled_object["spec"]["scaleTargetRef"]["name"] == "model-serving"
    query = scaled_object["spec"]["triggers"][0]["metadata"]["query"]
    assert 'app_kubernetes_io_instance="model"' in query
    scaled = tree / "components" / "keda" / "scaledobject.yaml"
    scaled.write_text(scaled.read_text().replace("pollingInterval", "pollingIntervall"))
    bad = cli(
        "render",
        "--overlay",
        "keda-test",
        "--image",
        GOLDEN_IMAGE,
        "--kustomize-dir",
        tree,
        "--out",
        tmp_path / "o.yaml",
        "--json",
    )
    assert bad.exit_code == errors.RenderError.exit_code
    assert "ScaledObject/model-serving" in str(bad.json()["error"])


def test_unknown_overlay_lists_the_real_ones(cli: Callable[..., CLIResult], tmp_path: Path) -> None:
    result = cli(
        "render",
        "--overlay",
        "nope",
        "--image",
        GOLDEN_IMAGE,
        "--out",
        tmp_path / "o.yaml",
        "--json",
    )
    assert result.exit_code == errors.UsageError.exit_code
    assert "2x-8cpu-batching" in str(result.json()["error"])


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("overlay", ["staging", "production"])
def test_two_models_rendered_for_one_namespace_never_select_each_others_pods(
    overlay: str,
) -> None:
    rendered = {
        model: render(RenderRequest(overlay=overlay, image=GOLDEN_IMAGE, model=model))
        for model in ("digits", "mnist")
    }
    names = {
        m: {(o["kind"], o["metadata"]["name"]) for o in r.objects} for m, r in rendered.items()
    }
    assert not names["digits"] & names["mnist"]  # nothing one applies overwrites the other's
    pods = {
        (model, o["metadata"]["labels"]["track"]): o["spec"]["template"]["metadata"]["labels"]
        for model, r in rendered.items()
        for o in r.objects
        if o["kind"] == "Deployment"
    }
    for model, r in rendered.items():
        for obj in r.objects:
            spec = obj.get("spec", {})
            selector = (
                spec.get("selector", {}).get("matchLabels")
                if obj["kind"] in ("Deployment", "PodDisruptionBudget")
                else spec.get("selector")
                if obj["kind"] == "Service"
                else spec.get("podSelector", {}).get("matchLabels")
                if obj["kind"] == "NetworkPolicy"
                else None
            )
            if selector is None:
                continue
            chosen = {key for key, labels in pods.items() if _selects(selector, labels)}
            assert chosen and {m for m, _track in chosen} == {model}, (obj["kind"], chosen)
        for obj in r.objects:
            ref = obj.get("spec", {}).get("scaleTargetRef")
            if ref:
                assert ref["name"] == f"{model}-serving"


@pytest.mark.parametrize("name", ["2fast", "my_model", "Digits", "a" * 49, "dots.in.name"])
def test_a_model_name_that_cannot_name_kubernetes_objects_is_refused(name: str) -> None:
    with pytest.raises(errors.UsageError) as refused:
        render(RenderRequest(overlay="local", image=GOLDEN_IMAGE, model=name))
    assert "DNS-1035" in (refused.value.cause or "")
