"""From the event that started a workflow to what ``deliver.yml`` should deliver.

* A published release (or pre-release): its own id and tag, never "latest". The tag
  names the model and version (``NAME-vVERSION``); the release must carry
  ``NAME-VERSION.tar.gz`` and ``NAME-VERSION.tar.gz.sha256`` (polled for: assets
  can be uploaded after the event fires). A pre-release goes to the pre-release
  environment (staging) only; a full release to the configured environment.
* A manual dispatch: model, version, overlay, environment, protocol, dry run, gate
  mode. When that version was delivered to the environment successfully before, its
  image digest is delivered again (a deliberate rollback: no rebuild); ``previous``
  means the release before the live one. Otherwise it is built from its release.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from github.GitRelease import GitRelease
from github.GitReleaseAsset import GitReleaseAsset

from scripts.config import KUSTOMIZE_DIR, Settings
from scripts.errors import ArtifactNotFoundError, ConfigError, IntegrityError
from scripts.github.client import GitHubApi
from scripts.github.deployments import DeliveryPayload, DeploymentRecords
from scripts.github.events import DispatchEvent, Event, ReleaseEvent
from scripts.github.tags import ReleaseModel, parse_checksum_file, parse_tag, parse_version
from scripts.log import log

PROTOCOLS = ("rest", "grpc")
GATE_MODES = ("baseline", "slo-only")


@dataclass(frozen=True)
class DeliveryPlan:
    """The inputs of ``deliver.yml``, resolved."""

    model: str
    version: int
    environment: str
    overlay: str
    source: str = ""  # github://… of the archive; "" when image is set
    sha256: str = ""
    image: str = ""  # a digest delivered before (deliberate rollback): no build
    protocol: str = "rest"
    dry_run: bool = False
    gate_mode: str = "baseline"
    release_id: str = ""
    tag: str = ""

    def outputs(self) -> dict[str, str]:
        return {
            key.replace("_", "-"): (str(value).lower() if isinstance(value, bool) else str(value))
            for key, value in asdict(self).items()
        }


@dataclass(frozen=True)
class ResolveOptions:
    environment: str = "production"  # where full releases go
    prerelease_environment: str = "staging"
    overlay: str | None = None  # default: the overlay named like the environment
    asset_wait_s: float = 300.0


def _overlay_for(environment: str, requested: str | None) -> str:
    overlay = requested or environment
    if not (KUSTOMIZE_DIR / "overlays" / overlay / "kustomization.yaml").is_file():
        known = sorted(
            p.parent.name for p in (KUSTOMIZE_DIR / "overlays").glob("*/kustomization.yaml")
        )
        raise ConfigError(
            f"no overlay {overlay!r} for environment {environment!r}",
            cause="releases deploy with the overlay named like the environment unless the "
            "repository variable RELEASE_OVERLAY names another",
            fix=f"add kustomize/overlays/{overlay}, or set RELEASE_OVERLAY to one of: "
            f"{', '.join(known)}",
        )
    return overlay


def release_assets(
    api: GitHubApi, release: GitRelease, wanted: ReleaseModel, wait_s: float
) -> tuple[GitReleaseAsset, str]:
    """The archive asset and the sha256 its checksum asset states (waiting for uploads)."""
    deadline = time.monotonic() + wait_s
    delay = 2.0
    while True:
        assets = {a.name: a for a in api.assets(release) if a.state == "uploaded"}
        archive, checksum = assets.get(wanted.archive), assets.get(wanted.checksum)
        if archive is not None and checksum is not None:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            missing = [n for n in (wanted.archive, wanted.checksum) if n not in assets]
            raise ArtifactNotFoundError(
                f"release {release.tag_name} lacks {' and '.join(missing)} after waiting "
                f"{wait_s:.0f} s (it has: {', '.join(sorted(assets)) or 'no assets'})",
                cause="the assets were not uploaded, or are named differently",
                fix=f"upload {wanted.archive} and {wanted.checksum} (python -m scripts package "
                f"writes both), then re-run the workflow",
            )
        log.info("waiting for %s on %s (%.0f s left)", wanted.archive, release.tag_name, remaining)
        time.sleep(min(delay, remaining))
        delay = min(delay * 1.5, 20.0)
    sha256 = parse_checksum_file(api.asset_text(checksum), wanted.archive)
    digest = (archive.digest or "").removeprefix("sha256:").lower()
    if digest and digest != sha256:
        raise IntegrityError(
            f"{wanted.checksum} says sha256:{sha256}, but GitHub's digest of {wanted.archive} "
            f"is sha256:{digest}",
            cause="the archive and the checksum come from different builds, or an asset "
            "was replaced",
            fix="upload the archive and the checksum from the same `package` run",
        )
    return archive, sha256


def _from_release(
    api: GitHubApi, release: GitRelease, wanted: ReleaseModel, wait_s: float
) -> tuple[str, str]:
    archive, sha256 = release_assets(api, release, wanted, wait_s)
    source = f"github://{api.full_name}/releases/{release.id}/{archive.name}"
    return source, sha256


def resolve_release(api: GitHubApi, event: ReleaseEvent, options: ResolveOptions) -> DeliveryPlan:
    release_ref = event.release
    if release_ref.draft:
        raise ConfigError(
            f"release {release_ref.tag_name} is a draft",
            fix="publish it; drafts are never delivered",
        )
    wanted = parse_tag(release_ref.tag_name)
    environment = options.prerelease_environment if release_ref.prerelease else options.environment
    release = api.release(release_ref.id)  # the event's own release, by id: never "latest"
    source, sha256 = _from_release(api, release, wanted, options.asset_wait_s)
    return DeliveryPlan(
        model=wanted.model,
        version=wanted.version,
        environment=environment,
        overlay=_overlay_for(environment, options.overlay),
        source=source,
        sha256=sha256,
        release_id=str(release_ref.id),
        tag=release_ref.tag_name,
    )


def resolve_dispatch(
    api: GitHubApi, settings: Settings, event: DispatchEvent, options: ResolveOptions
) -> DeliveryPlan:
    model = event.text("model")
    environment = event.text("environment") or options.environment
    protocol = event.text("protocol", "rest") or "rest"
    gate_mode = event.text("gate-mode", "baseline") or "baseline"
    if protocol not in PROTOCOLS or gate_mode not in GATE_MODES:
        raise ConfigError(
            f"unknown protocol {protocol!r} or gate mode {gate_mode!r}",
            fix=f"protocol: {', '.join(PROTOCOLS)}; gate-mode: {', '.join(GATE_MODES)}",
        )
    if not model:
        raise ConfigError("the dispatch names no model", fix="choose a model input")
    version_text = event.text("version")
    records = DeploymentRecords(api, settings.github)
    overlay = event.text("overlay")
    common = {
        "environment": environment,
        "overlay": _overlay_for(
            environment, overlay if overlay and overlay != "auto" else options.overlay
        ),
        "protocol": protocol,
        "dry_run": event.flag("dry-run"),
        "gate_mode": gate_mode,
    }
    if version_text.strip().lower() == "previous":
        earlier = records.last_successful(environment, model)
        if earlier is None:
            raise ArtifactNotFoundError(
                f"no earlier successful deployment of {model} to {environment}",
                cause="nothing to roll back to: fewer than two successful deliveries",
                fix="deploy a version by number instead",
            )
        return _known(earlier, common)
    wanted = parse_tag(parse_version(version_text, model).tag)  # and models/NAME exists
    delivered = records.last_successful(environment, model, version=wanted.version)
    if delivered is not None:
        log.info(
            "%s v%d was delivered to %s before: delivering its image %s again",
            model,
            wanted.version,
            environment,
            delivered.image,
        )
        return _known(delivered, common)
    release = api.release(wanted.tag)
    source, sha256 = _from_release(api, release, wanted, options.asset_wait_s)
    return DeliveryPlan(
        model=model,
        version=wanted.version,
        source=source,
        sha256=sha256,
        release_id=str(release.id),
        tag=wanted.tag,
        **common,  # type: ignore[arg-type]
    )


def _known(payload: DeliveryPayload, common: dict[str, object]) -> DeliveryPlan:
    return DeliveryPlan(
        model=payload.model,
        version=payload.version,
        image=payload.image,
        sha256=payload.archive_sha256 or "",
        tag=f"{payload.model}-v{payload.version}",
        **common,  # type: ignore[arg-type]
    )


def resolve(
    api: GitHubApi, settings: Settings, event: Event, options: ResolveOptions
) -> DeliveryPlan:
    """The delivery an event asks for (ConfigError for events that ask for none)."""
    if isinstance(event, ReleaseEvent):
        return resolve_release(api, event, options)
    if isinstance(event, DispatchEvent):
        return resolve_dispatch(api, settings, event, options)
    raise ConfigError(
        "a comment event does not resolve to a delivery",
        fix="use `github resolve` from the release and manual-deploy workflows",
    )
