"""Per-model batching: the ``BatchingParameters`` that ``render`` writes for an overlay.

When an overlay enables TF Serving's dynamic batching (``kustomize/components/batching``:
``--enable_batching`` and ``--batching_parameters_file`` read from the hashed ConfigMap
``serving-batching``), each field of the parameters comes from the first of these that
sets it:

1. ``batching:`` in ``models/NAME/model.yaml`` (``RenderRequest.batching``);
2. the overlay's own ``batching.config``: the component's shipped file, or the file an
   overlay replaces it with (``configMapGenerator``, ``behavior: replace``);
3. defaults from the pod, after TF Serving's CPU guidance: ``num_batch_threads`` = the
   cores of the serving container's CPU request, rounded up (as the Downward API rounds
   the thread env), ``batch_timeout_micros`` 0, and ``max_enqueued_batches`` = the
   ``num_batch_threads`` in effect.

``max_batch_size`` and ``allowed_batch_sizes`` are one setting: when model.yaml sets
``max_batch_size``, the overlay's ``allowed_batch_sizes`` no longer apply (model.yaml's
own do, if it has any). The result is checked against the rules TF Serving applies when
it loads a model, written into the temporary copy as a ``configMapGenerator`` (``behavior:
merge``) of the render wrapper, and rendered again: the ConfigMap's hashed name follows
its content, so a change rolls the pods.

An overlay that does not enable batching ignores model.yaml's block, with a warning: the
overlay decides whether a deployment batches (the bench measures one model with and
without), and one model.yaml serves every overlay.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from scripts.errors import RenderError
from scripts.log import log

if TYPE_CHECKING:
    from scripts.model_spec import Batching

GENERATOR = "serving-batching"  # the component's configMapGenerator
RENDERED_FILE = "batching-rendered.config"  # in the render wrapper
# TF Serving's defaults when a field is absent everywhere (SharedBatchScheduler::QueueOptions).
TF_DEFAULT_MAX_BATCH_SIZE = 1000
FIELDS = (  # BatchingParameters' fields this module sets, in field-number order
    "max_batch_size",
    "batch_timeout_micros",
    "max_enqueued_batches",
    "num_batch_threads",
    "allowed_batch_sizes",
    "pad_variable_length_inputs",
)
_COUNTS = FIELDS[:4]  # google.protobuf.Int64Value fields
_TRUE = ("", "1", "true", "yes", "on")  # how TF Serving's flag parser reads a bool
MODEL_YAML = "model.yaml"
OVERLAY = "overlay's batching.config"

Value = int | bool | tuple[int, ...]


@dataclass(frozen=True)
class Setting:
    value: Value
    source: str  # where it came from: model.yaml, overlay, or the default's reason


@dataclass(frozen=True)
class BatchingConfig:
    """The parameters one model gets on one overlay, each with its source."""

    settings: dict[str, Setting]
    extra: list[str]  # other fields of the overlay's file (thread_pool_name), as text

    def describe(self) -> str:
        return ", ".join(
            f"{name} {_shown(s.value)} ({s.source})" for name, s in self.settings.items()
        )

    def text(self, model: str) -> str:
        """The ``BatchingParameters`` text proto, each field commented with its source."""
        lines = [
            f"# BatchingParameters (text proto) for model {model}, written by `render`: each",
            "# field from the model.yaml's `batching:`, else the overlay's batching.config,",
            "# else the pod's CPU request (docs/manifests.md, Batching).",
        ]
        for name, setting in self.settings.items():
            value = setting.value
            if isinstance(value, tuple):
                entries = [f"{name}: {size}" for size in value]
                entries[0] += f"  # {setting.source}"
                lines += entries
            elif isinstance(value, bool):
                lines.append(f"{name}: {str(value).lower()}  # {setting.source}")
            else:
                lines.append(f"{name} {{ value: {value} }}  # {setting.source}")
        lines += [f"{line}  # {OVERLAY}" for line in self.extra]
        return "\n".join(lines) + "\n"


def _shown(value: Value) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


# -- what the rendered manifests say ---------------------------------------------------------
def _flag(args: list[str], name: str) -> str | None:
    """The value of ``--name`` / ``--name=V`` (the last one wins, as with any flag parser)."""
    found = None
    for arg in args:
        if arg == f"--{name}":
            found = ""
        elif arg.startswith(f"--{name}="):
            found = arg.split("=", 1)[1]
    return found


def enables_batching(container: dict[str, Any]) -> bool:
    """Does this container run the server with ``--enable_batching``?"""
    value = _flag([str(a) for a in container.get("args", [])], "enable_batching")
    return value is not None and value.strip().lower() in _TRUE


@dataclass(frozen=True)
class _Server:
    deployment: str
    container: dict[str, Any]
    pod: dict[str, Any]


def _batching_servers(objects: list[dict[str, Any]]) -> list[_Server]:
    return [
        _Server(obj["metadata"]["name"], container, obj["spec"]["template"]["spec"])
        for obj in objects
        if obj.get("kind") == "Deployment"
        for container in obj["spec"]["template"]["spec"].get("containers", [])
        if enables_batching(container)
    ]


def _mounted_config(objects: list[dict[str, Any]], server: _Server) -> tuple[str, str] | None:
    """(ConfigMap name, key) that ``--batching_parameters_file`` reads, or None (no file)."""
    path = _flag([str(a) for a in server.container.get("args", [])], "batching_parameters_file")
    if not path:
        return None
    volumes = {v["name"]: v for v in server.pod.get("volumes", [])}
    for mount in server.container.get("volumeMounts", []):
        root = str(mount["mountPath"]).rstrip("/")
        source = volumes.get(mount["name"], {}).get("configMap")
        if source is None or not path.startswith(root + "/"):
            continue
        relative = posixpath.relpath(path, root)
        if mount.get("subPath"):
            continue  # a single file mounted by subPath: not how the component mounts it
        key = next(
            (i["key"] for i in source.get("items", []) if i.get("path") == relative), relative
        )
        return str(source["name"]), key
    raise RenderError(
        f"Deployment {server.deployment}: --batching_parameters_file={path} is not in a "
        "mounted ConfigMap",
        cause="an overlay changed the batching component's flag or volume",
        fix="mount the parameters as kustomize/components/batching does",
    )


def _cores(servers: list[_Server]) -> tuple[int, str]:
    """The CPU request every batching server has, rounded up, and the quantity itself."""
    from scripts.deploy.cgroups import parse_quantity

    found: dict[str, int] = {}
    for server in servers:
        resources = server.container.get("resources", {})
        # The Downward API (and a kubelet) take the limit when no request is set.
        quantity = resources.get("requests", {}).get("cpu") or resources.get("limits", {}).get(
            "cpu"
        )
        if quantity is None:
            raise RenderError(
                f"Deployment {server.deployment} has no CPU request to size batching threads by",
                cause="batching's num_batch_threads and max_enqueued_batches default to the "
                "cores of the CPU request",
                fix="set resources.requests.cpu, or num_batch_threads and max_enqueued_batches "
                "in the model.yaml's batching: or the overlay's batching.config",
            )
        found[str(quantity)] = max(1, math.ceil(parse_quantity(str(quantity)) - 1e-9))
    if len(set(found.values())) > 1:
        raise RenderError(
            "the Deployments sharing the batching config request different CPUs: "
            + ", ".join(sorted(found)),
            cause="one batching.config serves the stable and canary tracks alike",
            fix="give both tracks the same CPU request (list components/canary first), or set "
            "num_batch_threads and max_enqueued_batches explicitly",
        )
    quantity, cores = next(iter(found.items()))
    return cores, quantity


def _overlay_layer(text: str, where: str) -> tuple[dict[str, Value], list[str]]:
    """The fields the overlay's file sets, and its other fields as text-proto lines."""
    from google.protobuf import text_format

    from scripts.serving.protos import parse_text

    params = parse_text(text, "BatchingParameters", where)
    layer: dict[str, Value] = {
        n: int(getattr(params, n).value) for n in _COUNTS if params.HasField(n)
    }
    if params.allowed_batch_sizes:
        layer["allowed_batch_sizes"] = tuple(int(s) for s in params.allowed_batch_sizes)
    if params.pad_variable_length_inputs:
        layer["pad_variable_length_inputs"] = True
    extra = [
        f"{field.name} {{ {text_format.MessageToString(value, as_one_line=True)} }}"
        for field, value in params.ListFields()
        if field.name not in FIELDS
    ]
    return layer, extra


