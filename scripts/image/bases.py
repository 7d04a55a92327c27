"""The serving bases catalog (``kustomize/bases.yaml``) and which base a build uses.

A *base* is the TF Serving image a model is baked into. The catalog names each one,
says which CPU features its binary needs (``-march=cascadelake`` code dies with SIGILL
on a CPU without AVX-512 VNNI) and which node families it is built for, and lists what
every CPU platform of a node family guarantees. An overlay names the base it serves
with in ``kustomize/overlays/NAME/serving-base.yaml``.

Which base a build uses, first match wins (:func:`choose_base`):

1. ``--base NAME|REF`` on the command line;
2. ``base_image:`` in ``models/NAME/model.yaml`` (a catalog name or an image reference);
3. the overlay's ``serving-base.yaml``;
4. the catalog's ``default:`` (local OCI-layout builds: an empty base instead).

A reference that is not a catalog name is an image whose CPU needs are unknown: it is
built and deployed as given, without node pinning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from scripts.config import KUSTOMIZE_DIR
from scripts.errors import ConfigError, UsageError

CATALOG_FILE = "bases.yaml"
OVERLAY_BASE_FILE = "serving-base.yaml"
GKE_FAMILY_LABEL = "cloud.google.com/machine-family"
# Node Feature Discovery's CPUID labels: feature.node.kubernetes.io/cpu-cpuid.AVX512VNNI=true
NFD_CPUID_PREFIX = "feature.node.kubernetes.io/cpu-cpuid."

# Labels a built image carries (beside org.opencontainers.image.base.name/digest).
BASE_NAME_LABEL = "dev.tf-release-pipeline.base.name"
CPU_FEATURES_LABEL = "dev.tf-release-pipeline.base.cpu-features"
FAMILIES_LABEL = "dev.tf-release-pipeline.base.machine-families"
# Annotations render puts on every pod template that runs the image (diagnosis reads them).
BASE_ANNOTATION = "tf-release-pipeline.dev/serving-base"
CPU_FEATURES_ANNOTATION = "tf-release-pipeline.dev/cpu-features"
FAMILIES_ANNOTATION = "tf-release-pipeline.dev/machine-families"
NODE_FAMILY_LABEL_ANNOTATION = "tf-release-pipeline.dev/node-family-label"

_FEATURE = re.compile(r"^[a-z0-9_]+$")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def nfd_label(feature: str) -> str:
    """The NFD label that guarantees a /proc/cpuinfo feature (avx512_vnni → AVX512VNNI)."""
    return NFD_CPUID_PREFIX + feature.replace("_", "").upper()


class BaseBuild(BaseModel):
    """How the base-build workflow compiles TF Serving for this base."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tf_serving_version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    march: str = Field(pattern=r"^[a-z0-9-]+$")  # gcc/clang -march= value


class ServingBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    image: str | None = None  # registry reference (a repository when digest is set)
    digest: str | None = None  # pins `image`; null: not built yet
    env: dict[str, str] | None = None  # a local base: an empty image with this Env
    families: tuple[str, ...] = ()  # node families it is built for (render pins to them)
    cpu_features: tuple[str, ...] = ()  # what its binary needs, /proc/cpuinfo names
    build: BaseBuild | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ServingBase:
        if (self.image is None) == (self.env is None):
            raise ValueError("a base has either image: (a registry image) or env: (local)")
        if self.digest is not None and not _DIGEST.match(self.digest):
            raise ValueError(f"digest {self.digest!r} is not sha256:<64 hex>")
        bad = [f for f in self.cpu_features if not _FEATURE.match(f)]
        if bad:
            raise ValueError(f"cpu_features {bad} are not /proc/cpuinfo names (e.g. avx512_vnni)")
        if self.build is not None and self.image is None:
            raise ValueError("build: needs image: (the repository the workflow pushes to)")
        return self


class BaseCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int = Field(ge=1, le=1)
    default: str
    node_family_label: str = GKE_FAMILY_LABEL
    bases: dict[str, ServingBase]
    families: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_names(self) -> BaseCatalog:
        bad = [n for n in self.bases if not _NAME.match(n)]
        if bad:
            raise ValueError(f"base names {bad} must be lower-case DNS labels (≤ 40 characters)")
        if self.default not in self.bases:
            raise ValueError(f"default: {self.default!r} is not one of the bases")
        for name, base in self.bases.items():
            unknown = [f for f in base.families if f not in self.families]
            if unknown:
                raise ValueError(f"base {name} names families {unknown} not under families:")
            for family in base.families:
                lacking = set(base.cpu_features) - set(self.families[family])
                if lacking:
                    raise ValueError(
                        f"base {name} is built for {family}, whose CPUs lack "
                        f"{', '.join(sorted(lacking))}"
                    )
        return self


def load_catalog(kustomize_dir: Path = KUSTOMIZE_DIR) -> BaseCatalog:
    path = kustomize_dir / CATALOG_FILE
    if not path.is_file():
        # A kustomize tree without a catalog (an old checkout, a test tree): the stock
        # base alone, CPU needs unknown.
        from scripts.image.defaults import DEFAULT_BASE

        return BaseCatalog(
            version=1, default="stock", bases={"stock": ServingBase(image=DEFAULT_BASE)}
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return BaseCatalog.model_validate(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{path} is not valid YAML: {exc}", fix="fix the YAML syntax at the position shown"
        ) from exc
    except ValidationError as exc:
        from scripts.model_spec import validation_problems

        raise ConfigError(
            f"{path} is invalid: {validation_problems(exc)}",
            cause="a misspelt field, a family without its CPU features, or a bad digest",
            fix="compare with the bases catalog documented in docs/images.md",
        ) from exc


def overlay_base(overlay: str, kustomize_dir: Path = KUSTOMIZE_DIR) -> str | None:
    """The base an overlay names in its ``serving-base.yaml`` (None: it names none)."""
    path = kustomize_dir / "overlays" / overlay / OVERLAY_BASE_FILE
    if not path.is_file():
        return None
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}", fix="fix the YAML syntax") from exc
    if not isinstance(raw, dict) or set(raw) != {"base"} or not isinstance(raw["base"], str):
        raise ConfigError(
            f"{path} must hold exactly `base: NAME`",
            fix="name a base of kustomize/bases.yaml, e.g. `base: c2-cascadelake`",
        )
    return str(raw["base"])


@dataclass(frozen=True)
class ChosenBase:
    """The base one build uses, and why."""

    reference: str  # what the build resolves: REF, oci:DIR:TAG or scratch
    name: str | None  # the catalog's name; None for a plain reference
    source: str  # "--base", "model.yaml", "overlay NAME", "default", "local default"
    cpu_features: tuple[str, ...] = ()
    families: tuple[str, ...] = ()
    env: dict[str, str] | None = None  # a local base still to be written (local_base.py)

    @property
    def display(self) -> str:
        return self.name or self.reference

    def image_labels(self) -> dict[str, str]:
        labels = {BASE_NAME_LABEL: self.display}
        if self.name is not None:  # a catalog base: its needs are known, even when none
            labels[CPU_FEATURES_LABEL] = ",".join(self.cpu_features)
            labels[FAMILIES_LABEL] = ",".join(self.families)
        return labels

    def pod_annotations(self) -> dict[str, str]:
        annotations = {BASE_ANNOTATION: self.display}
        if self.name is not None:  # absent features: the base's needs are unknown
            annotations[CPU_FEATURES_ANNOTATION] = ",".join(self.cpu_features)
            if self.families:
                annotations[FAMILIES_ANNOTATION] = ",".join(self.families)
        return annotations

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "reference": self.reference,
            "source": self.source,
            "cpu_features": list(self.cpu_features),
            "families": list(self.families),
        }


