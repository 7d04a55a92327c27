"""Per-model batching: model.yaml's ``batching:`` validated, then written by ``render``.

Precedence, field by field: model.yaml > the overlay's batching.config > defaults from
the pod's CPU request. Rendered with the real ``kubectl kustomize``; the ConfigMap's
text is parsed as ``BatchingParameters`` with TF Serving's field numbers
(``scripts.serving.protos``, the declaration the local server reads it with: the
tensorflow-serving-api wheel does not ship ``session_bundle_config_pb2``).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.config import KUSTOMIZE_DIR, MODELS_DIR
from scripts.errors import ConfigError, RenderError
from scripts.manifests.render import Rendered, RenderRequest, render
from scripts.model_spec import Batching, load_model_spec
from scripts.serving.protos import parse_text
from tests.conftest import CLIResult

IMAGE = "registry.example/models/digits@sha256:" + "ab" * 32
DIGITS_YAML = (MODELS_DIR / "digits" / "model.yaml").read_text()


@pytest.fixture
def warnings_logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The pipeline's logger does not propagate once the CLI configured it: listen on it."""
    logger = logging.getLogger("scripts")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="scripts")
    yield caplog
    logger.removeHandler(caplog.handler)


def _render(
    overlay: str, batching: Batching | None = None, kustomize_dir: Path = KUSTOMIZE_DIR
) -> Rendered:
    return render(
        RenderRequest(
            overlay=overlay,
            image=IMAGE,
            model="digits",
            kustomize_dir=kustomize_dir,
            batching=batching,
        )
    )


def _batching_config(rendered: Rendered) -> tuple[str, str]:
    """(name, text) of the ConfigMap the servers read --batching_parameters_file from."""
    names = set()
    for deployment in (o for o in rendered.objects if o["kind"] == "Deployment"):
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        names |= {v["configMap"]["name"] for v in volumes if v["name"] == "batching"}
    assert len(names) == 1, names  # stable and canary share it
    (name,) = names
    config_map = next(o for o in rendered.objects if o["metadata"]["name"] == name)
    assert config_map["kind"] == "ConfigMap"
    return name, config_map["data"]["batching.config"]


def _params(rendered: Rendered) -> dict[str, Any]:
    params = parse_text(_batching_config(rendered)[1], "BatchingParameters", "rendered")
    values: dict[str, Any] = {
        name: getattr(params, name).value
        for name in (
            "max_batch_size",
            "batch_timeout_micros",
            "max_enqueued_batches",
            "num_batch_threads",
        )
        if params.HasField(name)
    }
    if params.allowed_batch_sizes:
        values["allowed_batch_sizes"] = list(params.allowed_batch_sizes)
    if params.pad_variable_length_inputs:
        values["pad_variable_length_inputs"] = True
    return values


def _source_of(rendered: Rendered, field: str) -> str:
    line = next(
        line for line in _batching_config(rendered)[1].splitlines() if line.startswith(field)
    )
    return line.split("#", 1)[1].strip()


@pytest.fixture
def tree(tmp_path: Path) -> Callable[..., Path]:
    """A copy of kustomize/ plus overlays on `local` (½ CPU) with the batching component."""
    root = tmp_path / "kustomize"
    shutil.copytree(KUSTOMIZE_DIR, root)

    def add(name: str, config: str | None = None) -> Path:
        overlay = root / "overlays" / name
        inner = overlay / "with-batching" if config is not None else overlay
        inner.mkdir(parents=True)
        up = "../" * len(inner.relative_to(root).parts)
        (inner / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [f"{up}overlays/local"],
                    "components": [f"{up}components/batching"],
                }
            )
        )
        if config is not None:  # replace the component's file, as local-1x500m-batching does
            (overlay / "batching.config").write_text(config)
            (overlay / "kustomization.yaml").write_text(
                yaml.safe_dump(
                    {
                        "apiVersion": "kustomize.config.k8s.io/v1beta1",
                        "kind": "Kustomization",
                        "resources": ["with-batching"],
                        "configMapGenerator": [
                            {
                                "name": "serving-batching",
                                "behavior": "replace",
                                "files": ["batching.config"],
                            }
                        ],
                    }
                )
            )
        return root

    return add


