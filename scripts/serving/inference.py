"""Classify, Regress and MultiInference as TF Serving runs them, for gRPC and REST.

The input is a list of ``tf.Example``: ``Input.example_list``, or
``example_list_with_context`` whose context's bytes are put before each example's (TF
Serving's own merge: an example's feature wins over the context's). The serialised
examples are fed as one string tensor to the signature's only input, ``inputs``
(util.cc ``InputToSerializedExampleTensor``; no example: INVALID_ARGUMENT "Input is
empty.").

Which signature fits is decided as TF Serving decides it without
``--enable_signature_method_name_check`` (its default): by the signature's shape, not its
``method_name`` (classifier.cc ``PreProcessClassification``, regressor.cc
``PreProcessRegression``): one input ``inputs``; for classification one or two outputs
among ``classes`` (string [batch, classes]) and ``scores`` (float [batch, classes]); for
regression one output ``outputs`` (float [batch] or [batch, 1]). Anything else is
INVALID_ARGUMENT with TF Serving's message, and so is an output of the wrong dtype or
shape. MultiInference (multi_inference.cc) runs several such tasks over one input;
each signature at most once; a task whose method is neither classify nor regress is
UNIMPLEMENTED. Each task runs its own signature (TF Serving runs one session over the
union of their outputs: the same results for a deterministic model).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scripts.serving.codec import check_shape
from scripts.serving.errors import ServingError, invalid
from scripts.serving.models import Servable, Signature
from scripts.serving.tensor_proto import datatype_name

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
DEFAULT_SIGNATURE = "serving_default"
INPUTS, CLASSES, SCORES, OUTPUTS = "inputs", "classes", "scores", "outputs"

Runner = Callable[[Servable, Signature, dict[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]


@dataclass(frozen=True)
class Classifications:
    """Per example, one (label, score) per class; b"" / 0.0 where the signature lacks
    ``classes`` / ``scores`` (as in TF Serving's ``Class`` messages)."""

    rows: list[list[tuple[bytes, float]]]
    has_labels: bool
    has_scores: bool


@dataclass(frozen=True)
class Task:
    signature_name: str
    method_name: str


@dataclass(frozen=True)
class TaskResult:
    signature_name: str  # the default's name when the task left it empty
    method_name: str
    classifications: Classifications | None = None
    regressions: list[float] | None = None


def serialize_examples(examples: Sequence[Any], context: Any = None) -> list[bytes]:
    """tf.Example protos → the serialised strings the signature parses."""
    prefix = context.SerializeToString() if context is not None else b""
    return [prefix + example.SerializeToString() for example in examples]


def input_examples(input_proto: Any) -> list[bytes]:
    """A tensorflow.serving.Input's examples, serialised (with the context, if any)."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        return serialize_examples(input_proto.example_list.examples)
    if kind == "example_list_with_context":
        with_context = input_proto.example_list_with_context
        return serialize_examples(with_context.examples, with_context.context)
    return []


def _debug(signature: Signature) -> str:
    return " ".join(str(signature.proto).split())


def check_classification(signature: Signature) -> None:
    if len(signature.inputs) != 1:
        raise invalid("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise invalid(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if INPUTS not in signature.inputs:
        raise invalid(f"No classification inputs found in SignatureDef: {_debug(signature)}")
    if CLASSES not in signature.outputs and SCORES not in signature.outputs:
        raise invalid(
            'Expected classification signature outputs to contain at least one of "classes" '
            f'or "scores". Signature was: {_debug(signature)}'
        )


def check_regression(signature: Signature) -> None:
    if len(signature.inputs) != 1:
        raise invalid("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise invalid("Expected one output Tensor.")
    if INPUTS not in signature.inputs:
        raise invalid(f"No regression inputs found in SignatureDef: {_debug(signature)}")
    if OUTPUTS not in signature.outputs:
        raise invalid(f"No regression outputs found in SignatureDef: {_debug(signature)}")


def _signature(servable: Servable, name: str) -> Signature:
    key = name or DEFAULT_SIGNATURE
    if key not in servable.signatures:
        raise invalid(f"No signature was found with the name: {key}")
    return servable.signatures[key]


def _shape(array: np.ndarray) -> str:
    return "[" + ",".join(str(d) for d in array.shape) + "]"


def _dtype(array: np.ndarray) -> str:
    import tensorflow as tf

    return datatype_name(tf.as_dtype(array.dtype))


def _is_string(array: np.ndarray) -> bool:
    return array.dtype.kind in ("O", "S", "U")


def _checked_matrix(array: np.ndarray, what: str, string: bool, batch: int) -> np.ndarray:
    if array.ndim != 2:
        raise invalid(f"Expected Tensor shape: [batch_size num_classes] but got {_shape(array)}")
    if _is_string(array) != string or (not string and array.dtype != np.float32):
        want = "DT_STRING" if string else "DT_FLOAT"
        raise invalid(f"Expected {what} Tensor of {want}. Got: {_dtype(array)}")
    if array.shape[0] != batch:
        raise invalid(f"Expected {what} output batch size of {batch}. Got: {array.shape[0]}")
    return array


def classification_result(
    signature: Signature, outputs: dict[str, np.ndarray], batch: int
) -> Classifications:
    """TF Serving's ``PostProcessClassificationResult``."""
    classes = scores = None
    if CLASSES in signature.outputs:
        classes = _checked_matrix(outputs[CLASSES], "classes", True, batch)
    if SCORES in signature.outputs:
        scores = _checked_matrix(outputs[SCORES], "scores", False, batch)
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid(
            "Tensors class and score should match in dim_size(1). Got "
            f"{classes.shape[1]} vs. {scores.shape[1]}"
        )
    width = (classes if classes is not None else scores).shape[1]  # type: ignore[union-attr]
    rows = [
        [
            (
                _label(classes[i, c]) if classes is not None else b"",
                float(scores[i, c]) if scores is not None else 0.0,
            )
            for c in range(width)
        ]
        for i in range(batch)
    ]
    return Classifications(rows, classes is not None, scores is not None)


def _label(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def regression_result(
    signature: Signature, outputs: dict[str, np.ndarray], batch: int
) -> list[float]:
    """TF Serving's ``PostProcessRegressionResult``."""
    del signature  # the output alias is fixed: ``outputs``
    values = outputs[OUTPUTS]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise invalid(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
            f"but got {_shape(values)}"
        )
    if values.shape[0] != batch:
        raise invalid(
            f"Input batch size did not match output batch size: {batch} vs. {values.shape[0]}"
        )
    if values.dtype != np.float32:
        raise invalid(f"Expected output Tensor of DT_FLOAT.  Got: {_dtype(values)}")
    return [float(v) for v in values.reshape(-1)]


async def _run(
    run: Runner, servable: Servable, signature: Signature, examples: list[bytes]
) -> dict[str, np.ndarray]:
    if not examples:
        raise invalid("Input is empty.")
    spec = signature.inputs[INPUTS]
    if not spec.is_string:
        raise invalid(f"Expects input {INPUTS} to be {spec.dtype.name} but string is provided")
    array = np.empty(len(examples), dtype=object)
    array[:] = examples
    check_shape(array, spec)
    return await run(servable, signature, {INPUTS: array})


async def classify(
    run: Runner, servable: Servable, signature_name: str, examples: list[bytes]
) -> Classifications:
    signature = _signature(servable, signature_name)
    check_classification(signature)
    outputs = await _run(run, servable, signature, examples)
    return classification_result(signature, outputs, len(examples))


async def regress(
    run: Runner, servable: Servable, signature_name: str, examples: list[bytes]
) -> list[float]:
    signature = _signature(servable, signature_name)
    check_regression(signature)
    outputs = await _run(run, servable, signature, examples)
    return regression_result(signature, outputs, len(examples))


async def multi_inference(
    run: Runner, servable: Servable, tasks: Sequence[Task], examples: list[bytes]
) -> list[TaskResult]:
    """Every task over the same examples, checked first as multi_inference.cc does."""
    planned: list[tuple[Task, str, Signature]] = []
    seen: set[str] = set()
    for task in tasks:
        name = task.signature_name or DEFAULT_SIGNATURE
        if name in seen:
            raise invalid(f"Duplicate evaluation of signature: {name}")
        seen.add(name)
        signature = servable.signatures.get(name)
        if signature is None:
            raise invalid(f"Requested signature not found in model graph: {name}")
        if task.method_name == CLASSIFY:
            check_classification(signature)
        elif task.method_name == REGRESS:
            check_regression(signature)
        else:
            raise ServingError(
                "UNIMPLEMENTED", f"Unsupported signature method_name: {task.method_name}"
            )
        planned.append((task, name, signature))
    results = []
    for task, name, signature in planned:
        outputs = await _run(run, servable, signature, examples)
        if task.method_name == CLASSIFY:
            result = classification_result(signature, outputs, len(examples))
            results.append(TaskResult(name, task.method_name, classifications=result))
        else:
            values = regression_result(signature, outputs, len(examples))
            results.append(TaskResult(name, task.method_name, regressions=values))
    return results
