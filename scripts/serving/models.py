"""Loaded servables and the manager that keeps them current.

A ``Servable`` is one model version: its signatures (name, dtype, shape per
input and output, and TF's SignatureDef protos for gRPC metadata) and a
``predict`` that runs TensorFlow on a worker thread. The ``ModelManager`` loads
the versions its policy asks for, polls the base path for new version
directories, swaps a new version in only once it loaded completely (and, with a
``warmup`` step, replayed its warm-up records: scripts/serving/warmup.py), and reports
a version that failed to load instead of serving it half-loaded.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scripts.log import log
from scripts.serving.errors import ServingError, from_tf_error, invalid, not_found


@dataclass(frozen=True)
class TensorSpec:
    key: str
    name: str
    dtype: Any  # tf.DType
    shape: list[int] | None  # None: unknown rank; -1: unknown dim

    @property
    def is_string(self) -> bool:
        return bool(self.dtype.name == "string")


@dataclass
class Signature:
    name: str
    method: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    function: Any
    proto: Any  # tensorflow SignatureDef, for gRPC metadata


@dataclass
class Servable:
    name: str
    version: int
    path: Path
    signatures: dict[str, Signature]
    _loaded: Any = None  # keeps the loaded object (and its variables) alive

    def signature(self, name: str | None) -> Signature:
        key = name or "serving_default"
        if key not in self.signatures:
            raise invalid(f'Serving signature name: "{key}" not found in signature def')
        return self.signatures[key]


def load_servable(name: str, version: int, path: Path) -> Servable:
    """Load ``path`` with TensorFlow; raise on any error (the caller reports it)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    loaded = tf.saved_model.load(str(path), tags=["serve"])
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((path / "saved_model.pb").read_bytes())
    graph = next(g for g in saved.meta_graphs if "serve" in g.meta_info_def.tags)
    signatures: dict[str, Signature] = {}
    for key, fn in loaded.signatures.items():
        proto = graph.signature_def[key]
        _, kwargs = fn.structured_input_signature
        inputs = {
            k: TensorSpec(
                k,
                proto.inputs[k].name,
                spec.dtype,
                None
                if spec.shape.rank is None
                else [-1 if d is None else int(d) for d in spec.shape],
            )
            for k, spec in kwargs.items()
        }
        outputs = {
            k: TensorSpec(
                k,
                proto.outputs[k].name,
                spec.dtype,
                None
                if spec.shape.rank is None
                else [-1 if d is None else int(d) for d in spec.shape],
            )
            for k, spec in fn.structured_outputs.items()
        }
        signatures[key] = Signature(key, proto.method_name, inputs, outputs, fn, proto)
    if "serving_default" not in signatures and signatures:
        log.warning("%s v%d has no serving_default signature", name, version)
    return Servable(name=name, version=version, path=path, signatures=signatures, _loaded=loaded)