def resolve_named(
    catalog: BaseCatalog, name: str, source: str, *, require_built: bool = True
) -> ChosenBase:
    """A catalog base as a build uses it; a build refuses one not built yet (render only
    needs its CPU needs: ``require_built=False``)."""
    base = catalog.bases[name]
    if base.env is not None:
        return ChosenBase(f"local-base:{name}", name, source, env=dict(base.env))
    reference = base.image or ""  # the validator: image when there is no env
    if base.build is not None:  # built by the base-build workflow: usable once pinned
        if base.digest is None and require_built:
            raise ConfigError(
                f"base {name} ({source}) has not been built yet: kustomize/bases.yaml has "
                "no digest for it",
                cause="the base-build workflow has not run for it, or its pull request "
                "is not merged",
                fix=f"run the `base image` workflow for {name} and merge its pull request "
                "(docs/images.md), or choose another base with --base",
            )
        reference = f"{reference}@{base.digest}" if base.digest else reference
    elif base.digest is not None:
        reference = f"{reference.split('@', 1)[0]}@{base.digest}"
    return ChosenBase(reference, name, source, base.cpu_features, base.families)


def choose_base(
    *,
    cli: str | None,
    model_base: str | None,
    overlay: str | None,
    kustomize_dir: Path = KUSTOMIZE_DIR,
    local_build: bool = False,
    require_built: bool = True,
) -> ChosenBase:
    """Which base a build uses (the module doc gives the order)."""
    catalog = load_catalog(kustomize_dir)
    candidates: list[tuple[str | None, str]] = [(cli, "--base"), (model_base, "model.yaml")]
    if overlay is not None:
        candidates.append((overlay_base(overlay, kustomize_dir), f"overlay {overlay}"))
    for value, source in candidates:
        if value is None:
            continue
        if value in catalog.bases:
            if local_build and source.startswith("overlay") and catalog.bases[value].env is None:
                break  # an overlay's cluster base is not what the local runtime serves with
            return resolve_named(catalog, value, source, require_built=require_built)
        if source.startswith("overlay"):
            raise ConfigError(
                f"overlay {overlay} names base {value!r}, which kustomize/bases.yaml "
                "does not define",
                fix=f"name one of: {', '.join(sorted(catalog.bases))}",
            )
        return ChosenBase(value, None, source)
    if local_build:
        from scripts.image.reference import SCRATCH

        return ChosenBase(SCRATCH, None, "local default")
    return resolve_named(catalog, catalog.default, "default", require_built=require_built)


def families_guaranteeing(catalog: BaseCatalog, features: tuple[str, ...]) -> list[str]:
    """The families whose every CPU has ``features``."""
    return sorted(f for f, have in catalog.families.items() if set(features) <= set(have))


def check_base_names(catalog: BaseCatalog, names: list[str]) -> None:
    unknown = [n for n in names if n not in catalog.bases]
    if unknown:
        raise UsageError(
            f"unknown base(s) {', '.join(unknown)}",
            fix=f"name bases of kustomize/bases.yaml: {', '.join(sorted(catalog.bases))}",
        )


def set_base_digest(path: Path, name: str, *, image: str, digest: str) -> str:
    """Rewrite ``image:`` and ``digest:`` of one base in the catalog file, keeping every
    comment and the layout (PyYAML would drop them); returns the new text.

    Written by hand: the file's own format is simple and fixed (two-space indented
    mapping entries), and a round-trip YAML library is not a dependency here.
    """
    if not _DIGEST.match(digest):
        raise UsageError(f"{digest!r} is not a sha256 digest", fix="pass sha256:<64 hex>")
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == f"  {name}:"), None)
    if start is None:
        raise ConfigError(f"{path} has no base {name!r}", fix="add it under bases:")
    done: set[str] = set()
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if line.strip() and not line.startswith("    "):
            break  # the next base, or the next top-level key
        for key, value in (("image", image), ("digest", digest)):
            if line.startswith(f"    {key}:"):
                lines[i] = f"    {key}: {value}\n"
                done.add(key)
    if done != {"image", "digest"}:
        raise ConfigError(
            f"base {name} in {path} lacks {' and '.join(sorted({'image', 'digest'} - done))}",
            fix="give it `image:` and `digest: null` lines (see the other built bases)",
        )
    text = "".join(lines)
    BaseCatalog.model_validate(yaml.safe_load(text))  # still a valid catalog
    return text
