"""The project's one error hierarchy.

Every failure a user can cause or meet is a :class:`PipelineError` carrying an
exit code and three parts: what is wrong, the likely cause, and the fix.
Only ``scripts.cli.main`` turns these into an exit status (the one exit point).

Exit codes are documented in README.md ("Exit codes"); keep the two in step.
"""

from __future__ import annotations

from typing import ClassVar


class PipelineError(Exception):
    """Root of every error the pipeline reports to a user.

    ``what`` says what is wrong, ``cause`` the likely cause, ``fix`` what to do.
    """

    exit_code: ClassVar[int] = 1
    kind: ClassVar[str] = "error"

    def __init__(self, what: str, *, cause: str = "", fix: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.cause = cause
        self.fix = fix

    def __str__(self) -> str:
        parts = [self.what]
        if self.cause:
            parts.append(f"Likely cause: {self.cause}")
        if self.fix:
            parts.append(f"Fix: {self.fix}")
        return "\n".join(parts)

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "exit_code": self.exit_code,
            "message": self.what,
            "cause": self.cause,
            "fix": self.fix,
        }


class UsageError(PipelineError):
    """The command line or its arguments are wrong."""

    exit_code = 2
    kind = "usage"


class ConfigError(PipelineError):
    """A configuration file (model.yaml, SLO file, overlay) is missing or invalid."""

    exit_code = 3
    kind = "config"


class ToolMissingError(PipelineError):
    """An external program the stage needs is not installed."""

    exit_code = 4
    kind = "tool-missing"


class ExternalCommandError(PipelineError):
    """An external program ran and failed."""

    exit_code = 5
    kind = "external-command"


class ArtifactNotFoundError(PipelineError):
    """The release, asset, object, URL or file does not exist (or not yet)."""

    exit_code = 10
    kind = "artifact-not-found"


class IntegrityError(PipelineError):
    """Downloaded bytes do not match the expected checksum or size."""

    exit_code = 11
    kind = "integrity"


class UnsafeArchiveError(PipelineError):
    """The archive is corrupt or breaks a safety rule (path escape, link, bomb...)."""

    exit_code = 12
    kind = "unsafe-archive"


class InvalidModelError(PipelineError):
    """The SavedModel is unreadable or lacks the required tag or signature."""

    exit_code = 13
    kind = "invalid-model"


class RemoteError(PipelineError):
    """A remote service kept failing (5xx, 429, resets) after all retries."""

    exit_code = 14
    kind = "remote"


class AuthError(PipelineError):
    """A remote service refused our credentials (401/403) or we have none."""

    exit_code = 15
    kind = "auth"


class PipelineTimeoutError(PipelineError):
    """A bounded wait ran out (asset upload, rollout, readiness)."""

    exit_code = 16
    kind = "timeout"


class ConflictError(PipelineError):
    """The destination already holds something different; refusing to overwrite."""

    exit_code = 17
    kind = "conflict"


class PreflightError(PipelineError):
    """A delivery's prerequisite is missing (``preflight`` lists each, with its fix)."""

    exit_code = 18
    kind = "preflight"


class RenderError(PipelineError):
    """The manifests could not be rendered, or an object fails its schema."""

    exit_code = 30
    kind = "render"


class PolicyError(PipelineError):
    """Rendered manifests break the deployment policy (digest pin, limits, probes...)."""

    exit_code = 31
    kind = "policy"


class PlacementError(PipelineError):
    """An image's CPU needs and where its pods may be scheduled disagree."""

    exit_code = 32
    kind = "placement"


class DeployError(PipelineError):
    """A rollout failed or never became ready; the message says why."""

    exit_code = 40
    kind = "deploy"


class LockError(PipelineError):
    """Another deploy holds this namespace's lease."""

    exit_code = 41
    kind = "locked"


class LoadGeneratorError(PipelineError):
    """The load generator (the in-cluster Job, or its local run) failed: no results."""

    exit_code = 53
    kind = "loadgen"


class BenchError(PipelineError):
    """A benchmark that could not measure any overlay."""

    exit_code = 60
    kind = "bench"