# -- model.yaml -------------------------------------------------------------------------------
def _spec_with(tmp_path: Path, block: str) -> Any:
    path = tmp_path / "model.yaml"
    path.write_text(DIGITS_YAML + "batching:\n" + block)
    return load_model_spec(path)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            "  max_batch_size: 8\n  allowed_batch_sizes: [2, 8, 4]\n",
            "allowed_batch_sizes [2, 8, 4] must be strictly increasing",
        ),
        (
            "  max_batch_size: 8\n  allowed_batch_sizes: [4, 4, 8]\n",
            "must be strictly increasing",
        ),
        (
            "  max_batch_size: 16\n  allowed_batch_sizes: [4, 8]\n",
            "must equal max_batch_size (16): TF Serving refuses to load the model",
        ),
        ("  allowed_batch_sizes: [4, 8]\n", "needs max_batch_size in the same batching block"),
        ("  max_batch_size: 8\n  allowed_batch_sizes: []\n", "batching.allowed_batch_sizes"),
        ("  max_batch_size: 0\n", "batching.max_batch_size: Input should be greater than"),
        ("  num_batch_threads: 0\n", "batching.num_batch_threads: Input should be greater"),
        ("  max_enqueued_batches: -2\n", "batching.max_enqueued_batches: Input should be"),
        ("  batch_timeout_micros: -1\n", "batching.batch_timeout_micros: Input should be"),
        ("  num_batch_threads: true\n", "batching.num_batch_threads: Input should be a valid int"),
        ("  max_batch_size: '8'\n", "batching.max_batch_size: Input should be a valid integer"),
        ("  max_batch_size: 2.5\n", "batching.max_batch_size: Input should be a valid integer"),
        ("  max_batch_size: 4294967296\n", "batching.max_batch_size: Input should be less"),
        ("  pad_variable_length_inputs: maybe\n", "pad_variable_length_inputs"),
        ("  batch_timeout: 500\n", "batching.batch_timeout: Extra inputs are not permitted"),
    ],
)
def test_model_yaml_batching_is_refused_as_tf_serving_would_refuse_it(
    tmp_path: Path, block: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _spec_with(tmp_path, block)
    assert message in str(caught.value)


def test_a_valid_block_keeps_what_it_sets_and_zero_timeout_is_allowed(tmp_path: Path) -> None:
    spec = _spec_with(
        tmp_path,
        "  max_batch_size: 8\n  allowed_batch_sizes: [2, 4, 8]\n  batch_timeout_micros: 0\n"
        "  pad_variable_length_inputs: true\n",
    )
    assert spec.batching is not None
    assert spec.batching.fields() == {
        "max_batch_size": 8,
        "batch_timeout_micros": 0,
        "allowed_batch_sizes": (2, 4, 8),
        "pad_variable_length_inputs": True,
    }
    assert load_model_spec(MODELS_DIR / "digits" / "model.yaml").batching is None


# -- precedence through render ------------------------------------------------------------------
def test_the_shipped_component_takes_its_threads_from_the_cpu_request(
    tree: Callable[..., Path],
) -> None:
    big = _render("2x-8cpu-batching")  # 7500m
    assert _params(big) == {
        "max_batch_size": 128,
        "batch_timeout_micros": 0,
        "max_enqueued_batches": 8,
        "num_batch_threads": 8,
    }
    assert _source_of(big, "num_batch_threads") == "CPU request 7500m, rounded up"
    assert _source_of(big, "max_enqueued_batches") == "= num_batch_threads (online serving)"
    assert _source_of(big, "max_batch_size") == "overlay's batching.config"
    small = _render("local-batching", kustomize_dir=tree("local-batching"))  # 500m
    assert (_params(small)["num_batch_threads"], _params(small)["max_enqueued_batches"]) == (1, 1)


def test_model_yaml_wins_over_the_overlays_file_which_wins_over_the_pod() -> None:
    # local-1x500m-batching replaces the component's file: max 32, 2 enqueued, 1 thread.
    rendered = _render(
        "local-1x500m-batching",
        Batching(
            max_batch_size=8,
            allowed_batch_sizes=[2, 4, 8],
            batch_timeout_micros=500,
            pad_variable_length_inputs=True,
        ),
    )
    assert _params(rendered) == {
        "max_batch_size": 8,
        "batch_timeout_micros": 500,
        "max_enqueued_batches": 2,
        "num_batch_threads": 1,
        "allowed_batch_sizes": [2, 4, 8],
        "pad_variable_length_inputs": True,
    }
    sources = {f: _source_of(rendered, f) for f in ("max_batch_size", "max_enqueued_batches")}
    assert sources == {
        "max_batch_size": "model.yaml",
        "max_enqueued_batches": "overlay's batching.config",
    }


def test_max_enqueued_batches_follows_the_num_batch_threads_in_effect(
    warnings_logged: pytest.LogCaptureFixture,
) -> None:
    rendered = _render("2x-8cpu-batching", Batching(num_batch_threads=3))
    assert (_params(rendered)["num_batch_threads"], _params(rendered)["max_enqueued_batches"]) == (
        3,
        3,
    )
    assert not [r for r in warnings_logged.records if r.levelno >= logging.WARNING]
    oversubscribed = _render("2x-8cpu-batching", Batching(num_batch_threads=16))
    assert _params(oversubscribed)["num_batch_threads"] == 16
    assert any(
        "num_batch_threads 16 (model.yaml) exceeds the 8 core(s)" in r.getMessage()
        for r in warnings_logged.records
    )


def test_max_batch_size_from_model_yaml_takes_the_allowed_sizes_with_it(
    tree: Callable[..., Path],
) -> None:
    root = tree(
        "padded",
        "max_batch_size { value: 32 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 16\n"
        'allowed_batch_sizes: 32\nthread_pool_name { value: "batch_pool" }\n',
    )
    overlay_only = _params(_render("padded", kustomize_dir=root))
    assert overlay_only["allowed_batch_sizes"] == [8, 16, 32]
    smaller = _render("padded", Batching(max_batch_size=8), kustomize_dir=root)
    assert _params(smaller)["max_batch_size"] == 8
    assert "allowed_batch_sizes" not in _params(smaller)  # [8, 16, 32] would not load
    # Fields render does not manage are kept.
    assert 'thread_pool_name { value: "batch_pool" }' in _batching_config(smaller)[1]
    own = _render(
        "padded", Batching(max_batch_size=16, allowed_batch_sizes=[4, 16]), kustomize_dir=root
    )
    assert _params(own)["allowed_batch_sizes"] == [4, 16]
    # Other fields still come from the overlay, or the pod.
    assert _params(own)["num_batch_threads"] == 1


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            "max_batch_size { value: 32 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 16\n",
            "the last of allowed_batch_sizes [8, 16] must equal max_batch_size (32)",
        ),
        ("allowed_batch_sizes: 8\n", "max_batch_size (1000)"),  # TF Serving's default
        ("num_batch_threads { value: 0 }\n", "num_batch_threads 0 (overlay's batching.config)"),
        ("batch_timeout_micros { value: -5 }\n", "batch_timeout_micros -5"),
        ("max_batch_size { value: 8 }\nbogus_field: 1\n", "not a valid BatchingParameters"),
    ],
)
def test_an_overlay_file_tf_serving_would_refuse_fails_the_render(
    tree: Callable[..., Path], config: str, message: str
) -> None:
    root = tree("broken", config)
    with pytest.raises((RenderError, ConfigError)) as caught:
        _render("broken", kustomize_dir=root)
    assert message in str(caught.value)


