"""A ``ModelServerConfig`` as the model manager's entries, at start and at run time.

``model_entries`` converts a config's ``model_config_list`` (the ``--model_config_file``
read at start). ``reload_entries`` applies first the rules TF Serving's
``HandleReloadConfigRequest`` / ``ServerCore::ReloadConfig`` apply to a new config
(model_service_impl.cc, server_core.cc), with their codes and messages:

* only a ``model_config_list`` (INVALID_ARGUMENT otherwise);
* each model listed once, with an absolute base path and the ``tensorflow`` platform
  (INVALID_ARGUMENT);
* a version label may only name a version AVAILABLE now (FAILED_PRECONDITION), as
  without ``--allow_version_labels_for_unavailable_models``: load a version first,
  label it in a second reload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scripts.serving.errors import failed_precondition, invalid
from scripts.serving.models import ModelEntry, ModelManager

PLATFORM = "tensorflow"
_MODEL_TYPE_TENSORFLOW = 1  # ModelType.TENSORFLOW, the deprecated model_type field


def model_entries(config: Any) -> list[ModelEntry]:
    """The entries of a ModelServerConfig's model list (no validation)."""
    entries = []
    for model in config.model_config_list.config:
        policy = model.model_version_policy.WhichOneof("policy_choice") or "latest"
        entry = ModelEntry(
            name=model.name,
            base_path=Path(model.base_path),
            policy=policy,
            labels=dict(model.version_labels),
        )
        if policy == "latest":
            entry.num_versions = model.model_version_policy.latest.num_versions or 1
        elif policy == "specific":
            entry.specific = list(model.model_version_policy.specific.versions)
        entries.append(entry)
    return entries


def _platform(model: Any) -> str:
    if model.model_type:
        if model.model_platform:
            raise invalid(
                "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                f"ModelServerConfig::model_platform, model name is {model.name}"
            )
        if model.model_type != _MODEL_TYPE_TENSORFLOW:
            raise invalid(f"ModelServerConfig::model_type choice {model.model_type} not supported.")
        return PLATFORM
    if not model.model_platform:
        raise invalid(
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            f"ModelServerConfig::model_platform, model name is {model.name}"
        )
    return str(model.model_platform)


def reload_entries(config: Any, manager: ModelManager) -> list[ModelEntry]:
    """Check a ReloadConfigRequest's config as TF Serving does; return its entries."""
    if config.WhichOneof("config") != "model_config_list":
        raise invalid(
            "ServerModelConfig type not supported by HandleReloadConfigRequest. "
            "Only ModelConfigList is currently supported"
        )
    names: set[str] = set()
    for model in config.model_config_list.config:
        if model.name in names:
            raise invalid(f"Illegal to list model {model.name} multiple times in config list")
        names.add(model.name)
        if "://" not in model.base_path and not Path(model.base_path).is_absolute():
            raise invalid(
                f"Expected model {model.name} to have an absolute path or URI; "
                f"got base_path()={model.base_path}"
            )
        platform = _platform(model)
        if platform != PLATFORM:
            raise invalid(f"Model {model.name} requests unsupported platform {platform}")
    for model in config.model_config_list.config:
        available = set()
        if model.name in manager.entries:
            available = {
                s.version for s in manager.states(model.name, None) if s.state == "AVAILABLE"
            }
        for version in sorted(model.version_labels.values()):
            if version not in available:
                raise failed_precondition(
                    f"Request to assign label to version {version} of model {model.name}, "
                    "which is not currently available for inference"
                )
    return model_entries(config)
