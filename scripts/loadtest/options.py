"""The load test's options, parsed once: which profile, overrides, protocol, processes.

Precedence of a profile's values: ``models/NAME/model.yaml`` → the overlay's
``kustomize/overlays/NAME/loadtest.yaml`` → these overrides (the command line).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scripts.config import KUSTOMIZE_DIR
from scripts.loadtest.job_spec import GeneratorOptions

if TYPE_CHECKING:
    from scripts.loadtest.runner import LoadTestRequest
    from scripts.model_spec import LoadProfile, ModelSpec


@dataclass(frozen=True)
class LoadOptions:
    profile: str = "smoke"
    users: int | None = None
    rate: float | None = None
    duration_s: float | None = None
    warmup_s: float | None = None
    protocol: str = "rest"  # rest | grpc
    processes: int = 1
    generator: str | None = None  # job | direct; None: job with a target, else direct
    job: GeneratorOptions = field(default_factory=GeneratorOptions)

    def uses_job(self, *, with_target: bool) -> bool:
        return self.generator == "job" if self.generator else with_target

    def overrides(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (
                ("users", self.users),
                ("rate", self.rate),
                ("duration_s", self.duration_s),
                ("warmup_s", self.warmup_s),
            )
            if v is not None
        }


def resolve_profile(
    options: LoadOptions,
    spec: ModelSpec,
    overlay: str | None,
    kustomize_dir: Path = KUSTOMIZE_DIR,
) -> LoadProfile:
    """model.yaml's profile → the overlay's loadtest.yaml → the options' overrides."""
    from scripts.model_spec import overlay_profile_overrides, resolve_load_profile

    from_overlay: dict[str, Any] = {}
    if overlay:
        from_overlay = overlay_profile_overrides(
            kustomize_dir / "overlays" / overlay / "loadtest.yaml", options.profile
        )
    return resolve_load_profile(spec, options.profile, from_overlay, options.overrides())


def load_test_request(
    options: LoadOptions,
    spec: ModelSpec,
    tracks: dict[str, list[str]],
    out: Path,
    *,
    overlay: str | None,
    model: str | None = None,
    kustomize_dir: Path = KUSTOMIZE_DIR,
) -> LoadTestRequest:
    """What `loadtest` and the pipeline send: the model's payload and resolved profile.

    ``model`` is the served model name when it differs from the model.yaml's.
    """
    from scripts.loadtest.runner import LoadTestRequest

    return LoadTestRequest(
        tracks=tracks,
        model=model or spec.name,
        payload=spec.sample_request,
        signature_name=spec.signature,
        profile=resolve_profile(options, spec, overlay, kustomize_dir),
        out=out,
        processes=options.processes,
        protocol=options.protocol,
    )
