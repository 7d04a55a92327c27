"""Typed configuration, resolved once and passed down.

Precedence, lowest to highest: built-in defaults → files (``models/NAME/model.yaml``,
see :mod:`scripts.model_spec`) → environment (``Settings.from_env``) → command-line
flags. Stages receive these frozen objects; nothing below the CLI reads ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scripts.errors import ConfigError
from scripts.log import CIEnvironment

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"
KUSTOMIZE_DIR = REPO_ROOT / "kustomize"
DEFAULT_GITHUB_API = "https://api.github.com"
DEFAULT_STATE_DIR = Path(".pipeline/local")  # the local target's state, replicas and logs


@dataclass(frozen=True)
class GitHubContext:
    """The workflow run we are part of (the ``GITHUB_*`` variables the runner sets)."""

    repository: str | None = None  # OWNER/REPO
    server_url: str = "https://github.com"
    run_id: str | None = None
    run_attempt: int = 1
    sha: str | None = None
    ref: str | None = None
    event_name: str | None = None
    event_path: Path | None = None
    workflow: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GitHubContext:
        attempt = env.get("GITHUB_RUN_ATTEMPT", "1") or "1"
        return cls(
            repository=env.get("GITHUB_REPOSITORY") or None,
            server_url=(env.get("GITHUB_SERVER_URL") or "https://github.com").rstrip("/"),
            run_id=env.get("GITHUB_RUN_ID") or None,
            run_attempt=int(attempt) if attempt.isdigit() else 1,
            sha=env.get("GITHUB_SHA") or None,
            ref=env.get("GITHUB_REF") or None,
            event_name=env.get("GITHUB_EVENT_NAME") or None,
            event_path=Path(env["GITHUB_EVENT_PATH"]) if env.get("GITHUB_EVENT_PATH") else None,
            workflow=env.get("GITHUB_WORKFLOW") or None,
        )

    @property
    def run_url(self) -> str | None:
        """The workflow run's page (the deployment records' ``log_url``)."""
        if not (self.repository and self.run_id):
            return None
        return f"{self.server_url}/{self.repository}/actions/runs/{self.run_id}"


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
    run_id: str | None = None  # GITHUB_RUN_ID: who holds the deploy lease
    kubeconfig: Path | None = None
    github: GitHubContext = field(default_factory=GitHubContext)
    # PyGithub paces requests as GitHub asks (0.25 s apart, writes 1 s apart); 0 turns the
    # pacing off, for the fake GitHub API in tests (TF_PIPELINE_GITHUB_PACING).
    github_pacing: float = 1.0

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
            run_id=env.get("GITHUB_RUN_ID") or None,
            kubeconfig=Path(env["KUBECONFIG"].split(":")[0]) if env.get("KUBECONFIG") else None,
            github=GitHubContext.from_env(env),
            github_pacing=_float(env, "TF_PIPELINE_GITHUB_PACING", 1.0),
        )


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "")
    if not text:
        return default
    try:
        return float(text)
    except ValueError as exc:
        raise ConfigError(f"{name}={text!r} is not a number", fix=f"unset {name}") from exc


def _docker_config(env: Mapping[str, str]) -> Path:
    """``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``, as the docker CLI does."""
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    return Path(env.get("HOME", "~")).expanduser() / ".docker" / "config.json"
