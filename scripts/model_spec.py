"""``models/NAME/model.yaml``: the per-model settings (pydantic, validated once).

Kept apart from :mod:`scripts.config` so that commands which need no model
settings do not pay for importing pydantic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scripts.config import MODELS_DIR
from scripts.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SLOs(_Strict):
    """Absolute service-level objectives for the promotion gate."""

    latency_p50_ms: float = Field(gt=0)
    latency_p95_ms: float = Field(gt=0)
    latency_p99_ms: float = Field(gt=0)
    error_ratio_max: float = Field(ge=0, le=1)
    throughput_min_fraction: float = Field(gt=0, le=1)
    min_samples: int = Field(ge=1)


class LoadProfile(_Strict):
    """One Locust load shape: concurrent users, total target rate, durations."""

    users: int = Field(ge=1)
    rate: float = Field(gt=0, description="target requests per second, all users together")
    duration_s: float = Field(gt=0)
    warmup_s: float = Field(ge=0)


class ModelSpec(_Strict):
    """``models/NAME/model.yaml``: everything the pipeline knows about one model."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    signature: str = "serving_default"
    description: str = ""
    # A REST predict body; without one the load test makes one from the served signature.
    sample_request: dict[str, Any] | None = None
    base_image: str | None = None  # TF Serving base for this model (default: the pinned one)
    slos: SLOs
    load_profiles: dict[str, LoadProfile]
    # The gate's dry-run metrics and baseline rules (docs/gate.md); validated by
    # scripts.gate.verdict.load_rules, which reads this file too.
    gate: dict[str, Any] | None = None


def load_model_spec(path: Path) -> ModelSpec:
    """Read and validate a model.yaml; raise ConfigError naming the bad field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"model settings file {path} does not exist",
            cause="the model has no models/<name>/model.yaml",
            fix="create it (see models/digits/model.yaml) or pass the right --model",
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{path} is not valid YAML: {exc}",
            cause="a syntax error in the file",
            fix="fix the YAML syntax at the position shown",
        ) from exc
    try:
        return ModelSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            f"{path} is invalid: {validation_problems(exc)}",
            cause="a missing, misspelt or out-of-range setting",
            fix="compare with models/digits/model.yaml",
        ) from exc


def validation_problems(exc: ValidationError) -> str:
    """A pydantic error as `field.path: message; …` for a ConfigError."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
    )


class ProfileOverride(_Strict):
    """Part of a load profile: what an overlay's ``loadtest.yaml`` may change."""

    users: int | None = Field(None, ge=1)
    rate: float | None = Field(None, gt=0)
    duration_s: float | None = Field(None, gt=0)
    warmup_s: float | None = Field(None, ge=0)


class OverlayLoadTest(_Strict):
    """``kustomize/overlays/NAME/loadtest.yaml``: per-overlay load profile overrides.

    A bigger overlay can take (and should be tested at) more load than the model's
    defaults; the file is not a Kustomize resource, so ``kubectl kustomize`` ignores it.
    """

    profiles: dict[str, ProfileOverride] = Field(default_factory=dict)


def overlay_profile_overrides(path: Path, profile: str) -> dict[str, Any]:
    """The overrides an overlay's ``loadtest.yaml`` sets for ``profile`` (none: {})."""
    if not path.is_file():
        return {}
    try:
        parsed = OverlayLoadTest.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    except ValidationError as exc:
        raise ConfigError(
            f"{path} is invalid: {validation_problems(exc)}",
            fix="profiles: {smoke: {users, rate, duration_s, warmup_s}} (any subset)",
        ) from exc
    override = parsed.profiles.get(profile)
    return override.model_dump(exclude_none=True) if override else {}


def resolve_load_profile(spec: ModelSpec, profile: str, *layers: dict[str, Any]) -> LoadProfile:
    """``spec``'s profile with each layer of overrides applied in turn, validated."""
    if profile not in spec.load_profiles:
        raise ConfigError(
            f"model {spec.name} has no load profile {profile!r}",
            fix=f"pick one of: {', '.join(sorted(spec.load_profiles))}",
        )
    merged = spec.load_profiles[profile].model_dump()
    for layer in layers:
        merged.update(layer)
    try:
        return LoadProfile.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(
            f"load profile {profile!r} of model {spec.name} is invalid after overrides: "
            f"{validation_problems(exc)}",
            fix="check --users/--rate/--duration/--warmup and the overlay's loadtest.yaml",
        ) from exc


def model_spec_for(name: str, models_dir: Path = MODELS_DIR) -> ModelSpec:
    return load_model_spec(models_dir / name / "model.yaml")
