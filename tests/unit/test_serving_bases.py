"""The serving bases catalog, the build's choice of base, and local bases.

Real components: the shipped kustomize/bases.yaml, the build command writing a real OCI
layout (read back with skopeo when installed), this machine's /proc/cpuinfo format.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from scripts import errors
from scripts.deploy.host_cpu import check_host_runs, host_cpu_features
from scripts.deploy.image_store import image_env, materialise
from scripts.image.auth import CredentialStore
from scripts.image.bases import (
    BASE_NAME_LABEL,
    CPU_FEATURES_ANNOTATION,
    CPU_FEATURES_LABEL,
    FAMILIES_LABEL,
    choose_base,
    families_guaranteeing,
    load_catalog,
    nfd_label,
    set_base_digest,
)
from scripts.image.local_base import write_local_base
from scripts.image.oci_layout import OCILayout
from tests.conftest import REPO_ROOT, CLIResult
from tests.fakes.savedmodel_factory import write_saved_model

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    copy = tmp_path / "kustomize"
    shutil.copytree(REPO_ROOT / "kustomize", copy)
    return copy


def _edit_catalog(tree: Path, change: Callable[[dict[str, object]], None]) -> None:
    data = yaml.safe_load((tree / "bases.yaml").read_text())
    change(data)
    (tree / "bases.yaml").write_text(yaml.safe_dump(data))


# -- the catalog -----------------------------------------------------------------------------
def test_the_shipped_catalog_is_consistent() -> None:
    catalog = load_catalog()
    assert catalog.default == "stock"
    c2 = catalog.bases["c2-cascadelake"]
    assert c2.build is not None and c2.build.march == "cascadelake"
    # A family-specific base runs on the families it names, and on no family without AVX-512.
    runs_on = families_guaranteeing(catalog, c2.cpu_features)
    assert "c2" in runs_on and "e2" not in runs_on and "n2d" not in runs_on
    c3 = catalog.bases["c3-sapphirerapids"]
    assert families_guaranteeing(catalog, c3.cpu_features) == ["c3", "c4", "n4"]
    # The stock base (AVX) runs on every family.
    assert families_guaranteeing(catalog, catalog.bases["stock"].cpu_features) == sorted(
        catalog.families
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["bases"]["c2-cascadelake"].update(families=["e2"]), "whose CPUs lack"),
        (lambda d: d["bases"]["c2-cascadelake"].update(families=["z9"]), "not under families"),
        (lambda d: d.update(default="fastest"), "default"),
        (lambda d: d["bases"]["stock"].update(digest="sha256:xyz"), "digest"),
        (lambda d: d["bases"]["stock"].update(env={"A": "1"}), "either image"),
        (lambda d: d["bases"]["stock"].update(cpu_features=["AVX-512"]), "cpuinfo"),
        (lambda d: d["bases"]["stock"].update(flavour="fast"), "flavour"),
    ],
)
def test_a_broken_catalog_is_a_config_error_naming_the_field(
    tree: Path, change: Callable[[dict[str, object]], None], message: str
) -> None:
    _edit_catalog(tree, change)  # type: ignore[arg-type]
    with pytest.raises(errors.ConfigError) as caught:
        load_catalog(tree)
    assert message in caught.value.what and "bases.yaml" in caught.value.what


# -- which base a build uses -----------------------------------------------------------------
def test_the_order_is_cli_then_model_yaml_then_overlay_then_default(tree: Path) -> None:
    (tree / "overlays" / "4x-4cpu" / "serving-base.yaml").write_text("base: c3-sapphirerapids\n")
    _edit_catalog(tree, lambda d: d["bases"]["c3-sapphirerapids"].update(digest=DIGEST))  # type: ignore[index]

    def chosen(cli: str | None, model: str | None, overlay: str | None) -> tuple[str, str]:
        base = choose_base(cli=cli, model_base=model, overlay=overlay, kustomize_dir=tree)
        return base.display, base.source

    assert chosen("stock", "reg.example/tfs:1", "4x-4cpu") == ("stock", "--base")
    assert chosen(None, "reg.example/tfs:1", "4x-4cpu") == ("reg.example/tfs:1", "model.yaml")
    assert chosen(None, None, "4x-4cpu") == ("c3-sapphirerapids", "overlay 4x-4cpu")
    assert chosen(None, None, "8x-2cpu") == ("stock", "default")
    built = choose_base(cli=None, model_base=None, overlay="4x-4cpu", kustomize_dir=tree)
    assert built.reference.endswith("@" + DIGEST)
    assert built.families == ("c3",) and "amx_tile" in built.cpu_features
    # A plain reference's CPU needs are unknown: no features label, so never pinned.
    plain = choose_base(cli="reg.example/tfs:1", model_base=None, overlay=None, kustomize_dir=tree)
    assert plain.image_labels() == {BASE_NAME_LABEL: "reg.example/tfs:1"}
    assert CPU_FEATURES_ANNOTATION not in plain.pod_annotations()


def test_local_builds_default_to_an_empty_base_and_skip_an_overlays_cluster_base(
    tree: Path,
) -> None:
    (tree / "overlays" / "local" / "serving-base.yaml").write_text("base: c2-cascadelake\n")
    local = choose_base(cli=None, model_base=None, overlay="local", kustomize_dir=tree,
                        local_build=True)  # fmt: skip
    assert (local.reference, local.source) == ("scratch", "local default")
    (tree / "overlays" / "local" / "serving-base.yaml").write_text("base: local-eigen\n")
    eigen = choose_base(cli=None, model_base=None, overlay="local", kustomize_dir=tree,
                        local_build=True)  # fmt: skip
    assert eigen.env == {"TF_ENABLE_ONEDNN_OPTS": "0"} and eigen.source == "overlay local"


def test_an_unbuilt_base_is_refused_for_a_build_but_renders(tree: Path) -> None:
    (tree / "overlays" / "4x-4cpu" / "serving-base.yaml").write_text("base: c2-cascadelake\n")
    with pytest.raises(errors.ConfigError) as caught:
        choose_base(cli=None, model_base=None, overlay="4x-4cpu", kustomize_dir=tree)
    assert "has not been built yet" in caught.value.what
    assert "base image" in caught.value.fix and "--base" in caught.value.fix
    for_render = choose_base(
        cli=None, model_base=None, overlay="4x-4cpu", kustomize_dir=tree, require_built=False
    )
    assert for_render.families == ("c2",)


@pytest.mark.parametrize(
    ("text", "message"),
    [("base: fastest\n", "does not define"), ("bases: [a]\n", "exactly `base: NAME`")],
)
def test_an_overlays_bad_serving_base_file_is_refused(tree: Path, text: str, message: str) -> None:
    (tree / "overlays" / "4x-4cpu" / "serving-base.yaml").write_text(text)
    with pytest.raises(errors.ConfigError) as caught:
        choose_base(cli=None, model_base=None, overlay="4x-4cpu", kustomize_dir=tree)
    assert message in caught.value.what


# -- the digest written back by the base-build workflow ----------------------------------
def test_set_base_digest_changes_two_lines_and_keeps_every_comment(tree: Path) -> None:
    path = tree / "bases.yaml"
    before = path.read_text()
    after = set_base_digest(path, "c3-sapphirerapids", image="us-docker.pkg.dev/p/b/tfs",
                            digest=DIGEST)  # fmt: skip
    changed = [
        (a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b
    ]
    assert changed == [
        ("    image: us-docker.pkg.dev/PROJECT/serving-bases/tensorflow-serving",
         "    image: us-docker.pkg.dev/p/b/tfs"),
        ("    digest: null", f"    digest: {DIGEST}"),
    ]  # fmt: skip
    path.write_text(after)
    assert load_catalog(tree).bases["c3-sapphirerapids"].digest == DIGEST
    assert load_catalog(tree).bases["c2-cascadelake"].digest is None  # the other one kept
    with pytest.raises(errors.UsageError):
        set_base_digest(path, "c2-cascadelake", image="x/y", digest="sha256:short")
    with pytest.raises(errors.ConfigError):
        set_base_digest(path, "nope", image="x/y", digest=DIGEST)


# -- local bases and the local target ------------------------------------------------------
def test_a_local_base_is_a_deterministic_empty_image_with_its_env(tmp_path: Path) -> None:
    first = write_local_base("local-eigen", {"TF_ENABLE_ONEDNN_OPTS": "0"}, tmp_path / "a")
    second = write_local_base("local-eigen", {"TF_ENABLE_ONEDNN_OPTS": "0"}, tmp_path / "b")
    digest_a = OCILayout(tmp_path / "a").tag_digest("local-eigen")
    assert digest_a == OCILayout(tmp_path / "b").tag_digest("local-eigen")
    assert first == f"oci:{tmp_path / 'a'}:local-eigen" and second.endswith(":local-eigen")
    write_local_base("local-eigen", {"TF_ENABLE_ONEDNN_OPTS": "0"}, tmp_path / "a")  # again
    assert len(OCILayout(tmp_path / "a").index()["manifests"]) == 1
    other = write_local_base("local-onednn", {"TF_ENABLE_ONEDNN_OPTS": "1"}, tmp_path / "a")
    assert other.endswith(":local-onednn")
    assert OCILayout(tmp_path / "a").tag_digest("local-onednn") != digest_a


def test_a_build_on_a_local_base_labels_the_image_and_the_local_target_sees_its_env(
    cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    model = tmp_path / "models" / "digits"
    write_saved_model(model / "3")
    out = tmp_path / "images"
    result = cli(
        "build", "--model-dir", model, "--base", "local-eigen", "--image", f"oci:{out}:digits",
        "--cache-dir", tmp_path / "cache" / "layers", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    digest = result.json()["digest"]
    layout = OCILayout(out)
    manifest = json.loads(layout.read_blob(str(digest)))
    config = json.loads(layout.read_blob(manifest["config"]["digest"]))
    labels = config["config"]["Labels"]
    assert labels[BASE_NAME_LABEL] == "local-eigen"
    assert labels[CPU_FEATURES_LABEL] == "" and labels[FAMILIES_LABEL] == ""
    assert "TF_ENABLE_ONEDNN_OPTS=0" in config["config"]["Env"]
    assert "MODEL_NAME=digits" in config["config"]["Env"]
    # The local target gives the container the image's Env, as a container runtime does.
    root = materialise(
        f"oci.local/digits@{digest}",
        {"tf-release-pipeline.dev/oci-layout": str(out)},
        tmp_path / "store",
        credentials=CredentialStore(None),
    )
    assert image_env(root) == {"MODEL_NAME": "digits", "TF_ENABLE_ONEDNN_OPTS": "0"}
    if shutil.which("skopeo"):  # an independent reader of the layout agrees
        inspected = subprocess.run(
            ["skopeo", "inspect", "--config", f"oci:{out}:v3"],
            check=True, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert json.loads(inspected.stdout)["config"]["Labels"][BASE_NAME_LABEL] == "local-eigen"


def test_the_local_target_refuses_a_base_this_cpu_cannot_run(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n\n")
    assert host_cpu_features(cpuinfo) == frozenset({"fpu", "sse", "sse2", "avx", "avx2", "fma"})

    def deployment(features: str) -> dict[str, object]:
        annotations = {
            CPU_FEATURES_ANNOTATION: features,
            "tf-release-pipeline.dev/serving-base": "c2-cascadelake",
        }
        return {"spec": {"template": {"metadata": {"annotations": annotations}}}}

    check_host_runs(deployment("avx,avx2"), cpuinfo)  # has them: nothing raised
    check_host_runs(deployment(""), cpuinfo)
    with pytest.raises(errors.PlacementError) as caught:
        check_host_runs(deployment("avx,avx512f,avx512_vnni"), cpuinfo)
    assert "lacks avx512_vnni, avx512f" in caught.value.what
    assert "c2-cascadelake" in caught.value.what and "--base stock" in caught.value.fix
    assert caught.value.exit_code == 32
    # This machine's own flags are read (Linux on x86 here).
    here = host_cpu_features()
    assert here is None or "sse2" in here


def test_nfd_labels_name_features_as_node_feature_discovery_does() -> None:
    assert nfd_label("avx512_vnni") == "feature.node.kubernetes.io/cpu-cpuid.AVX512VNNI"
    assert nfd_label("amx_tile") == "feature.node.kubernetes.io/cpu-cpuid.AMXTILE"
