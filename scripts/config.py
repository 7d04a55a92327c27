"""Typed configuration, resolved once and passed down.

Precedence, lowest to highest: built-in defaults → files (``models/NAME/model.yaml``)
→ environment (``Settings.from_env``) → command-line flags. Stages receive these
frozen objects; nothing below the CLI reads ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scripts.errors import ConfigError
from scripts.log import CIEnvironment

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"
DEFAULT_GITHUB_API = "https://api.github.com"


@dataclass(frozen=True)
class Settings:
    """Values taken from the environment, once, at start-up."""

    github_token: str | None = None
    github_api_url: str = DEFAULT_GITHUB_API
    storage_emulator_host: str | None = None
    source_date_epoch: int = 0
    ci: CIEnvironment = field(default_factory=CIEnvironment)
    docker_config: Path | None = None
    docker_host: str | None = None
    cache_dir: Path = Path(".cache")
    repository_url: str | None = None  # where the source lives, for image labels
    revision: str | None = None  # the commit being built

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        epoch_text = env.get("SOURCE_DATE_EPOCH", "0") or "0"
        try:
            epoch = int(epoch_text)
        except ValueError as exc:
            raise ConfigError(
                f"SOURCE_DATE_EPOCH={epoch_text!r} is not an integer",
                cause="the variable is set to a date string",
                fix="set it to seconds since 1970, e.g. $(git log -1 --format=%ct)",
            ) from exc
        return cls(
            github_token=env.get("GITHUB_TOKEN") or env.get("GH_TOKEN") or None,
            github_api_url=(env.get("GITHUB_API_URL") or DEFAULT_GITHUB_API).rstrip("/"),
            storage_emulator_host=env.get("STORAGE_EMULATOR_HOST") or None,
            source_date_epoch=epoch,
            ci=CIEnvironment.from_env(dict(env)),
            docker_config=_docker_config(env),
            docker_host=env.get("DOCKER_HOST") or None,
            cache_dir=Path(env.get("XDG_CACHE_HOME") or Path(env.get("HOME", ".")) / ".cache")
            / "tf-release-pipeline",
            repository_url=(
                f"{env.get('GITHUB_SERVER_URL', 'https://github.com')}/{env['GITHUB_REPOSITORY']}"
                if env.get("GITHUB_REPOSITORY")
                else None
            ),
            revision=env.get("GITHUB_SHA") or None,
        )


def _docker_config(env: Mapping[str, str]) -> Path:
    """``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``, as the docker CLI does."""
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    return Path(env.get("HOME", "~")).expanduser() / ".docker" / "config.json"


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
    sample_request: dict[str, Any]
    base_image: str | None = None  # TF Serving base for this model (default: the pinned one)
    slos: SLOs
    load_profiles: dict[str, LoadProfile]


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
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(
            f"{path} is invalid: {problems}",
            cause="a missing, misspelt or out-of-range setting",
            fix="compare with models/digits/model.yaml",
        ) from exc


def model_spec_for(name: str, models_dir: Path = MODELS_DIR) -> ModelSpec:
    return load_model_spec(models_dir / name / "model.yaml")