def run_signature(signature: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run one signature (on the calling thread). TensorFlow's errors keep their canonical
    code (INVALID_ARGUMENT for bad input); inputs it cannot convert are INVALID_ARGUMENT."""
    import tensorflow as tf

    extra = set(inputs) - set(signature.inputs)
    if extra:
        raise invalid(f"Unknown input(s): {', '.join(sorted(extra))}")
    try:
        tensors = {}
        for key, spec in signature.inputs.items():
            if key not in inputs:
                raise invalid(f"Missing input: {key}")
            tensors[key] = tf.constant(inputs[key], dtype=spec.dtype)
        result = signature.function(**tensors)
    except tf.errors.OpError as exc:
        raise from_tf_error(exc) from exc
    except (ValueError, TypeError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        raise invalid(message.strip().splitlines()[0][:500]) from exc
    return {k: v.numpy() for k, v in result.items()}


@dataclass
class VersionState:
    version: int
    state: str  # START | LOADING | AVAILABLE | UNLOADING | END
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "version": str(self.version),
            "state": self.state,
            "status": {
                "error_code": "UNKNOWN" if self.error else "OK",
                "error_message": self.error,
            },
        }


@dataclass
class ModelEntry:
    name: str
    base_path: Path
    policy: str = "latest"  # latest | specific | all
    num_versions: int = 1
    specific: list[int] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    servables: dict[int, Servable] = field(default_factory=dict)
    states: dict[int, VersionState] = field(default_factory=dict)


class ModelManager:
    """Loads, serves and hot-swaps model versions; thread-safe lookups."""

    def __init__(
        self,
        entries: list[ModelEntry],
        *,
        poll_s: float,
        workers: int,
        warmup: Callable[[Servable], None] | None = None,
    ) -> None:
        """``warmup`` runs on each loaded version before it becomes AVAILABLE; an
        exception from it fails that version's load like a load error."""
        self.entries = {e.name: e for e in entries}
        self.poll_s = poll_s
        self.warmup = warmup
        self.executor = ThreadPoolExecutor(
            max_workers=max(1, workers), thread_name_prefix="tf-predict"
        )
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()  # one refresh at a time: the poller, a reload
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # -- discovery and loading -----------------------------------------------------
    def _wanted(self, entry: ModelEntry) -> list[int]:
        if not entry.base_path.is_dir():
            return []
        found = sorted(
            int(p.name)
            for p in entry.base_path.iterdir()
            if p.is_dir() and p.name.isdigit() and (p / "saved_model.pb").is_file()
        )
        if entry.policy == "specific":
            return [v for v in found if v in entry.specific]
        if entry.policy == "all":
            return found
        return found[-entry.num_versions :]

    def refresh(self) -> None:
        """Load wanted versions not yet loaded; unload ones no longer wanted."""
        for entry in self.entries.values():
            wanted = self._wanted(entry)
            for version in wanted:
                state = entry.states.get(version)
                if version in entry.servables or (state and state.state == "END"):
                    continue  # loaded, or failed before: not retried in a loop
                entry.states[version] = VersionState(version, "LOADING")
                started = time.monotonic()
                try:
                    servable = load_servable(entry.name, version, entry.base_path / str(version))
                    if self.warmup is not None:
                        self.warmup(servable)  # still LOADING: not served, not "ready"
                except Exception as exc:  # noqa: BLE001 - any load failure is reported
                    message = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
                    log.error("failed to load %s version %d: %s", entry.name, version, message)
                    entry.states[version] = VersionState(version, "END", message)
                    continue
                with self._lock:
                    entry.servables[version] = servable
                    entry.states[version] = VersionState(version, "AVAILABLE")
                log.info(
                    "loaded %s version %d in %.1f s",
                    entry.name,
                    version,
                    time.monotonic() - started,
                )
            with self._lock:
                stale = sorted(v for v in entry.servables if v not in wanted)
                if wanted and stale and not any(v in entry.servables for v in wanted):
                    # TF Serving's availability-preserving policy: while no wanted version
                    # is AVAILABLE (e.g. the new one failed to load), keep the newest old
                    # one serving rather than serve nothing.
                    stale = stale[:-1]
                for version in stale:
                    del entry.servables[version]
                    entry.states[version] = VersionState(version, "END")
                    log.info("unloaded %s version %d", entry.name, version)

    def start_polling(self) -> None:
        if self.poll_s <= 0:
            return

        def loop() -> None:
            while not self._stop.wait(self.poll_s):
                try:
                    with self._refresh_lock:
                        self.refresh()
                except Exception as exc:  # noqa: BLE001 - keep polling whatever happens
                    log.error("model poll failed: %s", exc)

        self._poller = threading.Thread(target=loop, name="model-poller", daemon=True)
        self._poller.start()

    def reload(self, entries: list[ModelEntry]) -> list[str]:
        """Serve ``entries`` from now on (a new ModelServerConfig model list); return the
        names of the models it adds. A model kept at the same base path keeps its loaded
        versions under its new version policy and labels; a model no longer listed is
        unloaded; new models and newly wanted versions are loaded before this returns."""
        with self._refresh_lock:
            with self._lock:
                current, updated = self.entries, {}
                for new in entries:
                    kept = current.get(new.name)
                    if kept is None or kept.base_path != new.base_path:
                        updated[new.name] = new
                        continue
                    kept.policy, kept.num_versions = new.policy, new.num_versions
                    kept.specific, kept.labels = new.specific, new.labels
                    updated[new.name] = kept
                self.entries = updated
                for name, old in current.items():
                    if updated.get(name) is not old:  # in-flight requests keep their servable
                        old.servables.clear()
                        log.info("unloaded model %s (no longer configured)", name)
            self.refresh()
        return [name for name in updated if name not in current]

    def stop(self) -> None:
        self._stop.set()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- lookups ------------------------------------------------------------------------
    def entry(self, name: str) -> ModelEntry:
        if name not in self.entries:
            raise not_found(f"Could not find any versions of model {name}")
        return self.entries[name]

    def resolve(self, name: str, version: int | None, label: str | None) -> Servable:
        if name not in self.entries and label is None:  # TF Serving's manager's words
            wanted = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
            raise not_found(f"Servable not found for request: {wanted}")
        entry = self.entry(name)
        with self._lock:
            if label is not None:
                if label not in entry.labels:
                    raise invalid(f"Unrecognized servable version label: {label}")
                version = entry.labels[label]
            if version is None:
                if not entry.servables:
                    raise ServingError(
                        "UNAVAILABLE", f"Servable not found for request: Latest({name})"
                    )
                return entry.servables[max(entry.servables)]
            if version not in entry.servables:
                raise not_found(f"Servable not found for request: Specific({name}, {version})")
            return entry.servables[version]

    def states(self, name: str, version: int | None) -> list[VersionState]:
        entry = self.entry(name)
        with self._lock:
            states = sorted(entry.states.values(), key=lambda s: -s.version)
        if version is not None:
            states = [s for s in states if s.version == version]
            if not states:
                raise not_found(f"Could not find version {version} of model {name}")
        return states

    def ready(self) -> bool:
        return all(entry.servables for entry in self.entries.values())

    async def run(
        self, signature: Signature, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Run on the TensorFlow thread pool, never on the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, run_signature, signature, inputs)
