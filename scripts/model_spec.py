"""``models/NAME/model.yaml``: the per-model settings (pydantic, validated once).

Kept apart from :mod:`scripts.config` so that commands which need no model
settings do not pay for importing pydantic.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    model_validator,
)

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


# TF Serving replays at most this many warm-up records (WarmupConsts::kMaxNumRecords).
MAX_WARMUP_RECORDS = 1000
# Warm-up records `package` writes by default. The first call pays for TensorFlow's lazy
# initialisation and one record takes it at load time (first request after readiness:
# digits 29 → 3 ms, ResNet50 440 → 33 ms); 10 copies of the same sample bought nothing
# more and cost ResNet50 0.3 s more load (docs/benchmarks.md, "Model warm-up").
DEFAULT_WARMUP_REQUESTS = 1


class WarmupSettings(_Strict):
    """TF Serving warm-up records that ``package`` writes from ``sample_request``."""

    enabled: bool = True
    requests: int = Field(
        DEFAULT_WARMUP_REQUESTS,
        ge=1,
        le=MAX_WARMUP_RECORDS,
        description="records (copies of sample_request) in assets.extra/tf_serving_warmup_requests",
    )


# TF Serving reads max_batch_size and allowed_batch_sizes into C++ `int`s.
_INT32_MAX = 2**31 - 1
_BatchSize = Annotated[StrictInt, Field(ge=1, le=_INT32_MAX)]


def allowed_sizes_problem(allowed: Sequence[int], max_batch_size: int) -> str | None:
    """Why TF Serving would refuse these ``allowed_batch_sizes``, or None.

    They must be positive and strictly increasing (a batch is padded up to the first
    allowed size that holds it), and the last must equal ``max_batch_size``: otherwise
    the model fails to load ("Last entry in allowed_batch_sizes must match
    max_batch_size").
    """
    if any(size < 1 for size in allowed):
        return f"allowed_batch_sizes {list(allowed)} must all be positive"
    if any(b <= a for a, b in itertools.pairwise(allowed)):
        return f"allowed_batch_sizes {list(allowed)} must be strictly increasing"
    if allowed and allowed[-1] != max_batch_size:
        return (
            f"the last of allowed_batch_sizes {list(allowed)} must equal max_batch_size "
            f"({max_batch_size}): TF Serving refuses to load the model otherwise"
        )
    return None


class Batching(_Strict):
    """TF Serving's ``BatchingParameters`` for this model (``batching:``), all optional.

    Applied by ``render`` when the overlay enables batching (docs/manifests.md,
    "Batching"): a field set here wins over the overlay's ``batching.config``, which wins
    over the defaults derived from the pod's CPU request.
    """

    max_batch_size: _BatchSize | None = None
    # 0 is TF Serving's advice to start with on CPU (then 1–10 ms).
    batch_timeout_micros: Annotated[StrictInt, Field(ge=0)] | None = None
    # TF Serving rewrites 0 to 1; a full queue answers UNAVAILABLE (HTTP 503).
    max_enqueued_batches: Annotated[StrictInt, Field(ge=1)] | None = None
    num_batch_threads: Annotated[StrictInt, Field(ge=1)] | None = None
    allowed_batch_sizes: list[_BatchSize] | None = Field(None, min_length=1)
    pad_variable_length_inputs: StrictBool | None = None

    @model_validator(mode="after")
    def _allowed_sizes_fit(self) -> Batching:
        if self.allowed_batch_sizes is None:
            return self
        if self.max_batch_size is None:
            # The two travel together: the overlay's max_batch_size may change under them.
            raise ValueError(
                "allowed_batch_sizes needs max_batch_size in the same batching block "
                f"(set max_batch_size: {self.allowed_batch_sizes[-1]})"
            )
        problem = allowed_sizes_problem(self.allowed_batch_sizes, self.max_batch_size)
        if problem:
            raise ValueError(problem)
        return self

    def fields(self) -> dict[str, int | bool | tuple[int, ...]]:
        """The fields this block sets (BatchingParameters names), in proto order."""
        values = self.model_dump(exclude_none=True)
        if "allowed_batch_sizes" in values:
            values["allowed_batch_sizes"] = tuple(values["allowed_batch_sizes"])
        return values


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
    # Warm-up records for TF Serving, written into the release archive by `package`.
    warmup: WarmupSettings = Field(default_factory=WarmupSettings)
    # TF Serving's BatchingParameters when the overlay enables batching (render applies it).
    batching: Batching | None = None

    @model_validator(mode="after")
    def _warmup_needs_a_sample(self) -> ModelSpec:
        # Only a warmup block that was written out asks for records; by default a model
        # without sample_request is packaged without them.
        if "warmup" in self.model_fields_set and self.warmup.enabled and not self.sample_request:
            raise ValueError(
                "warmup is enabled but there is no sample_request to make its records from "
                "(add sample_request, or set warmup.enabled: false)"
            )
        return self


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
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" if err["loc"] else err["msg"]
        for err in exc.errors()
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