# -- precedence and TF Serving's rules ---------------------------------------------------------
def resolve(
    model: Mapping[str, Value],
    overlay: Mapping[str, Value],
    cores: Callable[[], tuple[int, str]],
) -> dict[str, Setting]:
    """Each field from model.yaml, else the overlay, else the pod's default (see above)."""
    overlay = dict(overlay)
    if "max_batch_size" in model and "allowed_batch_sizes" in overlay:
        dropped = overlay.pop("allowed_batch_sizes")
        log.info(
            "batching: the overlay's allowed_batch_sizes %s do not apply: model.yaml sets "
            "max_batch_size",
            _shown(dropped),
        )
    settings: dict[str, Setting] = {}
    for name in FIELDS:
        if name in model:
            settings[name] = Setting(model[name], MODEL_YAML)
        elif name in overlay:
            settings[name] = Setting(overlay[name], OVERLAY)
    if "num_batch_threads" not in settings:
        count, quantity = cores()
        settings["num_batch_threads"] = Setting(count, f"CPU request {quantity}, rounded up")
    if "max_enqueued_batches" not in settings:
        settings["max_enqueued_batches"] = Setting(
            settings["num_batch_threads"].value, "= num_batch_threads (online serving)"
        )
    if "batch_timeout_micros" not in settings:
        settings["batch_timeout_micros"] = Setting(0, "TF Serving's CPU guidance: 0 to start")
    return {name: settings[name] for name in FIELDS if name in settings}