def test_an_overlay_without_batching_ignores_the_block_with_a_warning(
    warnings_logged: pytest.LogCaptureFixture,
) -> None:
    plain = _render("local")
    with_block = _render("local", Batching(max_batch_size=8))
    assert with_block.yaml_text == plain.yaml_text
    assert not any(
        o["kind"] == "ConfigMap" and "batching" in o["metadata"]["name"] for o in plain.objects
    )
    warnings = [r.getMessage() for r in warnings_logged.records if r.levelno == logging.WARNING]
    assert any("overlay local does not enable it" in w and "ignored" in w for w in warnings)


def test_the_configmap_name_follows_its_content_and_both_tracks_mount_it() -> None:
    first = _render("local-1x500m-batching", Batching(max_batch_size=8))
    second = _render("local-1x500m-batching", Batching(max_batch_size=16))
    again = _render("local-1x500m-batching", Batching(max_batch_size=8))
    name, _ = _batching_config(first)
    assert name.startswith("digits-serving-batching-")
    assert name != _batching_config(second)[0]  # a change rolls the pods
    assert first.yaml_text == again.yaml_text  # deterministic
    config_map = next(o for o in first.objects if o["metadata"]["name"] == name)
    assert config_map["metadata"]["labels"]["app.kubernetes.io/instance"] == "digits"
    assert (
        sum(
            1
            for o in first.objects
            if o["kind"] == "ConfigMap" and "batching" in o["metadata"]["name"]
        )
        == 1
    )


def test_the_render_command_applies_the_model_config(
    cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    model_yaml = tmp_path / "model.yaml"
    model_yaml.write_text(DIGITS_YAML + "batching:\n  max_batch_size: 4\n  num_batch_threads: 2\n")
    out = tmp_path / "manifests.yaml"
    args = ["render", "--overlay", "local-1x500m-batching", "--image", IMAGE, "--out", out]
    result = cli(*args, "--model-config", model_yaml, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["model"] == "digits"  # from the model.yaml
    objects = [o for o in yaml.safe_load_all(out.read_text()) if o]
    text = next(o for o in objects if "batching" in o["metadata"]["name"])["data"][
        "batching.config"
    ]
    assert "max_batch_size { value: 4 }  # model.yaml" in text
    assert "num_batch_threads { value: 2 }  # model.yaml" in text
    mismatch = cli(*args, "--model-config", model_yaml, "--model", "resnet50", "--json")
    assert mismatch.exit_code == 2
    assert "describes model 'digits'" in str(mismatch.json()["error"])
