"""Where a deploy goes: the target's typed configuration and the table that opens one.

``TargetConfig`` is parsed once from the command line (and ``Settings``); the
pipeline, the deploy commands and ``preflight`` open a target from it with
:func:`open_target`, chosen by name from :data:`TARGETS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from scripts.config import DEFAULT_STATE_DIR, KUSTOMIZE_DIR, Settings
from scripts.deploy.target import DeployTarget
from scripts.errors import UsageError
from scripts.log import log
from scripts.manifests.render import DEFAULT_MODEL

if TYPE_CHECKING:
    from scripts.deploy.kube_api import KubeApi

DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class TargetConfig:
    """Everything a deploy target needs besides the manifests."""

    kind: str = "local"  # k8s | local
    namespace: str | None = None  # None: the overlay's, else `default`
    environment: str | None = None  # the lock's name suffix; None: the overlay's name
    kubeconfig: Path | None = None
    context: str | None = None
    in_cluster: bool = False
    timeout_s: float = 600.0
    poll_s: float = 1.0
    state_dir: Path = DEFAULT_STATE_DIR  # local target only
    fault_injection: str = ""  # local target, canary only (rehearsals)
    insecure_registry: bool = False  # local target: plain HTTP to the image's registry


def overlay_namespace(overlay: str | None, kustomize_dir: Path = KUSTOMIZE_DIR) -> str | None:
    """The ``namespace:`` an overlay's kustomization sets, if any (no rendering needed)."""
    if not overlay:
        return None
    path = kustomize_dir / "overlays" / overlay / "kustomization.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    value = data.get("namespace") if isinstance(data, dict) else None
    return str(value) if value else None


def resolve_namespace(
    config: TargetConfig, overlay: str | None, rendered_namespace: str | None = None
) -> str:
    """Flag → the rendered objects' namespace → the overlay's kustomization → `default`."""
    return config.namespace or rendered_namespace or overlay_namespace(overlay) or DEFAULT_NAMESPACE


def connect_api(config: TargetConfig, settings: Settings) -> KubeApi:
    """The Kubernetes API the config names: kubeconfig (flag, then $KUBECONFIG) or in-cluster."""
    from scripts.deploy.kube_api import ClusterConfig, KubeApi

    return KubeApi.connect(
        ClusterConfig(
            kubeconfig=config.kubeconfig or settings.kubeconfig,
            context=config.context,
            in_cluster=config.in_cluster,
        )
    )


@dataclass(frozen=True)
class TargetPlace:
    """Where a target acts: the namespace, the lock's environment, the model."""

    namespace: str
    environment: str
    model: str | None  # None: the one model the namespace holds (see `resolve_model`)


def _kubernetes(config: TargetConfig, settings: Settings, place: TargetPlace) -> DeployTarget:
    from scripts.deploy.kubernetes_target import KubernetesTarget, served_models
    from scripts.deploy.lease import default_holder

    api = connect_api(config, settings)
    model = place.model or resolve_model(
        served_models(api, place.namespace), f"namespace {place.namespace}"
    )
    return KubernetesTarget(
        api,
        place.namespace,
        place.environment,
        model=model,
        holder=default_holder(settings.run_id),
        poll_s=config.poll_s,
    )


def _local(config: TargetConfig, settings: Settings, place: TargetPlace) -> DeployTarget:
    from scripts.deploy.local_target import LocalTarget, served_models
    from scripts.image.auth import CredentialStore

    # One state directory per namespace and model: its file lock serialises.
    model = place.model or resolve_model(
        served_models(config.state_dir, place.namespace),
        f"namespace {place.namespace} of {config.state_dir}",
    )
    if config.fault_injection:
        log.warning("fault injection on the canary: %s (rehearsal only)", config.fault_injection)
    return LocalTarget(
        config.state_dir,
        place.namespace,
        model=model,
        cache_dir=settings.cache_dir / "images",
        credentials=CredentialStore(settings.docker_config),
        fault_injection=config.fault_injection,
        insecure_registry=config.insecure_registry,
    )


def resolve_model(models: list[str], where: str) -> str:
    """The model a command acts on when ``--model`` was not given: the only one there."""
    if len(models) == 1:
        log.info("model: %s (the only one in %s)", models[0], where)
        return models[0]
    if not models:
        # Nothing deployed: acting on the default model finds nothing, as before.
        return DEFAULT_MODEL
    raise UsageError(
        f"{where} holds {len(models)} models ({', '.join(models)}): which one?",
        cause="each model has its own Deployments, state and lock",
        fix="pass --model NAME",
    )


TARGETS: dict[str, Callable[[TargetConfig, Settings, TargetPlace], DeployTarget]] = {
    "k8s": _kubernetes,
    "local": _local,
}


def open_target(
    config: TargetConfig,
    settings: Settings,
    *,
    overlay: str | None,
    model: str | None,
    rendered_namespace: str | None = None,
) -> DeployTarget:
    """Open the target ``config.kind`` names, for ``model`` in ``overlay``'s namespace."""
    factory = TARGETS.get(config.kind)
    if factory is None:
        raise UsageError(
            f"unknown target {config.kind!r}", fix=f"use --target {' or '.join(TARGETS)}"
        )
    namespace = resolve_namespace(config, overlay, rendered_namespace)
    environment = config.environment or overlay or DEFAULT_NAMESPACE
    return factory(config, settings, TargetPlace(namespace, environment, model))