def problems(settings: Mapping[str, Setting]) -> list[str]:
    """What TF Serving would refuse when loading the model with these parameters."""
    from scripts.model_spec import allowed_sizes_problem

    found = []
    minimum = {"batch_timeout_micros": 0}
    for name in _COUNTS:
        if name in settings:
            value = settings[name].value
            least = minimum.get(name, 1)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                found.append(
                    f"{name} {_shown(value)} ({settings[name].source}) must be "
                    + ("≥ 0" if least == 0 else "a positive integer")
                )
    allowed = settings.get("allowed_batch_sizes")
    if allowed is not None and isinstance(allowed.value, tuple):
        limit = settings.get("max_batch_size")
        max_batch_size = (
            limit.value
            if limit is not None and isinstance(limit.value, int)
            else TF_DEFAULT_MAX_BATCH_SIZE
        )
        problem = allowed_sizes_problem(allowed.value, max_batch_size)
        if problem:
            found.append(
                f"{problem} (allowed_batch_sizes: {allowed.source}; max_batch_size: "
                + (limit.source if limit is not None else "TF Serving's default")
                + ")"
            )
    return found


def _warn_oversubscribed(model: str, threads: Setting, servers: list[_Server]) -> None:
    """More batch threads than cores: TF Serving's guidance is one per core."""
    try:
        cores, quantity = _cores(servers)
    except RenderError:  # no CPU request: the policy check reports it
        return
    if isinstance(threads.value, int) and threads.value > cores:
        log.warning(
            "model %s: num_batch_threads %d (%s) exceeds the %d core(s) of the CPU request "
            "(%s): batches will compete for the CPU quota",
            model,
            threads.value,
            threads.source,
            cores,
            quantity,
        )


# -- the render hook ---------------------------------------------------------------------------
def apply_batching(
    text: str,
    wrapper: Path,
    *,
    model: str,
    overlay: str,
    batching: Batching | None,
    rerender: Callable[[], str],
) -> str:
    """``text`` (kustomize's output for ``wrapper``) with the batching config filled in.

    Returns ``text`` itself when the overlay does not enable batching; otherwise writes
    the parameters into the wrapper and returns ``rerender()``. RenderError when the
    overlay's file or the result breaks TF Serving's rules, or cannot be located.
    """
    objects = [doc for doc in yaml.safe_load_all(text) if doc]
    servers = _batching_servers(objects)
    if not servers:
        if batching is not None:
            log.warning(
                "model %s's model.yaml sets batching, but overlay %s does not enable it "
                "(no --enable_batching): ignored; add kustomize/components/batching to "
                "the overlay to batch",
                model,
                overlay,
            )
        return text
    mounted = {m for m in (_mounted_config(objects, s) for s in servers) if m is not None}
    if not mounted:
        if batching is not None:
            raise RenderError(
                f"overlay {overlay} enables batching without --batching_parameters_file: "
                f"model {model}'s batching cannot apply",
                fix="add kustomize/components/batching to the overlay",
            )
        log.warning("overlay %s batches with TF Serving's built-in parameters", overlay)
        return text
    if len(mounted) > 1:
        raise RenderError(
            f"overlay {overlay}'s servers read different batching configs: {sorted(mounted)}",
            fix="mount the batching component's one ConfigMap in every Deployment",
        )
    ((config_name, key),) = mounted
    config_map = next(
        (
            o
            for o in objects
            if o.get("kind") == "ConfigMap" and o["metadata"]["name"] == config_name
        ),
        None,
    )
    where = f"overlay {overlay}'s batching config (ConfigMap {config_name}, {key})"
    if config_map is None or key not in config_map.get("data", {}):
        raise RenderError(f"{where} is not among the rendered objects", fix="check the overlay")
    kustomization_path = wrapper / "kustomization.yaml"
    kustomization = yaml.safe_load(kustomization_path.read_text())
    generated = config_name.removeprefix(str(kustomization.get("namePrefix", "")))
    if not re.fullmatch(re.escape(GENERATOR) + r"(-[a-z0-9]+)?", generated):
        raise RenderError(
            f"{where} is not generated by the batching component's `{GENERATOR}` generator",
            cause="render fills the parameters through that generator only",
            fix=f"replace the file with `configMapGenerator: [{{name: {GENERATOR}, behavior: "
            "replace, files: [batching.config]}]`, as overlays/local-1x500m-batching does",
        )

    layer, extra = _overlay_layer(config_map["data"][key], where)
    settings = resolve(batching.fields() if batching else {}, layer, lambda: _cores(servers))
    found = problems(settings)
    if found:
        raise RenderError(
            f"batching for model {model} on overlay {overlay} would not load in TF Serving: "
            + "; ".join(found),
            cause="a batching value out of TF Serving's range, or allowed_batch_sizes that do "
            "not end at max_batch_size",
            fix="fix the model.yaml's batching: or the overlay's batching.config",
        )
    _warn_oversubscribed(model, settings["num_batch_threads"], servers)
    config = BatchingConfig(settings, extra)
    log.info("batching for %s on %s: %s", model, overlay, config.describe())
    (wrapper / RENDERED_FILE).write_text(config.text(model))
    kustomization.setdefault("configMapGenerator", []).append(
        {"name": GENERATOR, "behavior": "merge", "files": [f"{key}={RENDERED_FILE}"]}
    )
    kustomization_path.write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return rerender()
