"""The validate stage: is this SavedModel servable, and does our sample request fit it?

Nothing is executed: the signature is read from ``saved_model.pb`` and the
sample request from ``model.yaml`` is checked against its input names, ranks,
known dimensions and dtypes, so the load test cannot fail on a payload that
was never going to work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.artifact.savedmodel import (
    SignatureInfo,
    TensorInfo,
    read_signatures,
    require_signature,
)
from scripts.errors import ConfigError, InvalidModelError
from scripts.model_spec import ModelSpec

_STRING_DTYPES = {"string"}
_BOOL_DTYPES = {"bool"}


@dataclass(frozen=True)
class ValidationResult:
    version_dir: Path
    version: int
    signature: str
    signatures: dict[str, SignatureInfo]
    sample_checked: bool

    def to_dict(self) -> dict[str, object]:
        return {
            "version_dir": str(self.version_dir),
            "version": self.version,
            "signature": self.signature,
            "sample_request_checked": self.sample_checked,
            "signatures": {k: v.to_dict() for k, v in self.signatures.items()},
        }


def resolve_version_dir(path: Path) -> tuple[Path, int]:
    """Accept a model base dir (serve its highest version) or a version dir."""
    if (path / "saved_model.pb").is_file():
        name = path.name
        return path, int(name) if name.isdigit() else 0
    versions = (
        sorted((int(p.name), p) for p in path.iterdir() if p.is_dir() and p.name.isdigit())
        if path.is_dir()
        else []
    )
    if not versions:
        raise InvalidModelError(
            f"{path} holds no SavedModel version directory",
            cause="expected NAME/VERSION/saved_model.pb (TF Serving layout)",
            fix="pass the directory that `fetch` reported as path",
        )
    number, version_dir = versions[-1]
    return version_dir, number


def _nested_shape(value: Any) -> list[int]:
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _leaf(value: Any) -> Any:
    while isinstance(value, list) and value:
        value = value[0]
    return value


def _check_value(key: str, tensor: TensorInfo, value: Any, batched: bool) -> list[str]:
    problems: list[str] = []
    shape = _nested_shape(value)
    expected = tensor.shape
    if expected is not None:
        want = expected[1:] if not batched else expected
        if len(shape) != len(want):
            problems.append(
                f"input {key!r}: sample has rank {len(shape)} {shape}, the signature expects "
                f"rank {len(want)} {want} per {'batch' if batched else 'instance'}"
            )
        else:
            for i, (have, need) in enumerate(zip(shape, want, strict=True)):
                if need >= 0 and have != need:
                    problems.append(
                        f"input {key!r}: dimension {i} is {have}, the signature expects {need}"
                    )
    leaf = _leaf(value)
    if tensor.dtype in _STRING_DTYPES:
        if not (isinstance(leaf, str) or (isinstance(leaf, dict) and "b64" in leaf)):
            problems.append(f'input {key!r}: expects strings or {{"b64": ...}}, got {leaf!r}')
    elif tensor.dtype in _BOOL_DTYPES:
        if not isinstance(leaf, bool):
            problems.append(f"input {key!r}: expects booleans, got {leaf!r}")
    elif isinstance(leaf, bool) or not isinstance(leaf, int | float):
        problems.append(f"input {key!r}: expects numbers ({tensor.dtype}), got {leaf!r}")
    return problems


def check_sample_request(signature: SignatureInfo, sample: dict[str, Any]) -> list[str]:
    """Return the problems that would make TF Serving reject ``sample`` (empty: fits)."""
    inputs = signature.inputs
    if "instances" in sample:
        instances = sample["instances"]
        if not isinstance(instances, list) or not instances:
            return ["'instances' must be a non-empty list"]
        problems: list[str] = []
        for index, instance in enumerate(instances):
            if isinstance(instance, dict) and "b64" not in instance:
                missing = sorted(set(inputs) - set(instance))
                extra = sorted(set(instance) - set(inputs))
                if missing or extra:
                    problems.append(
                        f"instance {index}: missing inputs {missing}, unknown inputs {extra}"
                    )
                    continue
                for key, value in instance.items():
                    problems += _check_value(key, inputs[key], value, batched=False)
            elif len(inputs) == 1:
                key, tensor = next(iter(inputs.items()))
                problems += _check_value(key, tensor, instance, batched=False)
            else:
                problems.append(
                    f"instance {index}: the signature has {len(inputs)} inputs; "
                    "each instance must be an object keyed by input name"
                )
        return problems
    if "inputs" in sample:
        columns = sample["inputs"]
        if isinstance(columns, dict) and not ("b64" in columns and len(columns) == 1):
            problems = []
            for key in sorted(set(inputs) - set(columns)):
                problems.append(f"columnar inputs miss {key!r}")
            for key, value in columns.items():
                if key not in inputs:
                    problems.append(f"columnar input {key!r} is not in the signature")
                else:
                    problems += _check_value(key, inputs[key], value, batched=True)
            return problems
        if len(inputs) != 1:
            return [f"the signature has {len(inputs)} inputs; 'inputs' must be an object"]
        key, tensor = next(iter(inputs.items()))
        return _check_value(key, tensor, columns, batched=True)
    return ["the sample request has neither 'instances' nor 'inputs'"]


def validate(model_path: Path, signature: str, spec: ModelSpec | None) -> ValidationResult:
    """Validate a model directory; raise InvalidModelError or ConfigError with the problems."""
    version_dir, version = resolve_version_dir(model_path)
    signatures = read_signatures(version_dir)
    sig = require_signature(signatures, signature, version_dir)
    checked = False
    if spec is not None and spec.sample_request is not None:
        wanted = str(spec.sample_request.get("signature_name", signature))
        if wanted != signature:
            sig = require_signature(signatures, wanted, version_dir)
        problems = check_sample_request(sig, spec.sample_request)
        if problems:
            raise ConfigError(
                f"the sample request in models/{spec.name}/model.yaml does not fit signature "
                f"{sig.name!r} of {version_dir}: " + "; ".join(problems),
                cause="the model's inputs changed, or the sample was written for another model",
                fix="update sample_request in model.yaml to match the signature shown by "
                "`python -m scripts validate`",
            )
        checked = True
    return ValidationResult(
        version_dir=version_dir,
        version=version,
        signature=signature,
        signatures=signatures,
        sample_checked=checked,
    )
